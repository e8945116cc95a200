"""ais_bench as Ascend users install it: two generations of one tool, told apart by what they offer.

* **tools generation**: github.com/Ascend/tools, ``ais-bench_workload/tool/ais_bench`` (e.g. commit
  9d6da90, 2023-06);
* **msit generation**: github.com/Ascend/msit, ``ait/components/benchmark`` (last in-tree copy at
  commit 42a9c80, 2024-06), whose ``ais_bench`` and ``aclruntime`` 0.0.2 wheels ``msit install
  benchmark`` installs today.

Both wheels are named ``ais_bench-0.0.2`` and ``aclruntime-0.0.2`` in both generations
(tools ``setup.py``/``backend/setup.py``; msit ``ais_bench/install.sh``, ``backend/setup.py``
STATIC_VERSION), so a version string cannot tell them apart. The gate decides from what the installed
package offers (paths below are relative to the two folders above):

* timings: tools ``InferSession.sumary()`` / ``reset_sumaryinfo()`` (interface.py:103-107); msit
  ``summary()`` / ``reset_summaryinfo()`` (interface.py:467, :649), the misspelled names only on the
  binding;
* ``exec_time_list``: tools one duration in ms per execution (backend/base/include/Base/ModelInfer/
  ModelInferenceProcessor.h:139); msit one (start, end) pair in ms (ModelInferenceProcessor.h:141,
  backend/base/module/ModelInfer/ModelInferenceProcessor.cpp:624-629);
* releasing one session: tools has no call for it, dropping the session destroys it
  (backend/python/src/PyInferenceSession/PyInferenceSession.cpp:75-78); msit ``free_resource()``
  (interface.py:509-511), and its session holds a reference cycle (``infer_mode_switch``,
  interface.py:98-104), so dropping it frees nothing until the garbage collector runs;
* ``finalize()``: tools an instance method that also destroys its session (interface.py:108-110,
  PyInferenceSession.cpp:53-73); msit a static, process-wide call (interface.py:119-122);
* a dynamic-batch om: tools ``set_dynamic_batchsize(n)`` before ``infer`` (interface.py:51-52), and
  the CLI runs one without ``--dymBatch`` unchecked (infer/__main__.py:27-43); msit
  ``infer(feeds, mode="dymbatch")`` (interface.py:501-502, :655-666), and the CLI refuses one without
  ``--dymBatch`` (infer/benchmark_process.py:81-83);
* CLI paths: tools checks none; msit refuses symlinks, files not owned by the user or its group,
  group- or other-writable files and characters outside ``[_A-Za-z0-9/.-]`` in ``--model``,
  ``--input`` (and every file in an input folder), ``--output`` (infer/args_check.py:121-160,
  infer/utils.py:77-94, infer/path_security_check.py:29, :60-217), and chmods ``--output`` 0o750
  (benchmark_process.py:454-462);
* the CLI reads aclruntime's version with ``pkg_resources``: tools falls back to ``--run_mode tensor``
  without it (infer/miscellaneous.py:9-24); msit fails with UnboundLocalError
  (infer/miscellaneous.py:49-70), and setuptools 82 removed ``pkg_resources``.

In both, aclruntime's ``TensorContext`` is a process-wide singleton whose constructor calls aclInit
once and whose ``Finalize`` calls aclFinalize for good (backend/base/module/Tensor/TensorContext/
TensorContext.cpp, DeviceManager/DeviceManager.cpp ``InitDevices``/``DestroyDevices``); its
destructor finalizes at process exit. So sessions are released one by one and the process-wide
finalize runs once, at exit (:class:`AclLifetime`).

Durations are computed as each generation's own summary computes them: tools infer/__main__.py:341-345
passes ``exec_time_list`` to summary.py:57-68 as is; msit infer/benchmark_process.py:541 takes
``end - start`` of each pair; both then report ``throughput = 1000 * batchsize / mean`` (tools
summary.py:68, msit summary.py:211) with ``np.mean`` (tools summary.py:36, msit summary.py:74).
"""
from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import inspect
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ToolError

