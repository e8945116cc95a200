"""The Ascend path: atc conversion, device runners (ais_bench API / CLI, legacy benchmark), tool discovery.

Nothing here imports an Ascend package at module level: ``import intrada.ascend`` works on any
machine, and the ais_bench Python API is imported only when :class:`runners.AisBenchApiRunner`
is activated. See ../shared/spec/modelzoo-and-ascend-tools.md (sections 4, 6 and 8) for the tool
contracts these modules follow.

Contract-test fakes of every tool live in tests/fakes/. The environment that uses them declares them
(:mod:`provenance`, ``INTRADA_CONTRACT_FAKES``) and the fakes refuse to run undeclared, so a run on
fakes is reported as such and never as a device result; the library never sniffs a tool's files.
"""
from __future__ import annotations
