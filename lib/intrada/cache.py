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

import concurrent.futures
import errno
import hashlib
import inspect
import json
import logging
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import filelock

from .errors import CacheError

__all__ = [
    "ArtifactCache", "CacheEntry", "CacheStats", "Verify",
    "file_sha256", "cached_file_sha256", "hash_files", "read_events",
]

log = logging.getLogger("intrada.cache")

#: Bumped when the layout or the manifest changes incompatibly; it is part of every key, so old
#: entries simply stop matching instead of being misread.
CACHE_FORMAT = 1
KEY_HEX_CHARS = 20          # 80 bits: collisions are not a practical concern for a few thousand entries
MANIFEST = "manifest.json"
EVENTS = "events.jsonl"
#: Below this many free bytes a failed build is blamed on the full disk, because many writers
#: (numpy.tofile, torch.save) report ENOSPC without an errno.
FULL_DISK_BYTES = 1 << 20
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Listing and pruning touch only key-shaped directories, so other files kept under the root are safe.
_KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_HEX_CHARS}}}$")
_TMP_PREFIX = ".tmp-"
_HINT_WRITABLE = "pass --cache-dir DIR to use a writable directory"
_HINT_SPACE = "free space on that disk or pass --cache-dir DIR on another one"

Verify = Literal["quick", "full"]
Build = Callable[[Path], "Mapping[str, Any] | None"]


# --------------------------------------------------------------------------------------------
# hashing

def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed through one reused buffer (no per-chunk allocation)."""
    digest = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


_memo_lock = threading.Lock()
_memo: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int]:
    # inode and device catch a file replaced by rename with a preserved mtime (cp -p, rsync -t)
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def cached_file_sha256(path: str | os.PathLike[str]) -> str:
    """:func:`file_sha256` memoised in-process by (path, size, mtime_ns, inode).

    Warm runs hash a 180 MB checkpoint and hundreds of bins on every start; re-reading them
    would dominate the time spent on artifacts.
    """
    name = os.path.abspath(path)
    before = _fingerprint(os.stat(name))
    with _memo_lock:
        hit = _memo.get(name)
    if hit is not None and hit[0] == before:
        return hit[1]
    digest = file_sha256(name)
    # A file rewritten while we read it must not be remembered under either version.
    if _fingerprint(os.stat(name)) == before:
        with _memo_lock:
            _memo[name] = (before, digest)
    return digest


def hash_files(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One hex sha256 over the contents of ``paths`` in the given order (names are not hashed).

    Order matters because it pairs inputs with images; names do not, so moving a directory keeps
    its cache entries. Files not yet memoised are hashed on a few threads (hashlib releases the GIL).
    """
    names = [os.fspath(p) for p in paths]
    if len(names) > 1:
        workers = min(4, os.cpu_count() or 1, len(names))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            digests = list(pool.map(cached_file_sha256, names))
    else:
        digests = [cached_file_sha256(n) for n in names]
    combined = hashlib.sha256()
    for d in digests:
        combined.update(d.encode("ascii") + b"\n")
    return combined.hexdigest()


# --------------------------------------------------------------------------------------------
# keys