TOOLS = "tools"  # github.com/Ascend/tools ais-bench_workload/tool/ais_bench
MSIT = "msit"  # github.com/Ascend/msit ait/components/benchmark
GENERATION_SOURCES = {TOOLS: "github.com/Ascend/tools ais-bench_workload/tool/ais_bench",
                      MSIT: "github.com/Ascend/msit ait/components/benchmark (msit install benchmark)"}


# --------------------------------------------------------------------------------------------
# the installed package, found without importing it (cheap: the pytest header runs this)

@dataclass(frozen=True)
class AisBenchPackage:
    """What is installed under the name ``ais_bench``, seen from its files."""

    location: Path | None  # the ais_bench package folder, None when nothing is installed
    inference_tool: bool  # infer/interface.py defines InferSession and __main__.py runs the CLI
    reason: str | None  # why it is not usable as the inference tool
    distribution: str | None = None  # the installed distribution that owns it, when metadata says so
    version: str | None = None
    layout: str | None = None  # TOOLS or MSIT, from the files the CLI runs (see module docstring)
    checks_paths: bool = False  # the CLI refuses symlinks, group/other-writable files, odd path characters

    def label(self) -> str:
        where = f" at {self.location}" if self.location else ""
        if not self.inference_tool:
            return f"ais_bench{where}: {self.reason}"
        version = f"{self.distribution} {self.version}" if self.version else "version unknown (no package metadata)"
        return f"ais_bench{where} ({version}; {self.layout} generation files: {GENERATION_SOURCES[self.layout or TOOLS]})"

    def as_dict(self) -> dict[str, Any]:
        return {"location": None if self.location is None else str(self.location),
                "inference_tool": self.inference_tool, "reason": self.reason, "distribution": self.distribution,
                "version": self.version, "cli_generation": self.layout, "cli_checks_paths": self.checks_paths}


def _owns(dist: importlib.metadata.Distribution, package: str) -> bool:
    top = dist.read_text("top_level.txt")
    if top is not None:
        return package in top.split()
    return any(str(f).split("/")[0] == package for f in (dist.files or []))


def distribution_of(package: str, location: Path | None = None) -> tuple[str | None, str | None]:
    """(distribution name, version) of the installed distribution that provides ``package``: the one
    named like it (the ais_bench and aclruntime wheels of both generations are), else one in the
    package's own folder whose metadata lists it (msit's ait-benchmark also installs ais_bench). Cheap:
    no scan of every installed distribution's file list (that takes most of a second)."""
    try:
        try:
            dist = importlib.metadata.distribution(package)
            if _owns(dist, package):
                return dist.metadata["Name"], dist.version
        except importlib.metadata.PackageNotFoundError:
            pass
        if location is not None:
            for dist in importlib.metadata.distributions(path=[str(location.parent)]):
                if dist.read_text("top_level.txt") is not None and _owns(dist, package):
                    return dist.metadata["Name"], dist.version
    except Exception:  # broken metadata is no reason to fail discovery
        pass
    return None, None


def find_package() -> AisBenchPackage:
    """The ``ais_bench`` this interpreter would import, judged from its files: ``find_spec`` of a
    top-level name locates it without running it, so the ACL libraries are not loaded."""
    try:
        spec = importlib.util.find_spec("ais_bench")
    except (ImportError, ValueError) as exc:
        return AisBenchPackage(None, False, f"cannot be located ({exc})")
    if spec is None:
        return AisBenchPackage(None, False, "not installed")
    locations = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not locations:
        where = Path(spec.origin) if spec.origin else None
        return AisBenchPackage(where, False, "is a module, not the ais_bench inference package")
    for location in locations:
        interface = location / "infer" / "interface.py"
        if not interface.is_file():
            continue
        try:
            text = interface.read_text(errors="replace")
        except OSError as exc:
            return AisBenchPackage(location, False, f"infer/interface.py cannot be read ({exc.strerror})")
        if not re.search(r"^class InferSession\b", text, re.MULTILINE):
            return AisBenchPackage(location, False, "infer/interface.py defines no InferSession")
        if not (location / "__main__.py").is_file():
            return AisBenchPackage(location, False, "has no __main__.py, so `python3 -m ais_bench` cannot run")
        dist, version = distribution_of("ais_bench", location)
        msit = (location / "infer" / "benchmark_process.py").is_file()
        return AisBenchPackage(location, True, None, dist, version, MSIT if msit else TOOLS,
                               (location / "infer" / "path_security_check.py").is_file())
    where = locations[0]
    return AisBenchPackage(where, False, "is not the inference tool: it has no infer/interface.py (the AISBench "
                           "LLM evaluation tool, github.com/AISBench/benchmark, also installs a top-level ais_bench)")


