"""The Ascend path: atc conversion, device runners (ais_bench API / CLI, legacy benchmark), tool discovery.

Nothing here imports an Ascend package at module level: ``import intrada.ascend`` works on any
machine, and the ais_bench Python API is imported only when :class:`aisbench_api.AisBenchApiRunner`
is activated (or discovery is asked to check it). The runners (:mod:`runners`: one per tool,
:mod:`aisbench_api`, :mod:`aisbench_cli`, :mod:`benchmark`) share :mod:`device`; msit's path rules
are :mod:`pathrules`; atc is :mod:`atc`; finding the tools is :mod:`tools`, deciding what the om gate
can do with them :mod:`setup`, and running the om per batch size :mod:`session`. ais_bench ships in two generations, told apart by
what they offer (:mod:`aisbench`). The tool contracts come from the tools' sources
(github.com/Ascend/tools, github.com/Ascend/msit) and the CANN documentation, cited where used.

Contract-test fakes of every tool live in tests/fakes/. The environment that uses them declares them
(:mod:`provenance`, ``INTRADA_CONTRACT_FAKES``) and the fakes refuse to run undeclared, so a run on
fakes is reported as such and never as a device result; the library never sniffs a tool's files.
"""
from __future__ import annotations
