"""The artifact cache under normal use, corruption, kill -9, parallel processes and bad disks."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _hostile import as_nobody, traversable_tmp
from intrada.core import fs as cache_fs
from intrada.cache.store import ArtifactCache
from intrada.cache.events import CacheStats, read_events
from intrada.cache.manifest import KEY_HEX_CHARS
from intrada.core.errors import CacheError

PARTS: dict[str, Any] = {
    "checkpoint_sha256": "ab" * 32,
    "export": {"opset": 17, "dynamic_batch": True, "input": "image"},
    "versions": {"torch": "2.13.0", "onnx": "1.17.0"},
    "inputs": ["frankfurt_000000_000294", "lindau_000001_000019"],
    "scale": 0.5,
}


class Recorder:
    """A build function that counts its calls and writes known bytes."""

    def __init__(self, payload: bytes = b"artifact-bytes" * 100, info: dict[str, Any] | None = None) -> None:
        self.calls = 0
        self.payload = payload
        self.info = info if info is not None else {"rows": 2}

    def __call__(self, tmp: Path) -> dict[str, Any]:
        self.calls += 1
        (tmp / "blob.bin").write_bytes(self.payload)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "note.txt").write_text("second file\n")
        return self.info


def _never(tmp: Path) -> None:
    """A build that must not run: the entry is expected to be a hit."""
    raise AssertionError("built again")


def assert_full_copy(entry_dir: Path) -> None:
    """Every file of an entry against the sha256 its manifest recorded."""
    manifest = json.loads((entry_dir / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((entry_dir / name).read_bytes()).hexdigest() == meta["sha256"], name


def leftovers(root: Path, kind: str = "blob") -> list[str]:
    """Everything in a kind dir except lock files: temp dirs and entries."""
    d = root / kind
    return sorted(n for n in os.listdir(d) if not n.endswith(".lock")) if d.is_dir() else []


def events(root: Path, name: str) -> list[dict[str, Any]]:
    return [e for e in read_events(root) if e["event"] == name]


# --------------------------------------------------------------------------------------------
# keys

def test_key_ignores_dict_order_at_every_level(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    reordered = {k: PARTS[k] for k in reversed(list(PARTS))}
    reordered["export"] = {k: PARTS["export"][k] for k in reversed(list(PARTS["export"]))}
    assert list(reordered) != list(PARTS)
    assert cache.key("onnx", reordered) == cache.key("onnx", PARTS)
    key = cache.key("onnx", PARTS)
    assert len(key) == KEY_HEX_CHARS and int(key, 16) >= 0


def _variants(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """(path, changed value) for every leaf, including same-text-different-type changes."""
    if isinstance(value, dict):
        return [v for k, sub in value.items() for v in _variants(sub, path + (k,))]
    if isinstance(value, list):
        return [v for i, sub in enumerate(value) for v in _variants(sub, path + (i,))]
    if isinstance(value, bool):
        return [(path, not value), (path, int(value))]
    if isinstance(value, int):
        return [(path, value + 1), (path, float(value))]
    if isinstance(value, float):
        return [(path, value + 1e-9)]
    return [(path, value + "x"), (path, value[:-1])]


def test_key_changes_when_any_part_changes(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    base = cache.key("onnx", PARTS)
    seen = {base}
    variants = _variants(PARTS)
    assert len(variants) >= 12
    for path, new in variants:
        changed = json.loads(json.dumps(PARTS))
        target = changed
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new
        key = cache.key("onnx", changed)
        assert key not in seen, f"changing {path} to {new!r} did not change the key"
        seen.add(key)
    # adding or removing a part, and the kind itself, are part of the key too
    assert cache.key("onnx", {**PARTS, "extra": None}) != base
    assert cache.key("onnx", {k: v for k, v in PARTS.items() if k != "scale"}) != base
    assert cache.key("bins", PARTS) != base


@pytest.mark.parametrize("bad, match", [
    ({"p": Path("/x")}, r"PosixPath is not a JSON value"),
    ({"s": {1, 2}}, r"set is not a JSON value"),
    ({"f": float("nan")}, r"has no JSON form"),
    ({"d": {1: "a"}}, r"key 1 is not a string"),
])
def test_key_rejects_parts_without_a_canonical_json_form(tmp_path: Path, bad: dict[str, Any], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        ArtifactCache(tmp_path).key("onnx", bad)


@pytest.mark.parametrize("kind", ["", ".hidden", "a/b", "events.jsonl", "../up"])
def test_kind_must_be_a_plain_directory_name(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValueError, match="cache kind"):
        ArtifactCache(tmp_path).key(kind, {})


# --------------------------------------------------------------------------------------------
# hits, builds, counters, manifest

def test_miss_then_hit_counts_and_manifest(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, run_id="r1")
    build = Recorder()
    first = cache.get_or_build("blob", PARTS, build, description="test blob")
    assert first.built and build.calls == 1
    assert first.path == tmp_path / "blob" / cache.key("blob", PARTS)
    assert first.file("blob.bin").read_bytes() == build.payload
    assert first.files == {"blob.bin": len(build.payload), "sub/note.txt": 12}
    assert first.info == {"rows": 2}

    second = cache.get_or_build("blob", PARTS, build)
    assert not second.built and build.calls == 1
    assert second.path == first.path
    s = cache.stats()
    assert (s.hits, s.builds, s.rebuilds, s.build_failures, s.lock_waits) == (1, 1, 0, 0, 0)
    assert cache.stats("blob") == s and cache.stats("other") == CacheStats()

    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["kind"] == "blob" and manifest["key"] == first.key
    assert manifest["parts"] == PARTS and manifest["description"] == "test blob"
    assert manifest["files"]["blob.bin"] == {"size": len(build.payload),
                                             "sha256": hashlib.sha256(build.payload).hexdigest()}
    assert manifest["info"] == {"rows": 2} and manifest["build_seconds"] >= 0
    assert leftovers(tmp_path) == [first.key], "no temp dir may stay after a successful build"

    # the cross-process view agrees with the in-process counters
    agg = CacheStats.from_events(read_events(tmp_path, run_id="r1"))
    assert (agg.hits, agg.builds) == (1, 1)
    assert read_events(tmp_path, run_id="another run") == []
    with pytest.raises(KeyError, match="has no file 'nope'"):
        first.file("nope")


def test_warm_rerun_in_a_new_process_object_builds_nothing(tmp_path: Path) -> None:
    build = Recorder()
    ArtifactCache(tmp_path).get_or_build("blob", PARTS, build)
    ArtifactCache(tmp_path).get_or_build("other", {"x": 1}, build)
    warm = ArtifactCache(tmp_path)
    warm.get_or_build("blob", PARTS, build)
    warm.get_or_build("other", {"x": 1}, build)
    assert build.calls == 2
    s = warm.stats()
    assert (s.builds, s.hits) == (0, 2)
    assert "2 hits, 0 built" in s.summary()
    assert warm.get_or_build("blob", {**PARTS, "scale": 1.0}, build).built  # another key: a miss
    assert (warm.stats().hits, warm.stats().builds, build.calls) == (2, 1, 3)


def test_build_may_return_none_and_write_no_files(tmp_path: Path) -> None:
    entry = ArtifactCache(tmp_path).get_or_build("marker", {"done": True}, lambda tmp: None)
    assert entry.files == {} and entry.info == {}
    assert not ArtifactCache(tmp_path).get_or_build("marker", {"done": True}, _never).built


# --------------------------------------------------------------------------------------------
# failing builds

class BadCheckpoint(Exception):
    pass


def test_build_raising_leaves_nothing_and_propagates_unchanged(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    original = BadCheckpoint("checkpoint.pth: truncated")

    def build(tmp: Path) -> None:
        (tmp / "half.onnx").write_bytes(b"\0" * 4096)
        raise original

    with pytest.raises(BadCheckpoint) as info:
        cache.get_or_build("blob", PARTS, build)
    assert info.value is original
    assert leftovers(tmp_path) == []
    assert cache.stats().build_failures == 1 and cache.stats().builds == 0
    # the next attempt builds normally
    assert cache.get_or_build("blob", PARTS, Recorder()).built


@pytest.mark.parametrize("result, exc, match", [
    ([1, 2], TypeError, "must return a dict or None"),
    ({"path": Path("x")}, TypeError, "not a JSON value"),
])
def test_build_returning_a_non_json_result_leaves_nothing(tmp_path: Path, result: Any, exc: type[Exception],
                                                          match: str) -> None:
    def build(tmp: Path) -> Any:
        (tmp / "a").write_bytes(b"a")
        return result

    with pytest.raises(exc, match=match):
        ArtifactCache(tmp_path).get_or_build("blob", PARTS, build)
    assert leftovers(tmp_path) == []


def test_build_writing_the_reserved_manifest_name_or_a_link_is_refused(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ValueError, match="reserves"):
        cache.get_or_build("blob", PARTS, lambda tmp: (tmp / "manifest.json").write_text("{}") and None)
    with pytest.raises(ValueError, match="not a regular file"):
        cache.get_or_build("blob", PARTS, lambda tmp: (tmp / "link").symlink_to("/etc/hostname"))
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# corruption

def _truncate(entry_dir: Path) -> None:
    with open(entry_dir / "blob.bin", "r+b") as f:
        f.truncate(10)


def _flip_same_size(entry_dir: Path) -> None:
    data = bytearray((entry_dir / "blob.bin").read_bytes())
    data[0] ^= 0xFF
    (entry_dir / "blob.bin").write_bytes(bytes(data))


def _rewrite_manifest(entry_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    m = json.loads((entry_dir / "manifest.json").read_text())
    change(m)
    (entry_dir / "manifest.json").write_text(json.dumps(m))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "file truncated": (_truncate, "blob.bin has 10 bytes, manifest says 1400"),
    "file missing": (lambda d: (d / "sub" / "note.txt").unlink(), "sub/note.txt is missing"),
    "manifest deleted": (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
    "manifest garbage": (lambda d: (d / "manifest.json").write_bytes(b"\x00{not json"), "not a valid manifest"),
    "manifest empty": (lambda d: (d / "manifest.json").write_bytes(b""), "not a valid manifest"),
    "manifest of another key": (lambda d: _rewrite_manifest(d, lambda m: m.update(key="0" * 20)),
                                "not a valid manifest"),
    "manifest points outside": (lambda d: _rewrite_manifest(
        d, lambda m: m["files"].update({"../../escape": {"size": 1, "sha256": "0"}})), "unsafe path"),
    "file replaced by a directory": (lambda d: ((d / "blob.bin").unlink(), (d / "blob.bin").mkdir()),
                                     "blob.bin is not a regular file"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupted_entry_is_rebuilt_with_a_logged_reason(tmp_path: Path, corruption: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    corrupt, reason = CORRUPTIONS[corruption]
    build = Recorder()
    entry = ArtifactCache(tmp_path).get_or_build("blob", PARTS, build)
    corrupt(entry.path)

    cache = ArtifactCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="intrada.cache.store"):
        again = cache.get_or_build("blob", PARTS, build)
    assert again.built and build.calls == 2
    assert again.file("blob.bin").read_bytes() == build.payload
    assert (again.path / "sub" / "note.txt").read_text() == "second file\n"
    assert cache.stats().rebuilds == 1 and cache.stats().builds == 1
    assert any("rebuilding" in r.getMessage() and reason in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    rebuilt = [e for e in events(tmp_path, "build") if e["rebuild"]]
    assert len(rebuilt) == 1 and reason in rebuilt[0]["reason"]
    assert leftovers(tmp_path) == [entry.key]
    assert_full_copy(again.path)
    assert not ArtifactCache(tmp_path).get_or_build("blob", PARTS, _never).built


def test_same_size_corruption_is_not_detected(tmp_path: Path) -> None:
    # The documented limit of checking sizes, not hashes, on every hit (a warm run must not re-read
    # gigabytes): a same-size edit of an entry is handed out as it is.
    build = Recorder()
    entry = ArtifactCache(tmp_path).get_or_build("blob", PARTS, build)
    _flip_same_size(entry.path)
    again = ArtifactCache(tmp_path).get_or_build("blob", PARTS, build)
    assert not again.built and build.calls == 1
    assert again.file("blob.bin").read_bytes() != build.payload


def test_other_data_under_the_root_is_left_alone(tmp_path: Path) -> None:
    # e.g. the label cache (<root>/labels) and anything a user keeps beside the entries
    (tmp_path / "labels" / "frankfurt").mkdir(parents=True)
    (tmp_path / "blob").mkdir()
    (tmp_path / "blob" / "notes").mkdir()
    cache = ArtifactCache(tmp_path)
    a = cache.get_or_build("blob", PARTS, Recorder())  # sweeps blob/ for stale temp dirs
    assert leftovers(tmp_path) == sorted(["notes", a.key])
    assert (tmp_path / "labels" / "frankfurt").is_dir() and cache.stats().stale_removed == 0


# --------------------------------------------------------------------------------------------
# kill -9 and lock waits (real processes)

KILLED_BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from intrada.cache.store import ArtifactCache

    root, ready = Path(sys.argv[1]), Path(sys.argv[2])

    def build(tmp):
        with open(tmp / "blob.bin", "wb") as f:
            f.write(b"partial" * 100)   # part of the artifact, then the process dies
            f.flush()
        # renamed into place so the parent never reads a half-written path
        Path(str(ready) + ".part").write_text(str(tmp))
        Path(str(ready) + ".part").rename(ready)
        time.sleep(120)

    ArtifactCache(root).get_or_build("blob", {"v": 1}, build)
    """)


