"""Running the gate (`pytest acceptance ...`) from the suite's own tests.

The pyramid: most gate tests run the gate *in this process* (``pytest.main``, see below):
torch, onnxruntime and OpenVINO are imported once, and the 180 MB checkpoint and ONNX are hashed
once (``intrada.core.hashing`` memoises by path, size, mtime and inode). A real ``pytest acceptance``
subprocess is kept where the process is the point: exit codes as a shell sees them, kill -9,
pytest-xdist, the warm re-run measured as a new process. Every run is a :class:`GateRun`: exit
code, terminal output and the report.json it wrote.

Caches. The session cache is the one the README's ``pytest`` gives acceptance/ (``INTRADA_CACHE_DIR``
or ``<repo>/.cache/intrada``): :func:`build_session_seed` builds the embedded demo's artifacts in it
once per session by running the gate itself, so acceptance/ later hits them too. A gate test that
builds or breaks artifacts gets its own cache, :func:`seed_cache`: hard links of the session cache's
complete entries (one link per file; a copy across filesystems), no events, no locks, no temp dirs.
Links are safe because entries are immutable (built in a temp dir, renamed into place; the label
cache is written by rename too); a test that must change a seeded file replaces it (unlink, write).

Why the demo's *default mode* (no --weights/--cityscapes) runs on the session cache itself: the
demo lives inside the cache, and dataset artifacts are keyed by the images' paths
(``pipeline.stat_fingerprint``), so a default-mode run in any other cache would rebuild the bins and
every output. Those runs only read what the seed built (they add at most an eval of their own
--dumps). Runs that need the demo as a *submission* pass the session cache's demo files
(``--weights/--cityscapes/--thresholds``, see :attr:`GateSeed.real_args`): same paths, so they hit
the seeded bins and outputs from their own cache.

In-process runs go through ``pytest.main`` (:func:`run_inprocess`), and these tests do not use the
``pytester`` fixture at all: pytester removes from ``sys.modules`` every module first imported while
it was active (after each in-process run, and again at the test's teardown), and in a process
holding torch, onnx and onnxruntime that breaks things: re-imported C-extension packages lose
attributes (onnx: "module 'onnx.onnx_cpp2py_export.checker' has no attribute 'CheckerContext'"),
torch's exporter aborts the process, and a re-imported lib module is no longer the one its
importers hold (multiprocessing: "Can't pickle <function _evaluate_one>: it's not the same object as
intrada.evaluation.evaluate._evaluate_one"). Here what a run imports stays imported, as in the acceptance/ part
of the README's run; ``sys.path`` and the working directory are restored. Other caveats, handled
here or by the callers: ``--basetemp`` is always given, so an inner run never prunes the outer
session's temp dirs; environment fakes (PATH, PYTHONPATH, INTRADA_FAKE_*) go through monkeypatch,
and a package put on ``sys.path`` for this process must be taken off it and out of ``sys.modules``
by the test (tests/test_ascend_contract.py: ``_drop_fake_modules``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SESSION_CACHE = Path(os.environ.get("INTRADA_CACHE_DIR") or REPO / ".cache" / "intrada").absolute()
GATE_ARGS = (str(REPO / "acceptance"), "-c", str(REPO / "pytest.ini"), "--rootdir", str(REPO), "-p", "no:cacheprovider")
# The session seed's first run (build_session_seed), which the warm re-run repeats as a new process.
SEED_ARGS = ("--benchmark-disable", "--batch-sizes", "1")
# Run id variable read by fixtures/artifacts.py (pytest-xdist's name: all workers of a run share it).
RUN_ID_ENV = "PYTEST_XDIST_TESTRUNUID"
# The environment that puts the gate on TinyIntraDA (intrada.model.network): for runs whose point is
# the gate's mechanics (caching, locks, workers, exit codes), not the numbers of the real network.
TINY = {"INTRADA_NETWORK": "tiny"}
TINY_CACHE = SESSION_CACHE.with_name(SESSION_CACHE.name + "-tiny")
_KEY_RE = re.compile(r"^[0-9a-f]{20}$")  # intrada.cache.manifest.KEY_HEX_CHARS, checked in seed_cache


# -- caches ---------------------------------------------------------------------------------------
def _link(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem (EXDEV), or links not allowed: copy
        shutil.copy2(src, dst)
    return dst


def link_tree(src: Path, dst: Path) -> Path:
    """`cp -al`: hard links where the filesystems allow it, else copies."""
    shutil.copytree(src, dst, copy_function=_link)
    return dst


def seed_cache(dst: Path, src: Path = SESSION_CACHE, kinds: tuple[str, ...] | None = None,
               keys: frozenset[tuple[str, str]] | None = None) -> Path:
    """A fresh cache at ``dst`` holding hard links of ``src``'s complete entries (of ``kinds``, or only
    the ``(kind, key)`` pairs in ``keys``; everything by default) and its label cache, without events,
    locks or temp dirs."""
    from intrada.cache.manifest import KEY_HEX_CHARS, MANIFEST

    assert _KEY_RE.pattern == rf"^[0-9a-f]{{{KEY_HEX_CHARS}}}$"
    dst.mkdir(parents=True)
    for kind_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        if kinds is not None and kind_dir.name not in kinds:
            continue
        if kind_dir.name == "labels":  # the label cache: plain files written by rename
            if keys is None:  # a cache seeded with chosen entries holds just those
                link_tree(kind_dir, dst / "labels")
            continue
        for entry in sorted(kind_dir.iterdir()):
            if keys is not None and (kind_dir.name, entry.name) not in keys:
                continue
            if _KEY_RE.match(entry.name) and (entry / MANIFEST).is_file():
                link_tree(entry, dst / kind_dir.name / entry.name)
    return dst


# -- one gate run -----------------------------------------------------------------------------------
@dataclass
class GateRun:
    """A finished `pytest acceptance ...`: exit code, output, and its report.json ({} when none)."""

    ret: int
    stdout: str
    stderr: str
    outlines: list[str]
    report: dict[str, Any]
    result: pytest.RunResult = field(repr=False)

    @classmethod
    def of(cls, result: pytest.RunResult, report_dir: Path | None) -> GateRun:
        path = report_dir / "report.json" if report_dir is not None else None
        data = json.loads(path.read_text()) if path is not None and path.exists() else {}
        return cls(int(result.ret), result.stdout.str(), result.stderr.str(), list(result.outlines), data, result)

    @property
    def tests(self) -> dict[str, dict[str, str]]:
        """test name (with params) -> {test, outcome, message}, over all gates."""
        return {t["test"].split("::", 1)[1]: t for v in self.report.get("verdicts", {}).values() for t in v["tests"]}

    def outcomes(self) -> dict[str, str]:
        return {name: t["outcome"] for name, t in self.tests.items()}

    def messages(self) -> dict[str, str]:
        return {name: t["message"] for name, t in self.tests.items()}

    def outcome(self, name: str) -> str:
        return self.tests[name]["outcome"]

    def message(self, name: str) -> str:
        return self.tests[name]["message"]

    def parseoutcomes(self) -> dict[str, int]:
        return self.result.parseoutcomes()

    def skip_reasons(self) -> set[str]:
        """Reasons of the -ra summary lines ``SKIPPED [n] path:line: reason``."""
        return {re.sub(r"^SKIPPED \[\d+\] [^:]+:\d+: ", "", line) for line in self.outlines
                if line.startswith("SKIPPED [")}

    def tail(self) -> str:
        return (self.stdout + self.stderr)[-4000:]


def run_gate(workdir: Path, *args: str, cache: Path | None, report: Path | None = None,
             subprocess: bool = False, timeout: float = 900, env: dict[str, str] | None = None) -> GateRun:
    """`pytest acceptance --cache-dir CACHE --report DIR ARGS...` run from ``workdir``, in this process
    (default) or in a subprocess, with ``env`` added to the environment (:data:`TINY`: the test
    network). ``report`` defaults to a fresh directory under ``workdir``; ``cache=None`` passes no
    --cache-dir (the test's own --cache-dir or $INTRADA_CACHE_DIR decides)."""
    report = report or workdir / f"report-{time.monotonic_ns()}"
    argv = [f"--basetemp={workdir / f'basetemp-{time.monotonic_ns()}'}", *GATE_ARGS,
            *(["--cache-dir", str(cache)] if cache is not None else []), "--report", str(report), *args]
    with _env(**(env or {})):
        result = run_subprocess(argv, workdir, timeout) if subprocess else run_inprocess(argv, workdir)
    return GateRun.of(result, report)


def run_subprocess(argv: list[str], workdir: Path, timeout: float) -> pytest.RunResult:
    """``python -m pytest ARGV`` in a new process, from ``workdir``, with the current environment and
    this checkout's lib/ first on PYTHONPATH (whatever PYTHONPATH the test set: the Ascend fakes
    replace it)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "lib"), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return pytest.RunResult(proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines(),
                            time.perf_counter() - t0)


def demo_entry(tiny: bool = False) -> Path:
    """The embedded demo submission in the session cache (built on first use): checkpoint.pth,
    cityscapes/, thresholds.toml; for TinyIntraDA in the tiny session cache with ``tiny``. Cheaper
    than a seed: no artifact but the demo itself."""
    from intrada.cache.store import ArtifactCache
    from intrada.gate.artifacts import demo_entry as entry
    from intrada.model.network import DEEPLABV2, TINY as TINY_NETWORK

    return entry(ArtifactCache(TINY_CACHE if tiny else SESSION_CACHE), TINY_NETWORK if tiny else DEEPLABV2)


# -- the session seed -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateSeed:
    """The session cache after the seed runs, and what they reported."""

    cache: Path
    demo: Path  # the demo entry: checkpoint.pth, cityscapes/, thresholds.toml
    onnx: Path  # the demo checkpoint's ONNX export (cache entry)
    default: GateRun  # `pytest acceptance SEED_ARGS`, the embedded submission
    default_run_id: str  # its run id in the cache's events.jsonl
    keys: frozenset[tuple[str, str]]  # (kind, key) of every entry the seed runs built or hit
    seconds: float

    def copy(self, dst: Path) -> Path:
        """A test's own cache: hard links of the entries the seed runs used (not whatever else the
        session cache holds from other versions of the code)."""
        return seed_cache(dst, self.cache, keys=self.keys)

    @property
    def weights(self) -> Path:
        return self.demo / "checkpoint.pth"

    @property
    def cityscapes(self) -> Path:
        return self.demo / "cityscapes"

    @property
    def thresholds(self) -> Path:
        return self.demo / "thresholds.toml"

    def real_args(self) -> list[str]:
        """The demo as a submission: same image paths as the default mode, so its seeded bins hit."""
        return ["--weights", str(self.weights), "--cityscapes", str(self.cityscapes), "--thresholds",
                str(self.thresholds)]


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _QuietGc:
    """What pytester does for its in-process runs: no gc.collect() rounds at session end (pytest's
    unraisable-exception check), which cost seconds in a process holding torch."""

    @staticmethod
    def pytest_configure(config: pytest.Config) -> None:
        try:
            from _pytest.unraisableexception import gc_collect_iterations_key
        except ImportError:  # another pytest: the check just runs
            return
        config.stash[gc_collect_iterations_key] = 0


def run_inprocess(argv: list[str], workdir: Path) -> pytest.RunResult:
    """``pytest.main(argv)`` in this process from ``workdir``, its stdout and stderr captured (see the
    module docstring)."""
    import importlib

    importlib.invalidate_caches()
    out, err = io.StringIO(), io.StringIO()
    saved_path, saved_cwd = list(sys.path), os.getcwd()
    t0 = time.perf_counter()
    try:
        os.chdir(workdir)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            ret = pytest.main(argv, plugins=[_QuietGc()])
    finally:
        sys.path[:] = saved_path
        os.chdir(saved_cwd)
    return pytest.RunResult(int(ret), out.getvalue().splitlines(), err.getvalue().splitlines(),
                            time.perf_counter() - t0)


def run_gate_here(workdir: Path, *args: str, cache: Path, run_id: str | None = None,
                  env: dict[str, str] | None = None) -> GateRun:
    """:func:`run_gate` in this process, its cache events tagged with ``run_id`` (for fixtures)."""
    with _env(**({RUN_ID_ENV: run_id} if run_id is not None else {})):
        return run_gate(workdir, *args, cache=cache, env=env)


def build_tiny_seed(workdir: Path) -> GateSeed:
    """The seed's default run on TinyIntraDA (:data:`TINY`), in the tiny session cache: the artifacts
    the suite's tests of mechanics (kill -9, xdist, the warm re-run, exit codes) start from."""
    from intrada.cache.events import read_events

    t0 = time.perf_counter()
    run_id = f"tiny-seed-{uuid.uuid4().hex[:12]}"
    default = run_gate_here(workdir, *SEED_ARGS, cache=TINY_CACHE, run_id=run_id, env=TINY)
    if default.ret != 0:
        pytest.fail(f"the tiny session seed run failed:\n{default.tail()}", pytrace=False)
    keys = frozenset((e["kind"], e["key"]) for e in read_events(TINY_CACHE, run_id=run_id)
                     if e["event"] in ("hit", "build"))
    demo = Path(default.report["sections"]["artifacts.checkpoint"]["path"]).parent
    onnx = Path(default.report["sections"]["artifacts.onnx"]["path"])
    return GateSeed(TINY_CACHE, demo, onnx, default, run_id, keys, time.perf_counter() - t0)


