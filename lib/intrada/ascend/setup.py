"""What the om gate can do on this host, decided once from facts gathered by the caller.

:func:`resolve_setup` is pure: the tools found (:func:`intrada.ascend.tools.discover`), what
``npu-smi info`` said (or how it failed) and the options in; an :class:`AscendSetup` out, whose
:attr:`AscendSetup.problem` says why no live om can be judged here and whether that is an absence
(nothing installed: the om tests skip, and the run fails only if the om gate was required) or a
failure (a tool is there and broke, or a tool that was asked for is missing: the om tests fail with
the tool's own line).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import IntradaError, ToolError
from .provenance import declared_fakes
from .tools import AscendTools, NpuSmiInfo, benchmark_name, resolve_om_option, soc_version_of

INSTALL_HINT = ("on an Ascend machine: `source /usr/local/Ascend/ascend-toolkit/set_env.sh` (atc, npu-smi) and "
                "install ais_bench with its aclruntime (`pip install msit` then `msit install benchmark`, or the "
                "ais_bench and aclruntime wheels; see README)")
NOTHING_REASON = ("no Ascend om to judge: none of atc, ais_bench or benchmark.<arch> is installed and neither --om nor "
                  f"--dumps was given. To judge one, {INSTALL_HINT}; anywhere else pass --dumps DIR with device "
                  "outputs of this split")


@dataclass(frozen=True)
class Problem:
    message: str
    broken: bool  # True: a failure (fail the tests); False: an absence (skip them)


@dataclass(frozen=True)
class AscendSetup:
    tools: AscendTools
    om_given: dict[int, Path] | None  # --om, by the batch size its name claims (checked against the om later)
    soc_version: str | None  # e.g. Ascend310P3
    soc_source: str  # "--soc-version", "npu-smi info", or why it is unknown
    runner: str | None  # the runner kind that will run the om
    device_id: int
    dumps_given: bool
    problem: Problem | None  # why no live om can be judged here; None when one can
    fakes: tuple[str, ...] = ()  # declared by the tool environment (intrada.ascend.provenance)

    @property
    def nothing(self) -> bool:
        """No tool, no --om, no --dumps: the om gate has nothing to judge at all."""
        return not (self.tools.anything or self.om_given or self.dumps_given) and \
            (self.problem is None or not self.problem.broken)

    def fake_components(self) -> list[str]:
        return list(self.fakes)

    def device_label(self) -> str:
        label = f"{self.soc_version or 'unknown Ascend device'} (device {self.device_id})"
        fakes = self.fake_components()
        if fakes:
            label += f" [FAKE: contract-test {', '.join(fakes)}; not a device result]"
        return label

    def as_dict(self) -> dict[str, Any]:
        return {"tools": self.tools.as_dict(), "om": None if self.om_given is None else
                {str(bs): str(p) for bs, p in self.om_given.items()},
                "soc_version": self.soc_version, "soc_source": self.soc_source, "runner": self.runner,
                "device_id": self.device_id, "dumps": self.dumps_given, "fake_components": self.fake_components(),
                "problem": None if self.problem is None else self.problem.message,
                "problem_is_failure": None if self.problem is None else self.problem.broken}


def _runner(tools: AscendTools, requested: str) -> tuple[str | None, Problem | None]:
    if requested == "auto":
        return (tools.runtimes[0] if tools.runtimes else None), None
    if requested in tools.runtimes:
        return requested, None
    package = tools.ais_bench
    if package is None or package.location is None:
        cli_why = "ais_bench is not installed for this Python"
    elif package.inference_tool:
        cli_why = f"the ais_bench inference tool does not import in this Python ({tools.ais_bench_api_error})"
    else:
        cli_why = package.label()
    why = {"ais_bench-api": f"the ais_bench Python API is unusable ({tools.ais_bench_api_error})",
           "ais_bench-cli": cli_why,
           "benchmark": f"{benchmark_name()} is neither on PATH nor in the current directory"}
    return None, Problem(f"--om-runner {requested}: {why.get(requested, 'unknown runner')}", broken=True)


def _soc(soc_option: str | None, npu: NpuSmiInfo | IntradaError | None,
         device_id: int) -> tuple[str | None, str, Problem | None]:
    """(soc, where it came from, the npu-smi failure if any). A failing npu-smi is a failure even
    when --soc-version is given: the device it describes is the one the om runs on."""
    if isinstance(npu, IntradaError):
        return (soc_version_of(soc_option) if soc_option else None), f"npu-smi failed: {npu}", \
            Problem(f"npu-smi failed: {npu}", broken=True)
    if soc_option:
        return soc_version_of(soc_option), "--soc-version", None
    if npu is None:
        return None, "no --soc-version and no npu-smi on PATH", None
    try:
        return soc_version_of(npu.chip_name(device_id)), "npu-smi info", None
    except ToolError as exc:
        return None, str(exc), Problem(str(exc), broken=True)


def resolve_setup(tools: AscendTools, *, om_option: Path | None, soc_option: str | None, device_id: int,
                  runner_option: str, dumps_given: bool, npu: NpuSmiInfo | IntradaError | None,
                  fakes: tuple[str, ...] | None = None) -> AscendSetup:
    """``fakes``: the declared contract-test fakes (default: read from the environment)."""
    om_given, problem = None, None
    if om_option is not None:
        try:
            om_given = resolve_om_option(om_option)
        except IntradaError as exc:
            problem = Problem(str(exc), broken=True)
    runner, runner_problem = _runner(tools, runner_option)
    soc, soc_source, npu_problem = _soc(soc_option, npu, device_id)
    problem = problem or runner_problem or npu_problem
    has_om = om_given is not None or tools.atc is not None
    if problem is None and runner is None:
        if has_om:
            what = "--om was given" if om_given is not None else "atc can build the om"
            problem = Problem(f"{what} but nothing can run it: install ais_bench with its aclruntime (`pip install "
                              f"msit` then `msit install benchmark`, or the wheels; see README) or put "
                              f"{benchmark_name()} on PATH ({'; '.join(tools.runner_lines())})", broken=False)
        elif om_option is None:
            what = "judging --dumps only: " if dumps_given else ""
            problem = Problem(f"{what}no atc, ais_bench or benchmark here to run an om live ({INSTALL_HINT})",
                              broken=False)
    if problem is None and not has_om:
        problem = Problem(f"{runner} can run an om but there is none: pass --om PATH (an .om, or a directory of "
                          "*_bs<N>.om) or source CANN's set_env.sh so that atc is on PATH", broken=False)
    if problem is None and om_given is None and soc is None:
        # atc and a runner are here, so this is a device host that cannot say what it is
        problem = Problem(f"atc needs --soc_version ({soc_source}): pass --soc-version, e.g. Ascend310P3",
                          broken=True)
    return AscendSetup(tools, om_given, soc, soc_source, runner, device_id, dumps_given, problem,
                       declared_fakes() if fakes is None else fakes)