def _start_killed_builder(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "builder.py"
    script.write_text(KILLED_BUILDER)
    ready = tmp_path / "ready"
    root = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(ready)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"builder subprocess did not start its build (rc={proc.returncode})")
        time.sleep(0.01)
    return proc, Path(ready.read_text())


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_kill9_during_build_never_exposes_the_partial_entry(tmp_path: Path) -> None:
    proc, partial_dir = _start_killed_builder(tmp_path)
    root = tmp_path / "cache"
    try:
        cache = ArtifactCache(root)
        assert partial_dir.is_dir() and partial_dir.parent == root / "blob"
        assert leftovers(root) == [partial_dir.name], "the live build's entry is visible"
        other = cache.get_or_build("blob", {"v": 2}, Recorder())  # sweeps blob/ for stale temp dirs
        assert partial_dir.is_dir(), "a live build's temp dir was removed"
        assert cache.stats().stale_removed == 0
    finally:
        _kill9(proc)
    assert partial_dir.is_dir()  # kill -9 ran no cleanup: the partial files are still there
    assert leftovers(root) == sorted([partial_dir.name, other.key])

    build = Recorder()
    entry = cache.get_or_build("blob", {"v": 1}, build)
    assert entry.built and build.calls == 1
    assert entry.file("blob.bin").read_bytes() == build.payload
    assert not partial_dir.exists()
    assert leftovers(root) == sorted([entry.key, other.key])
    s = cache.stats()
    assert (s.builds, s.rebuilds, s.stale_removed) == (2, 0, 1)