def build_session_seed(workdir: Path) -> GateSeed:
    """Build the embedded demo's artifacts in the session cache by running the gate, in this process:

    * ``pytest acceptance --benchmark-disable --batch-sizes 1`` (every gate; the default mode): the
      demo, its ONNX export, the 8-image bins, ONNX Runtime / PyTorch / OpenVINO outputs and the mIoU.
      The run is tagged with a run id, so tests can read its cache events (the warm re-run compares
      with it). One batch size: the perf test then checks one ONNX Runtime run's outputs instead of
      two; the batch sizes enter no artifact.
    * ``-m "parity or accuracy" -k "not openvino" --max-images 2``: the 2-image bins, ONNX Runtime and
      PyTorch outputs that the 2-image gate runs of the suite read.
    """
    from intrada.cache.events import read_events

    t0 = time.perf_counter()
    run_id, small_id = f"seed-{uuid.uuid4().hex[:12]}", f"seed-2-{uuid.uuid4().hex[:12]}"
    default = run_gate_here(workdir, *SEED_ARGS, cache=SESSION_CACHE, run_id=run_id)
    if default.ret != 0:
        pytest.fail(f"the session seed run (`pytest acceptance` on the demo) failed:\n{default.tail()}", pytrace=False)
    small = run_gate_here(workdir, "--benchmark-disable", "-m", "parity or accuracy", "-k", "not openvino",
                          "--max-images", "2", cache=SESSION_CACHE, run_id=small_id)
    if small.ret != 0:
        pytest.fail(f"the 2-image session seed run failed:\n{small.tail()}", pytrace=False)
    keys = frozenset((e["kind"], e["key"]) for rid in (run_id, small_id) for e in read_events(SESSION_CACHE, run_id=rid)
                     if e["event"] in ("hit", "build"))
    demo = Path(default.report["sections"]["artifacts.checkpoint"]["path"]).parent
    onnx = Path(default.report["sections"]["artifacts.onnx"]["path"])
    return GateSeed(SESSION_CACHE, demo, onnx, default, run_id, keys, time.perf_counter() - t0)