# --------------------------------------------------------------------------------------------
# the imported Python API, by what it offers

@dataclass(frozen=True)
class Frontend:
    """The imported ``ais_bench.infer.interface``: which generation, from where, and how to drive it."""

    generation: str  # TOOLS, MSIT, or "mixed" (the names of one, the finalize of the other)
    module_file: str
    version: str | None
    aclruntime_file: str | None
    aclruntime_version: str | None
    summary: str  # "summary" or "sumary"
    reset: str  # "reset_summaryinfo" or "reset_sumaryinfo"
    free_resource: bool
    static_finalize: bool
    dymbatch_mode: bool  # infer(mode="dymbatch") selects the batch of a dynamic-batch om
    set_dynamic_batchsize: bool

    @property
    def release(self) -> str:
        return "free_resource()" if self.free_resource else "dropping the session (its destructor unloads the model)"

    @property
    def finalize(self) -> str:
        if self.static_finalize:
            return "InferSession.finalize() (static), once at process exit"
        return "aclruntime's TensorContext destructor at process exit (this finalize() needs a live session)"

    def as_dict(self) -> dict[str, Any]:
        return {"ais_bench_generation": self.generation, "ais_bench_source": GENERATION_SOURCES.get(self.generation),
                "ais_bench_version": self.version, "ais_bench_interface": self.module_file,
                "aclruntime_version": self.aclruntime_version, "aclruntime_file": self.aclruntime_file,
                "timings": f"InferSession.{self.summary}().exec_time_list, reset with {self.reset}()",
                "session_release": self.release, "acl_finalize": self.finalize}


def detect_frontend(module: Any) -> Frontend:
    """Feature detection on ``ais_bench.infer.interface``: the methods InferSession has (a missing one
    is a ToolError naming it, never an AttributeError later)."""
    cls = getattr(module, "InferSession", None)
    where = getattr(module, "__file__", None) or "ais_bench.infer.interface"
    if not inspect.isclass(cls):
        raise ToolError(where, "defines no InferSession class", "install the ais_bench inference wheel (see README)")
    summary = next((n for n in ("summary", "sumary") if callable(getattr(cls, n, None))), None)
    reset = next((n for n in ("reset_summaryinfo", "reset_sumaryinfo") if callable(getattr(cls, n, None))), None)
    missing = [n for n, found in (("summary()/sumary()", summary), ("reset_summaryinfo()/reset_sumaryinfo()", reset))
               if found is None]
    missing += [n for n in ("infer", "get_inputs", "get_outputs") if not callable(getattr(cls, n, None))]
    if missing:
        raise ToolError(f"{where} InferSession", f"has no {', '.join(missing)}",
                        "this ais_bench is neither generation the gate knows (github.com/Ascend/tools "
                        "ais-bench_workload, github.com/Ascend/msit components/benchmark); install one of those")
    finalize = inspect.getattr_static(cls, "finalize", None)
    static_finalize = isinstance(finalize, staticmethod)
    names_msit = summary == "summary"
    generation = MSIT if names_msit and static_finalize else TOOLS if not names_msit and not static_finalize else "mixed"
    aclruntime = sys.modules.get("aclruntime")
    acl_file = getattr(aclruntime, "__file__", None)
    package_dir = Path(str(where)).parent.parent
    # a package folder (its __init__.py) or an extension module file: where the distribution's metadata sits beside
    acl_dir = None if not acl_file else Path(acl_file).parent if Path(acl_file).name == "__init__.py" else Path(acl_file)
    return Frontend(generation, str(where), distribution_of("ais_bench", package_dir)[1],
                    None if acl_file is None else str(acl_file), distribution_of("aclruntime", acl_dir)[1],
                    summary or "", reset or "",
                    callable(getattr(cls, "free_resource", None)), static_finalize,
                    callable(getattr(cls, "_dymbatch_prepare", None)),
                    callable(getattr(cls, "set_dynamic_batchsize", None)))