def test_stale_temp_dir_of_an_abandoned_key_is_cleaned_later(tmp_path: Path) -> None:
    proc, partial_dir = _start_killed_builder(tmp_path)
    _kill9(proc)
    cache = ArtifactCache(tmp_path / "cache")
    cache.get_or_build("blob", {"v": "another key"}, Recorder())  # nobody asks for {"v": 1} again
    assert not partial_dir.exists()
    assert cache.stats().stale_removed == 1


def test_waiter_reports_the_wait_and_takes_over_when_the_builder_is_killed(tmp_path: Path) -> None:
    proc, partial_dir = _start_killed_builder(tmp_path)
    messages: list[str] = []
    cache = ArtifactCache(tmp_path / "cache", on_wait=messages.append, wait_notice_s=0.1, wait_repeat_s=0.1)
    killer = threading.Timer(0.6, _kill9, args=(proc,))
    killer.start()
    try:
        build = Recorder()
        entry = cache.get_or_build("blob", {"v": 1}, build, description="the demo ONNX export")
    finally:
        killer.join()
        if proc.poll() is None:
            proc.kill()
    assert entry.built and build.calls == 1
    assert entry.file("blob.bin").read_bytes() == build.payload
    assert not partial_dir.exists()
    s = cache.stats()
    assert s.lock_waits == 1 and s.lock_wait_seconds >= 0.5
    assert messages and all("waiting" in m and "the demo ONNX export" in m for m in messages)


