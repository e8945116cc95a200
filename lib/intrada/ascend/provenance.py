"""Provenance: whether what ran was a device at all, declared once by the tool environment.

An environment that puts contract-test fakes in place of the Ascend tools (the suite's own tests,
tests/fakes) declares them in ``INTRADA_CONTRACT_FAKES`` (comma-separated: ``atc``, ``npu-smi``,
``ais_bench``, ``benchmark``, ``om``); the fakes refuse to run without that declaration, so a fake can
never pass for a device. Nothing in the library inspects a tool's files or output to guess. A real
CANN installation never sets the variable; every record made where it is set says "FAKE: not a
device result".
"""
from __future__ import annotations

import os
from collections.abc import Mapping

ENV = "INTRADA_CONTRACT_FAKES"


def declared_fakes(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The components the environment declares to be contract-test fakes, sorted."""
    text = (os.environ if environ is None else environ).get(ENV, "")
    return tuple(sorted({c.strip() for c in text.split(",") if c.strip()}))


def run_is_fake(tool: str, environ: Mapping[str, str] | None = None) -> bool:
    """A device run is a contract test when its tool or the om it ran is a declared fake."""
    declared = declared_fakes(environ)
    family = "ais_bench" if tool.startswith("ais_bench") else tool
    return family in declared or "om" in declared
