"""Content-keyed artifact cache shared by runs and by parallel pytest-xdist workers.

Layout under the cache root::

    <root>/<kind>/<key>/            one entry: the artifact's files + manifest.json
    <root>/<kind>/.<key>.lock       per-key file lock (flock; the kernel drops it when its holder dies)
    <root>/<kind>/.tmp-<key>-*      a build in progress, or the remains of a killed one
    <root>/events.jsonl             one JSON line per hit / build / wait, appended by every process

An entry exists only once its final directory exists with a manifest: build() writes into a
temporary directory beside the entry (same filesystem) and the cache renames it into place after
writing the manifest, so a reader never sees half an entry. Builders of one key are serialised by
the key's lock; readers of a valid entry take no lock at all.

Typical use::

    cache = ArtifactCache(Path(".intrada-cache"))
    entry = cache.get_or_build(
        "onnx", {"checkpoint_sha256": sha, "opset": 17, "torch": torch.__version__},
        lambda tmp: export_onnx(model, tmp / "model.onnx"), description="ONNX export")
    onnx_path = entry.file("model.onnx")
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core import fs as cache_fs
from .events import EVENTS, CacheStats, append_event
from .lock import acquire, held, new_lock, try_lock
from .manifest import KEY_HEX_CHARS, MANIFEST, CacheEntry, canonical_json, entry_key, load_entry, make_manifest
from ..core.errors import CacheError

__all__ = ["ArtifactCache"]

log = logging.getLogger("intrada.cache.store")

_TMP_PREFIX = ".tmp-"
_HINT_WRITABLE = "pass --cache-dir DIR to use a writable directory"
_HINT_SPACE = "free space on that disk or pass --cache-dir DIR on another one"

Build = Callable[[Path], "Mapping[str, Any] | None"]


# --------------------------------------------------------------------------------------------
# the cache

class ArtifactCache:
    """See the module docstring.

    ``on_wait(message)`` is called (and the message logged at INFO) when a lock is still held by
    another process after ``wait_notice_s`` seconds, then every ``wait_repeat_s``; the wait lasts
    as long as the builder lives (the kernel drops a dead holder's flock).
    ``run_id`` is written into every event so one run's events can be told apart (xdist: the
    controller and workers share ``testrun_uid``). ``around_build()`` is entered around every build
    (the pytest plugin uses it to let progress bars through the output capture).
    """

    def __init__(self, root: str | os.PathLike[str], *, run_id: str | None = None,
                 on_wait: Callable[[str], None] | None = None, wait_notice_s: float = 5.0,
                 wait_repeat_s: float = 30.0,
                 around_build: Callable[[], contextlib.AbstractContextManager[Any]] | None = None) -> None:
        self.root = Path(root).absolute()
        self.run_id = run_id
        self.on_wait = on_wait
        self.around_build = around_build or contextlib.nullcontext
        self.wait_notice_s = wait_notice_s
        self.wait_repeat_s = wait_repeat_s
        self._stats: dict[str, CacheStats] = {}
        self._swept: set[str] = set()
        self._mutex = threading.Lock()
        with self._io("create the cache directory"):
            self.root.mkdir(parents=True, exist_ok=True)

    # -- keys and paths ----------------------------------------------------------------------
    def key(self, kind: str, parts: Mapping[str, Any]) -> str:
        """Hex digest of everything that made the artifact; dict order does not matter."""
        return entry_key(kind, parts)

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def complete(self, kind: str) -> Iterator[CacheEntry]:
        """The complete entries of ``kind`` (a valid manifest, every file present), in key order; for
        a builder that can take parts of other entries. Temp dirs and lock files are not entries."""
        kind_dir = self.root / kind
        names = sorted(p.name for p in kind_dir.iterdir()) if kind_dir.is_dir() else []
        for key in names:
            if len(key) == KEY_HEX_CHARS and all(c in "0123456789abcdef" for c in key):
                entry, _reason = self._load(kind, key)
                if entry is not None:
                    yield entry

    # -- public operations -------------------------------------------------------------------
    def get_or_build(self, kind: str, parts: Mapping[str, Any], build: Build, *,
                     description: str = "") -> CacheEntry:
        """Return the entry for ``parts``, running ``build(tmp_dir)`` at most once across processes.

        ``build`` writes the artifact's files into ``tmp_dir`` and may return a JSON-able dict,
        stored as the manifest's ``info``. If it raises, nothing is left behind and its exception
        propagates unchanged, except when the disk is full: then :class:`CacheError` (chained).
        """
        key = self.key(kind, parts)
        what = description or kind
        t0 = time.perf_counter()
        entry, reason = self._load(kind, key)
        if entry is not None:
            self._record(kind, "hit", key, time.perf_counter() - t0)
            return entry

        kind_dir = self.root / kind
        with self._io("create a cache directory", kind_dir):
            kind_dir.mkdir(exist_ok=True)
        with self._lock(kind, key, what):
            # The entry may have been built (or repaired) while we waited for the lock.
            t0 = time.perf_counter()
            entry, reason = self._load(kind, key)
            if entry is not None:
                self._record(kind, "hit", key, time.perf_counter() - t0)
                return entry
            self._sweep(kind, only_key=key)
            final = self.entry_dir(kind, key)
            rebuild = reason is not None
            if rebuild:
                log.warning("intrada cache: rebuilding %s (%s/%s): %s", what, kind, key, reason)
                self._discard(kind, key, final)
            entry = self._build(kind, key, parts, build, what, rebuild, reason)
        if kind not in self._swept:
            # Killed builds of keys nobody asks for again would otherwise stay forever.
            self._swept.add(kind)
            self._sweep(kind)
        return entry

    def stats(self, kind: str | None = None) -> CacheStats:
        """This process's counters, for one kind or all."""
        with self._mutex:
            if kind is not None:
                return CacheStats() + self._stats.get(kind, CacheStats())
            total = CacheStats()
            for s in self._stats.values():
                total = total + s
            return total

    # -- internals ---------------------------------------------------------------------------
    @contextmanager
    def _io(self, action: str, path: Path | None = None) -> Iterator[None]:
        """Turn the cache's own OS errors into one-line CacheErrors naming the cache dir."""
        try:
            yield
        except OSError as exc:
            raise self._os_error(exc, action, path) from exc

    def _os_error(self, exc: OSError, action: str, path: Path | None) -> CacheError:
        target = ""
        if path is not None and path != self.root:
            target = f" {path.relative_to(self.root) if path.is_relative_to(self.root) else path}"
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return CacheError(self.root, f"cannot {action}{target} ({cache_fs.os_reason(exc)})",
                          _HINT_SPACE if full else _HINT_WRITABLE)

    def _load(self, kind: str, key: str) -> tuple[CacheEntry | None, str | None]:
        try:
            return load_entry(self.entry_dir(kind, key), kind, key)
        except OSError as exc:
            where = Path(exc.filename) if exc.filename else self.entry_dir(kind, key)
            raise self._os_error(exc, "read", where) from exc

    def _build(self, kind: str, key: str, parts: Mapping[str, Any], build: Build, what: str,
               rebuild: bool, reason: str | None) -> CacheEntry:
        kind_dir = self.root / kind
        with self._io("create a temporary build directory in", kind_dir):
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-{cache_fs.HOST}-{os.getpid()}-", dir=kind_dir))
        t0 = time.perf_counter()
        try:
            try:
                with self.around_build():
                    info = build(tmp)
            except BaseException as exc:
                # Judge the disk before the partial files are removed and free it again.
                full = isinstance(exc, Exception) and cache_fs.disk_full(exc, tmp)
                self._record(kind, "build_failed", key, time.perf_counter() - t0, best_effort=True)
                if full:
                    raise CacheError(self.root, f"disk full while building {what} in {kind}/ "
                                     f"({cache_fs.full_reason(exc)})", _HINT_SPACE) from exc
                raise
            manifest = make_manifest(kind, key, parts, what, tmp, info, time.perf_counter() - t0)
            with self._io("write the manifest in", tmp):
                cache_fs.write_file(tmp / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
                # mkdtemp makes 0700 directories; entries are shared by every account using the cache.
                os.chmod(tmp, 0o755)
                os.rename(tmp, self.entry_dir(kind, key))
        except BaseException:
            cache_fs.rmtree(tmp)
            raise
        seconds = time.perf_counter() - t0
        extra: dict[str, Any] = {"reason": reason} if reason else {}
        self._record(kind, "build", key, seconds, rebuild=rebuild, **extra)
        log.info("intrada cache: built %s (%s/%s) in %.1f s", what, kind, key, seconds)
        return CacheEntry(kind, key, self.entry_dir(kind, key), manifest, built=True)

    def _discard(self, kind: str, key: str, path: Path) -> None:
        """Remove an entry: first rename it to a temp name so no reader finds half of it."""
        aside = path.with_name(f"{_TMP_PREFIX}{key}-{cache_fs.HOST}-{os.getpid()}-discard-{time.monotonic_ns()}")
        with self._io("remove the broken entry", path):
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return
        cache_fs.rmtree(aside)

    def _sweep(self, kind: str, only_key: str | None = None) -> int:
        """Remove temp dirs whose key lock is free: their builder is gone (flock dies with it)."""
        kind_dir = self.root / kind
        prefix = _TMP_PREFIX + (only_key or "")
        try:
            names = [n for n in os.listdir(kind_dir) if n.startswith(prefix)]
        except FileNotFoundError:
            return 0
        keys = {n[len(_TMP_PREFIX):len(_TMP_PREFIX) + KEY_HEX_CHARS] for n in names}
        removed = 0
        for key in sorted(keys):
            # The caller already holds only_key's lock.
            ctx = held() if key == only_key else self._try_lock(kind, key)
            with ctx as locked:
                if not locked:
                    continue  # a live build owns it
                # Listed again under the lock: a build that finished meanwhile has renamed its dir.
                for n in os.listdir(kind_dir):
                    if n.startswith(_TMP_PREFIX + key):
                        cache_fs.rmtree(kind_dir / n)
                        removed += 1
        if removed:
            log.info("intrada cache: removed %d stale temp dir(s) in %s", removed, kind_dir)
            self._record(kind, "stale_removed", only_key or "", 0.0, count=removed)
        return removed

    def _lock_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f".{key}.lock"

    @contextmanager
    def _try_lock(self, kind: str, key: str) -> Iterator[bool]:
        try:
            with try_lock(self._lock_path(kind, key)) as locked:
                yield locked
        except OSError as exc:
            raise self._os_error(exc, "lock", self._lock_path(kind, key)) from exc

    @contextmanager
    def _lock(self, kind: str, key: str, what: str) -> Iterator[None]:
        path = self._lock_path(kind, key)
        lock = new_lock(path)

        def notice(elapsed: float) -> None:
            msg = f"waiting {elapsed:.0f} s for another process building {what} ({kind}/{key})"
            log.info("intrada cache: %s", msg)
            if self.on_wait is not None:
                self.on_wait(msg)

        try:
            waited = acquire(lock, self.wait_notice_s, self.wait_repeat_s, notice)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                raise CacheError(self.root, "the filesystem does not support file locks (flock)",
                                 "pass --cache-dir DIR on a local disk") from exc
            raise self._os_error(exc, "create the lock file", path) from exc
        if waited is not None:
            self._record(kind, "wait", key, waited)
        try:
            yield
        finally:
            lock.release()

    def _record(self, kind: str, event: str, key: str, seconds: float, *, best_effort: bool = False,
                **extra: Any) -> None:
        with self._mutex:
            self._stats.setdefault(kind, CacheStats()).count(
                event, seconds, rebuild=bool(extra.get("rebuild")), count=int(extra.get("count", 1)))
        line = canonical_json({"t": round(time.time(), 6), "event": event, "kind": kind, "key": key,
                               "seconds": round(seconds, 6), "pid": os.getpid(), "host": cache_fs.HOST,
                               "run": self.run_id, **extra}) + "\n"
        try:
            append_event(self.root, line)
        except OSError as exc:
            if best_effort:
                return  # already failing: do not replace the real error
            raise self._os_error(exc, "append to", self.root / EVENTS) from exc