PARALLEL_WORKER = textwrap.dedent("""
    import hashlib, json, os, sys, time
    from pathlib import Path
    from intrada.cache.store import ArtifactCache

    root, sync, idx = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    (sync / f"ready-{idx}").touch()
    while not (sync / "go").exists():
        time.sleep(0.002)

    def build(tmp):
        time.sleep(0.3)  # long enough for the others to arrive while the lock is held
        (tmp / "blob.bin").write_bytes(os.urandom(1 << 16))  # two builds could never agree
        return {"builder": os.getpid()}

    cache = ArtifactCache(root, run_id="parallel")
    entry = cache.get_or_build("blob", {"v": 1}, build)
    print(json.dumps({"sha": hashlib.sha256(entry.file("blob.bin").read_bytes()).hexdigest(),
                      "built": entry.built, "builder": entry.info["builder"], "pid": os.getpid()}))
    """)


def test_four_processes_build_once_and_read_the_same_bytes(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(PARALLEL_WORKER)
    sync = tmp_path / "sync"
    sync.mkdir()
    root = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(sync), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(4)]
    try:
        deadline = time.monotonic() + 60
        while len(list(sync.glob("ready-*"))) < 4:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "workers did not start"
            time.sleep(0.01)
        (sync / "go").touch()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [err.decode() for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    assert sum(r["built"] for r in results) == 1
    assert len({r["sha"] for r in results}) == 1
    builder = {r["builder"] for r in results}
    assert builder == {next(r["pid"] for r in results if r["built"])}
    run = read_events(root, run_id="parallel")
    assert [e["event"] for e in run].count("build") == 1
    agg = CacheStats.from_events(run)
    assert (agg.builds, agg.hits, agg.build_failures) == (1, 3, 0)
    assert len({e["pid"] for e in run}) == 4
    assert leftovers(root) == [ArtifactCache(root).key("blob", {"v": 1})]


# --------------------------------------------------------------------------------------------
# unusable cache directories

def test_cache_dir_under_a_regular_file_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(CacheError) as info:
        ArtifactCache(blocker / "cache")
    msg = str(info.value)
    assert msg.startswith(f"{blocker / 'cache'}: cannot create the cache directory (Not a directory, ENOTDIR)")
    assert msg.endswith("Hint: pass --cache-dir DIR to use a writable directory")
    assert "\n" not in msg


@pytest.mark.parametrize("prebuilt", [False, True], ids=["empty", "with-entry"])
def test_read_only_cache_dir_is_a_cache_error(prebuilt: bool) -> None:
    # pytest's tmp_path lives under a 0700 directory that "nobody" cannot traverse.
    with traversable_tmp("intrada-ro-") as base:
        root = base / "cache"
        if prebuilt:
            ArtifactCache(root).get_or_build("blob", PARTS, Recorder())
        root.mkdir(exist_ok=True)
        os.chmod(root, 0o555)
        if prebuilt:
            os.chmod(root / "blob", 0o555)

        def attempt() -> str:
            try:
                ArtifactCache(root).get_or_build("blob", PARTS, Recorder())
            except CacheError as exc:
                return str(exc)
            return "no error"

        msg = as_nobody(attempt)
        if prebuilt:  # the entry is fine, but the run could not record anything: still refused
            assert msg == (f"{root}: cannot append to events.jsonl (Permission denied, EACCES). "
                           f"Hint: pass --cache-dir DIR to use a writable directory"), msg
        else:
            assert msg == (f"{root}: cannot create a cache directory blob (Permission denied, EACCES). "
                           f"Hint: pass --cache-dir DIR to use a writable directory"), msg
        assert sorted(os.listdir(root)) == (["blob", "events.jsonl"] if prebuilt else [])


def test_full_disk_during_build_is_a_cache_error_and_leaves_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)

    def build(tmp: Path) -> None:
        if not os.path.exists("/dev/full"):  # not Linux: the same failure, raised by hand
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "model.onnx"))
        # /dev/full makes the kernel itself answer ENOSPC to the write, no mocking needed
        (tmp / "model.onnx").symlink_to("/dev/full")
        with open(tmp / "model.onnx", "wb") as f:
            f.write(b"\0" * 1024)

    with pytest.raises(CacheError) as info:
        cache.get_or_build("blob", PARTS, build, description="ONNX export")
    msg = str(info.value)
    assert msg == (f"{tmp_path}: disk full while building ONNX export in blob/ (No space left on device, ENOSPC). "
                   f"Hint: free space on that disk or pass --cache-dir DIR on another one")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert leftovers(tmp_path) == []
    assert cache.stats().build_failures == 1