def npu_compute_ms(entries: Iterable[Any], where: str) -> list[float]:
    """NPU compute time of each execution in ms from ``exec_time_list``, decided by the shape of its
    entries: a number is a duration (tools: ModelInferenceProcessor.h:139, summary.py:57-68 use it as
    is); a (start, end) pair gives ``end - start`` (msit: ModelInferenceProcessor.h:141,
    benchmark_process.py:541). Anything else, or a mix, is a ToolError."""
    out: list[float] = []
    kinds: set[str] = set()
    for entry in entries:
        if isinstance(entry, numbers.Real) and not isinstance(entry, bool):
            kinds.add("duration")
            out.append(float(entry))
        elif isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)) and len(entry) == 2 and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) for v in entry):
            kinds.add("(start, end) pair")
            out.append(float(entry[1]) - float(entry[0]))
        else:
            raise ToolError(where, f"exec_time_list holds {entry!r} ({type(entry).__name__}): neither a duration "
                            "nor a (start, end) pair in ms", "this ais_bench/aclruntime is neither generation the "
                            "gate knows; install the wheels of one (see README)")
    if len(kinds) > 1:
        raise ToolError(where, "exec_time_list mixes durations and (start, end) pairs", "reinstall aclruntime")
    if not out or not all(math.isfinite(t) and t > 0 for t in out):
        raise ToolError(where, f"exec_time_list gives no usable NPU compute times: {out[:5]}",
                        "the throughput needs the NPU compute time of each execution; check the run's log")
    return out


def throughput_fps(batch_size: int, times_ms: Sequence[float]) -> tuple[float, float]:
    """(throughput, mean ms): ``1000 * batchsize / mean`` (tools summary.py:68, msit summary.py:211)."""
    import numpy as np

    mean = float(np.mean(np.asarray(times_ms, dtype=np.float64)))
    return 1000.0 * batch_size / mean, mean


# --------------------------------------------------------------------------------------------
# the ACL lifetime: one aclInit, one aclFinalize per process

def check_status(what: str, result: Any) -> None:
    """msit's free_resource()/finalize() return the binding's error code instead of raising
    (PyInferenceSession.cpp FreeResource/Finalize: ``return ret``); non-zero is a failure."""
    if isinstance(result, int) and not isinstance(result, bool) and result != 0:
        raise ToolError(what, f"returned error code {result}", "see the ACL log (ASCEND_SLOG_PRINT_TO_STDOUT=1)")


@dataclass
class AclLifetime:
    """Sessions are released one by one; the process-wide finalize runs once, at exit.

    Why: aclruntime's TensorContext singleton calls aclInit once per process and, once finalized, is
    never built again (TensorContext.cpp, DeviceManager.cpp), so a session created after a finalize
    runs on a finalized ACL. ``finalize()`` is therefore never called between sessions.
    """

    registered: dict[int, Callable[[], None]] = field(default_factory=dict)

    def session_created(self, cls: Any, frontend: Frontend) -> None:
        """Called when a session of ``cls`` exists: registers the one exit-time finalize of its
        generation (msit: the static ``InferSession.finalize()``; tools: nothing to call, the binding's
        TensorContext destructor finalizes at exit, as the tools-generation samples rely on:
        test/interface_sample.py creates sessions and never finalizes)."""
        key = id(cls)
        if key in self.registered or not frontend.static_finalize:
            return

        def finalize() -> None:
            try:
                check_status("ais_bench InferSession.finalize()", cls.finalize())
            except Exception as exc:  # at exit there is no test left to fail: say it on stderr
                print(f"intrada: ais_bench InferSession.finalize() at exit failed: {exc}", file=sys.stderr)

        self.registered[key] = finalize
        atexit.register(finalize)


ACL_LIFETIME = AclLifetime()