def _canonical(value: Any, where: str) -> Any:
    """Validate that ``value`` is plain JSON so its text (and the key) is unambiguous."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"cache parts {where}: {value!r} has no JSON form; pass it as a string")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                # json.dumps would turn 1 into "1" and silently merge two different parts
                raise TypeError(f"cache parts {where}: key {k!r} is not a string")
            out[k] = _canonical(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"cache parts {where}: {type(value).__name__} is not a JSON value "
                    f"(hash files with hash_files(), pass versions and options as strings or numbers)")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValueError(f"cache kind {kind!r} must match {_KIND_RE.pattern} (it names a directory)")


# --------------------------------------------------------------------------------------------
# results

@dataclass
class CacheStats:
    """What the cache did. ``builds`` counts every successful build(); ``rebuilds`` is the subset
    that replaced a corrupt entry. A warm re-run has ``builds == 0``."""

    hits: int = 0
    builds: int = 0
    rebuilds: int = 0
    build_failures: int = 0
    lock_waits: int = 0
    stale_removed: int = 0
    hit_seconds: float = 0.0      # manifest read + verification on hits
    build_seconds: float = 0.0    # inside build() plus hashing and manifest
    lock_wait_seconds: float = 0.0

    def __add__(self, other: CacheStats) -> CacheStats:
        return CacheStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.hits} hits, {self.builds} built ({self.rebuilds} after corruption, "
                f"{self.build_failures} failed), {self.lock_waits} lock waits, "
                f"{self.stale_removed} stale temp dirs removed; {self.hit_seconds:.2f} s verifying, "
                f"{self.build_seconds:.2f} s building, {self.lock_wait_seconds:.2f} s waiting")

    def count(self, event: str, seconds: float, *, rebuild: bool = False, count: int = 1) -> None:
        """Add one event (the same vocabulary as events.jsonl); unknown events are ignored."""
        if event == "hit":
            self.hits += 1
            self.hit_seconds += seconds
        elif event == "build":
            self.builds += 1
            self.rebuilds += rebuild
            self.build_seconds += seconds
        elif event == "build_failed":
            self.build_failures += 1
            self.build_seconds += seconds
        elif event == "wait":
            self.lock_waits += 1
            self.lock_wait_seconds += seconds
        elif event == "stale_removed":
            self.stale_removed += count

    @classmethod
    def from_events(cls, events: Iterable[Mapping[str, Any]]) -> CacheStats:
        """Aggregate the ``events.jsonl`` lines of many processes (e.g. all xdist workers)."""
        s = cls()
        for e in events:
            s.count(str(e.get("event")), float(e.get("seconds", 0.0)), rebuild=bool(e.get("rebuild")),
                    count=int(e.get("count", 1)))
        return s


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    key: str
    path: Path
    manifest: Mapping[str, Any] = field(repr=False)
    #: True when this call ran build(); False on a hit.
    built: bool = False

    @property
    def files(self) -> dict[str, int]:
        """Relative file name -> size in bytes."""
        return {name: meta["size"] for name, meta in self.manifest["files"].items()}

    @property
    def info(self) -> Mapping[str, Any]:
        """What build() returned."""
        return self.manifest.get("info") or {}

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise KeyError(f"{self.kind}/{self.key} has no file {name!r}; it has {sorted(self.manifest['files'])}")
        return self.path / name


def read_events(root: str | os.PathLike[str], *, run_id: str | None = None,
                since: float | None = None) -> list[dict[str, Any]]:
    """Events of all processes, optionally only one run's (``run_id``) or those after ``since``."""
    path = Path(root) / EVENTS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line cut by a full disk; the others are still meaningful
        if run_id is not None and e.get("run") != run_id:
            continue
        if since is not None and e.get("t", 0) < since:
            continue
        out.append(e)
    return out


# --------------------------------------------------------------------------------------------
# OS-error handling