def test_full_disk_reported_without_errno_is_still_a_cache_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # numpy.tofile and torch.save report a full disk as a plain RuntimeError/OSError without errno
    monkeypatch.setattr(cache_fs, "free_bytes", lambda path: 4096)

    def build(tmp: Path) -> None:
        (tmp / "bins").write_bytes(b"\0" * 100)
        raise RuntimeError("file write failed")

    with pytest.raises(CacheError, match=r"disk full while building blob in blob/ \(less than 1 MiB free; build\(\) "
                                         r"raised RuntimeError: file write failed\)\. Hint: free space"):
        ArtifactCache(tmp_path).get_or_build("blob", PARTS, build)
    assert leftovers(tmp_path) == []


def test_plain_build_errors_are_not_blamed_on_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_fs, "free_bytes", lambda path: 1 << 40)
    with pytest.raises(OSError) as info:
        ArtifactCache(tmp_path).get_or_build("blob", PARTS, lambda tmp: open(tmp / "missing" / "x"))
    assert not isinstance(info.value, CacheError) and info.value.errno == errno.ENOENT


def test_full_disk_while_writing_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(path: Path, data: bytes) -> None:
        with open(path, "wb") as f:  # a partial manifest, as a real full disk would leave
            f.write(data[:7])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache_fs, "write_file", no_space)
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheError, match=r"^" + str(tmp_path) + r": cannot write the manifest in blob/\.tmp-.* "
                                         r"\(No space left on device, ENOSPC\)\. Hint: free space on that disk"):
        cache.get_or_build("blob", PARTS, Recorder())
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert cache.get_or_build("blob", PARTS, Recorder()).built


def test_complete_lists_whole_entries_only(tmp_path: Path) -> None:
    """complete(kind): entries with a valid manifest and every file, in key order; not temp dirs, not
    an entry missing a file, not another kind."""
    cache = ArtifactCache(tmp_path / "c")

    def build(tmp: Path) -> None:
        (tmp / "a.bin").write_bytes(b"x")

    keys = sorted(cache.get_or_build("outputs", {"n": i}, build).key for i in range(3))
    cache.get_or_build("bins", {"n": 0}, build)
    (tmp_path / "c" / "outputs" / f".tmp-{keys[0]}-host-1-x").mkdir()
    (cache.entry_dir("outputs", keys[1]) / "a.bin").unlink()
    assert [e.key for e in cache.complete("outputs")] == [keys[0], keys[2]]
    assert [e.kind for e in cache.complete("bins")] == ["bins"]
    assert list(cache.complete("eval")) == []
