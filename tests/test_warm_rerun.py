"""A warm re-run of `pytest acceptance` rebuilds nothing.

Checked by the cache's own counters, not by a clock: `pytest acceptance` runs twice against one
artifact cache, each run tagged with its own run id (the gate's cache writes it into every line of
events.jsonl), and the second run must show zero builds and hit exactly the entries the first run
used (so every key is stable across processes and the event filter really caught the run). The
first run is the tiny session seed (tests/_gate.py, in the suite's process: the demo on TinyIntraDA,
the same builders, cache and plugin as the real network's, whose keys cannot tell which network made
them apart from its name); the second is a new process, as a user's re-run is, with exit code 0 as a
shell sees it.

Both runs pass --benchmark-disable --batch-sizes 1 (tests/_gate.py SEED_ARGS): the perf gate still
runs ONNX Runtime once and checks its outputs, but does not time it (inference is not artifact work,
the perf tests use the same artifact fixtures as the parity and accuracy tests, and no artifact
depends on the batch sizes).

Printed, not asserted (no timing assertions in tests/): the cache's seconds (hit verification),
the setup time of every fixture of fixtures/artifacts.py in the second run (measured by a small
plugin loaded into it), and how long hashing the ~180 MB checkpoint and ONNX takes (content sha256
is memoised per process only, so every run pays it once per file).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from _gate import RUN_ID_ENV, SEED_ARGS, TINY, GateSeed
from intrada.cache.events import CacheStats, read_events
from intrada.core.hashing import file_sha256

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# Loaded into the second run with -p: exclusive setup seconds of each fixtures.artifacts fixture
# (a fixture that requests another one dynamically is not charged for it).
TIMING_PLUGIN = '''
import json, os, time
import pytest

_times = {}
_children = []

@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if getattr(fixturedef.func, "__module__", "") != "fixtures.artifacts":
        yield
        return
    _children.append(0.0)
    start = time.perf_counter()
    yield
    total = time.perf_counter() - start
    own = total - _children.pop()
    if _children:
        _children[-1] += total
    name = fixturedef.argname + (f"[{request.param}]" if hasattr(request, "param") else "")
    _times[name] = _times.get(name, 0.0) + own

def pytest_sessionfinish(session):
    with open(os.environ["INTRADA_FIXTURE_TIMES"], "w") as f:
        json.dump(_times, f)
'''


def run_acceptance(workdir: Path, cache: Path, run_id: str, *extra: str, env: dict[str, str] | None = None
                   ) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(REPO / "acceptance"), "-c", str(REPO / "pytest.ini"), "--rootdir",
         str(REPO), "-p", "no:cacheprovider", "--cache-dir", str(cache), *SEED_ARGS, *extra],
        cwd=workdir, capture_output=True, text=True, timeout=1200,
        env={**os.environ, **(env or {}), RUN_ID_ENV: run_id})
    return proc, time.perf_counter() - start


def test_warm_rerun_builds_nothing(tmp_path: Path, tiny_seed: GateSeed) -> None:
    cache = tiny_seed.cache
    first_id, second_id = tiny_seed.default_run_id, f"warm-rerun-2-{uuid.uuid4().hex[:12]}"
    assert tiny_seed.default.ret == 0, tiny_seed.default.tail()

    (tmp_path / "warm_rerun_timing.py").write_text(TIMING_PLUGIN)
    times_file = tmp_path / "fixture_times.json"
    path = [str(tmp_path), str(REPO / "lib"), os.environ.get("PYTHONPATH")]  # the plugin; this checkout's gate
    env = {"PYTHONPATH": os.pathsep.join(filter(None, path)), "INTRADA_FIXTURE_TIMES": str(times_file), **TINY}
    second, second_s = run_acceptance(tmp_path, cache, second_id, "-p", "warm_rerun_timing", env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]

    events1 = read_events(cache, run_id=first_id)
    events2 = read_events(cache, run_id=second_id)
    used1 = {(e["kind"], e["key"]) for e in events1 if e["event"] in ("hit", "build")}
    hit2 = {(e["kind"], e["key"]) for e in events2 if e["event"] == "hit"}
    stats1, stats2 = CacheStats.from_events(events1), CacheStats.from_events(events2)

    fixture_s = json.loads(times_file.read_text())
    hashing = {}
    demo_dir = cache / "demo" / next(k for kind, k in used1 if kind == "demo")
    onnx_dir = cache / "onnx" / next(k for kind, k in used1 if kind == "onnx")
    for label, path in (("checkpoint", demo_dir / "checkpoint.pth"), ("ONNX", onnx_dir / "model.onnx")):
        start = time.perf_counter()
        file_sha256(path)
        hashing[label] = (path.stat().st_size, time.perf_counter() - start)

    print(f"\nwarm re-run of `pytest acceptance {' '.join(SEED_ARGS)}` against {cache} "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"  run 1 (the session seed, in the suite's process): {stats1.summary()}")
    print(f"  run 2: {stats2.summary()}; {second_s:.1f} s wall; hits verified in {1000 * stats2.hit_seconds:.1f} ms")
    print(f"  run 2, setup of fixtures/artifacts.py fixtures: {sum(fixture_s.values()):.2f} s in all; "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(fixture_s.items(), key=lambda kv: -kv[1]) if v >= 0.005))
    print("  content sha256 per run (memoised per process only): "
          + ", ".join(f"{k} {size / 1e6:.0f} MB {s:.2f} s" for k, (size, s) in hashing.items()))

    # The filter must have caught both runs' lookups of every artifact the gate uses.
    kinds = {kind for kind, _ in used1}
    assert {"demo", "onnx", "bins", "outputs", "eval"} <= kinds, f"run 1 used only {sorted(used1)}"
    built = [f"{e['kind']}/{e['key']} ({e.get('reason', 'new key')})" for e in events2 if e["event"] == "build"]
    assert stats2.builds == 0 and stats2.build_failures == 0, f"the warm re-run built {built}"
    assert hit2 == used1, (f"the warm re-run used other entries than the first run: only in run 1 "
                           f"{sorted(used1 - hit2)}, only in run 2 {sorted(hit2 - used1)} (a key is not stable "
                           f"across processes)")
    # The gate's own summary line counts the same (in-process counters vs events.jsonl).
    assert f"artifact cache: {stats2.hits} hits, 0 built" in second.stdout, second.stdout[-2000:]