def _os_reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or -1)
    text = exc.strerror or str(exc)
    return f"{text}, {name}" if name else text


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62  # unknown: do not blame the disk
    return st.f_bavail * st.f_frsize


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    """Best effort: cleanup must never hide the error that caused it."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("intrada cache: could not remove %s (%s); it will be removed later", path, _os_reason(exc))


def _lock_kwargs() -> dict[str, Any]:
    # filelock >= 4 silently falls back to marker files where flock is missing; those survive
    # kill -9 and would block the next run, so we prefer a clear error (see _lock()).
    params = inspect.signature(filelock.FileLock.__init__).parameters
    return {"fallback_to_soft": False} if "fallback_to_soft" in params else {}


_LOCK_KWARGS = _lock_kwargs()
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


# --------------------------------------------------------------------------------------------
# the cache

class ArtifactCache:
    """See the module docstring.

    ``on_wait(message)`` is called (and the message logged at INFO) when a lock is still held by
    another process after ``wait_notice_s`` seconds, then every ``wait_repeat_s``. ``lock_timeout_s``
    (None: wait as long as the builder lives) turns an endless wait into a :class:`CacheError`.
    ``run_id`` is written into every event so one run's events can be told apart (xdist: the
    controller and workers share ``testrun_uid``).
    """

    def __init__(self, root: str | os.PathLike[str], *, run_id: str | None = None,
                 on_wait: Callable[[str], None] | None = None, wait_notice_s: float = 5.0,
                 wait_repeat_s: float = 30.0, lock_timeout_s: float | None = None) -> None:
        self.root = Path(root).absolute()
        self.run_id = run_id
        self.on_wait = on_wait
        self.wait_notice_s = wait_notice_s
        self.wait_repeat_s = wait_repeat_s
        self.lock_timeout_s = lock_timeout_s
        self._stats: dict[str, CacheStats] = {}
        self._swept: set[str] = set()
        self._mutex = threading.Lock()
        with self._io("create the cache directory"):
            self.root.mkdir(parents=True, exist_ok=True)

    # -- keys and paths ----------------------------------------------------------------------
    def key(self, kind: str, parts: Mapping[str, Any]) -> str:
        """Hex digest of everything that made the artifact; dict order does not matter."""
        _check_kind(kind)
        if not isinstance(parts, Mapping):
            raise TypeError(f"cache parts for {kind!r} must be a mapping, got {type(parts).__name__}")
        text = _canonical_json({"format": CACHE_FORMAT, "kind": kind, "parts": _canonical(parts, "")})
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_HEX_CHARS]

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    # -- public operations -------------------------------------------------------------------
    def get(self, kind: str, parts: Mapping[str, Any], *, verify: Verify = "quick") -> CacheEntry | None:
        """The valid entry for ``parts`` or None; never builds, never deletes, takes no lock."""
        key = self.key(kind, parts)
        t0 = time.perf_counter()
        entry, reason = self._load(kind, key, verify)
        if entry is None:
            if reason is not None:
                log.warning("intrada cache: ignoring %s/%s: %s", kind, key, reason)
            return None
        self._record(kind, "hit", key, time.perf_counter() - t0)
        return entry

    def get_or_build(self, kind: str, parts: Mapping[str, Any], build: Build, *,
                     description: str = "", verify: Verify = "quick") -> CacheEntry:
        """Return the entry for ``parts``, running ``build(tmp_dir)`` at most once across processes.

        ``build`` writes the artifact's files into ``tmp_dir`` and may return a JSON-able dict,
        stored as the manifest's ``info``. If it raises, nothing is left behind and its exception
        propagates unchanged, except when the disk is full: then :class:`CacheError` (chained).
        """
        key = self.key(kind, parts)
        what = description or kind
        t0 = time.perf_counter()
        entry, reason = self._load(kind, key, verify)
        if entry is not None:
            self._record(kind, "hit", key, time.perf_counter() - t0)
            return entry

        kind_dir = self.root / kind
        with self._io("create a cache directory", kind_dir):
            kind_dir.mkdir(exist_ok=True)
        with self._lock(kind, key, what):
            # The entry may have been built (or repaired) while we waited for the lock.
            t0 = time.perf_counter()
            entry, reason = self._load(kind, key, verify)
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

    def entries(self, kind: str | None = None) -> list[CacheEntry]:
        """Entries whose manifest parses (quick verification), sorted by kind and key."""
        out = []
        for kdir in self._kind_dirs(kind):
            for d in sorted(kdir.iterdir()):
                if not _KEY_RE.match(d.name) or not d.is_dir():
                    continue
                entry, _ = self._load(kdir.name, d.name, "quick")
                if entry is not None:
                    out.append(entry)
        return out

    def prune(self, *, kind: str | None = None, older_than_s: float) -> list[Path]:
        """Remove entries (valid or not) created more than ``older_than_s`` ago, and stale temp dirs.

        Entries being built are skipped. A reader holding a path into a pruned entry loses it, so
        do not prune a cache that a run is using.
        """
        removed: list[Path] = []
        now = time.time()
        for kdir in self._kind_dirs(kind):
            self._sweep(kdir.name)
            for d in sorted(kdir.iterdir()):
                if not _KEY_RE.match(d.name) or not d.is_dir():
                    continue
                entry, _ = self._load(kdir.name, d.name, "quick")
                created = entry.manifest.get("created_unix", 0.0) if entry else 0.0
                if now - float(created) < older_than_s:
                    continue
                with self._try_lock(kdir.name, d.name) as locked:
                    if locked:
                        self._discard(kdir.name, d.name, d)
                        removed.append(d)
        return removed

    def clean_stale(self, kind: str | None = None) -> int:
        """Remove temp dirs left by killed builds; returns how many. Live builds are untouched."""
        return sum(self._sweep(kdir.name) for kdir in self._kind_dirs(kind))

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
        return CacheError(self.root, f"cannot {action}{target} ({_os_reason(exc)})",
                          _HINT_SPACE if full else _HINT_WRITABLE)

    def _kind_dirs(self, kind: str | None) -> list[Path]:
        if kind is not None:
            _check_kind(kind)
            d = self.root / kind
            return [d] if d.is_dir() else []
        return sorted(d for d in self.root.iterdir() if d.is_dir() and _KIND_RE.match(d.name))

    def _load(self, kind: str, key: str, verify: Verify) -> tuple[CacheEntry | None, str | None]:
        """(entry, None) if valid; (None, None) if absent; (None, reason) if present but unusable."""
        d = self.entry_dir(kind, key)
        try:
            raw = (d / MANIFEST).read_bytes()
        except FileNotFoundError:
            return None, ("entry directory has no manifest.json" if d.is_dir() else None)
        except NotADirectoryError:
            return None, "entry path is not a directory"
        except OSError as exc:
            raise self._os_error(exc, "read", d / MANIFEST) from exc
        try:
            manifest = json.loads(raw)
            files = manifest["files"]
            ok = (manifest["kind"] == kind and manifest["key"] == key and isinstance(files, dict)
                  and all(isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
                          for m in files.values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            return None, "manifest.json is not a valid manifest"
        for name, meta in files.items():
            p = d / name
            # A manifest must not point outside its entry, whatever wrote it.
            if Path(name).is_absolute() or ".." in Path(name).parts:
                return None, f"manifest lists an unsafe path {name!r}"
            try:
                st = p.stat()
            except FileNotFoundError:
                return None, f"{name} is missing"
            except OSError as exc:
                raise self._os_error(exc, "read", p) from exc
            if not stat.S_ISREG(st.st_mode):
                return None, f"{name} is not a regular file"
            if st.st_size != meta["size"]:
                return None, f"{name} has {st.st_size} bytes, manifest says {meta['size']}"
            if verify == "full":
                try:
                    digest = file_sha256(p)
                except OSError as exc:
                    raise self._os_error(exc, "read", p) from exc
                if digest != meta["sha256"]:
                    return None, f"{name} sha256 {digest[:12]}.. differs from the manifest's {meta['sha256'][:12]}.."
        return CacheEntry(kind, key, d, manifest), None

    def _build(self, kind: str, key: str, parts: Mapping[str, Any], build: Build, what: str,
               rebuild: bool, reason: str | None) -> CacheEntry:
        kind_dir = self.root / kind
        with self._io("create a temporary build directory in", kind_dir):
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-{_HOST}-{os.getpid()}-", dir=kind_dir))
        t0 = time.perf_counter()
        try:
            try:
                info = build(tmp)
            except BaseException as exc:
                # Judge the disk before the partial files are removed and free it again.
                full = isinstance(exc, Exception) and self._disk_full(exc, tmp)
                self._record(kind, "build_failed", key, time.perf_counter() - t0, best_effort=True)
                if full:
                    raise CacheError(self.root, f"disk full while building {what} in {kind}/ "
                                     f"({self._full_reason(exc)})", _HINT_SPACE) from exc
                raise
            manifest = self._manifest(kind, key, parts, what, tmp, info, time.perf_counter() - t0)
            with self._io("write the manifest in", tmp):
                _write_file(tmp / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
                # mkdtemp makes 0700 directories; entries are shared by every account using the cache.
                os.chmod(tmp, 0o755)
                os.rename(tmp, self.entry_dir(kind, key))
        except BaseException:
            _rmtree(tmp)
            raise
        seconds = time.perf_counter() - t0
        extra: dict[str, Any] = {"reason": reason} if reason else {}
        self._record(kind, "build", key, seconds, rebuild=rebuild, **extra)
        log.info("intrada cache: built %s (%s/%s) in %.1f s", what, kind, key, seconds)
        return CacheEntry(kind, key, self.entry_dir(kind, key), manifest, built=True)

    def _manifest(self, kind: str, key: str, parts: Mapping[str, Any], what: str, tmp: Path,
                  info: Mapping[str, Any] | None, build_seconds: float) -> dict[str, Any]:
        if info is not None and not isinstance(info, Mapping):
            raise TypeError(f"build() for {kind!r} must return a dict or None, got {type(info).__name__}")
        info_json = _canonical(dict(info or {}), "(build info)")
        files: dict[str, dict[str, Any]] = {}
        for dirpath, dirnames, filenames in os.walk(tmp):
            dirnames.sort()
            for fname in sorted(filenames):
                p = Path(dirpath) / fname
                rel = p.relative_to(tmp).as_posix()
                if rel == MANIFEST:
                    raise ValueError(f"build() for {kind!r} wrote {MANIFEST}, a name the cache reserves")
                st = p.lstat()
                if not stat.S_ISREG(st.st_mode):
                    # A link could point at something that changes; the entry must own its bytes.
                    raise ValueError(f"build() for {kind!r} left {rel}, which is not a regular file")
                files[rel] = {"size": st.st_size, "sha256": file_sha256(p)}
        now = time.time()
        return {
            "format": CACHE_FORMAT, "kind": kind, "key": key, "description": what,
            "parts": _canonical(parts, ""), "files": files, "info": info_json,
            "build_seconds": round(build_seconds, 3),
            "created": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "created_unix": now, "host": socket.gethostname(), "pid": os.getpid(),
        }

    def _disk_full(self, exc: BaseException, tmp: Path) -> bool:
        if any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in _chain(exc)):
            return True
        return _free_bytes(tmp) < FULL_DISK_BYTES

    @staticmethod
    def _full_reason(exc: BaseException) -> str:
        for e in _chain(exc):
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                return _os_reason(e)
        return f"less than {FULL_DISK_BYTES >> 20} MiB free; build() raised {type(exc).__name__}: {exc}"

    def _discard(self, kind: str, key: str, path: Path) -> None:
        """Remove an entry: first rename it to a temp name so no reader finds half of it."""
        aside = path.with_name(f"{_TMP_PREFIX}{key}-{_HOST}-{os.getpid()}-discard-{time.monotonic_ns()}")
        with self._io("remove the broken entry", path):
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return
        _rmtree(aside)

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
            # The caller already holds only_key's lock (flock is per open file, so re-locking would fail).
            ctx = _null_lock() if key == only_key else self._try_lock(kind, key)
            with ctx as locked:
                if not locked:
                    continue  # a live build owns it
                # Listed again under the lock: a build that finished meanwhile has renamed its dir.
                for n in os.listdir(kind_dir):
                    if n.startswith(_TMP_PREFIX + key):
                        _rmtree(kind_dir / n)
                        removed += 1
        if removed:
            log.info("intrada cache: removed %d stale temp dir(s) in %s", removed, kind_dir)
            self._record(kind, "stale_removed", only_key or "", 0.0, count=removed)
        return removed

    def _lock_path(self, kind: str, key: str) -> Path:
        return self.root / kind / f".{key}.lock"

    def _new_lock(self, kind: str, key: str) -> filelock.FileLock:
        return filelock.FileLock(self._lock_path(kind, key), **_LOCK_KWARGS)

    @contextmanager
    def _try_lock(self, kind: str, key: str) -> Iterator[bool]:
        lock = self._new_lock(kind, key)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            yield False
            return
        except OSError as exc:
            raise self._os_error(exc, "lock", self._lock_path(kind, key)) from exc
        try:
            yield True
        finally:
            lock.release()

    @contextmanager
    def _lock(self, kind: str, key: str, what: str) -> Iterator[None]:
        lock = self._new_lock(kind, key)
        path = self._lock_path(kind, key)
        t0 = time.monotonic()
        notice_at = self.wait_notice_s
        waited = False
        while True:
            elapsed = time.monotonic() - t0
            step = 0.0 if not waited else max(0.01, notice_at - elapsed)
            if self.lock_timeout_s is not None and waited:
                step = min(step, max(0.0, self.lock_timeout_s - elapsed))
            try:
                lock.acquire(timeout=step)
                break
            except filelock.Timeout:
                waited = True
                elapsed = time.monotonic() - t0
                if self.lock_timeout_s is not None and elapsed >= self.lock_timeout_s:
                    raise CacheError(path, f"waited {elapsed:.0f} s for another process building {what}",
                                     "if no other run uses this cache, pass --cache-dir DIR to use a "
                                     "separate one") from None
                if elapsed >= notice_at:
                    msg = f"waiting {elapsed:.0f} s for another process building {what} ({kind}/{key})"
                    log.info("intrada cache: %s", msg)
                    if self.on_wait is not None:
                        self.on_wait(msg)
                    notice_at += self.wait_repeat_s
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    raise CacheError(self.root, "the filesystem does not support file locks (flock)",
                                     "pass --cache-dir DIR on a local disk") from exc
                raise self._os_error(exc, "create the lock file", path) from exc
        if waited:
            self._record(kind, "wait", key, time.monotonic() - t0)
        try:
            yield
        finally:
            lock.release()

    def _record(self, kind: str, event: str, key: str, seconds: float, *, best_effort: bool = False,
                **extra: Any) -> None:
        with self._mutex:
            self._stats.setdefault(kind, CacheStats()).count(
                event, seconds, rebuild=bool(extra.get("rebuild")), count=int(extra.get("count", 1)))
        line = _canonical_json({"t": round(time.time(), 6), "event": event, "kind": kind, "key": key,
                                "seconds": round(seconds, 6), "pid": os.getpid(), "host": _HOST,
                                "run": self.run_id, **extra}) + "\n"
        data = line.encode("utf-8")
        try:
            # One write() on an O_APPEND descriptor: lines of concurrent processes never interleave.
            fd = os.open(self.root / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            if best_effort:
                return  # already failing: do not replace the real error
            raise self._os_error(exc, "append to", self.root / EVENTS) from exc


@contextmanager
def _null_lock() -> Iterator[bool]:
    yield True
