"""The Ascend path: atc conversion, device runners (ais_bench API / CLI, legacy benchmark), tool discovery.

Nothing here imports an Ascend package at module level: ``import intrada.ascend`` works on any
machine, and the ais_bench Python API is imported only when :class:`runners.AisBenchApiRunner`
is activated. See ../shared/spec/modelzoo-and-ascend-tools.md (sections 4, 6 and 8) for the tool
contracts these modules follow.

Contract-test fakes of every tool live in tests/fakes/; each leaves :data:`tools.FAKE_MARKER`
somewhere a real tool never writes it (npu-smi's version, the toolkit's install info, the .om
header, the ais_bench summary, the benchmark perf file), so a run on fakes is reported as such and
never as a device result.
"""
from __future__ import annotations

from .tools import FAKE_MARKER

__all__ = ["FAKE_MARKER"]
