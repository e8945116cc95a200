"""One artifact-cache entry on disk: its key (a hash of the canonical JSON of everything that made
it), its manifest (every file with size and sha256, plus what build() returned) and the check that
decides whether an entry directory can be handed out."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.hashing import file_sha256

__all__ = ["CACHE_FORMAT", "KEY_HEX_CHARS", "MANIFEST", "CacheEntry", "entry_key", "make_manifest",
           "load_entry", "canonical_json", "check_kind"]

#: Bumped when the layout or the manifest changes incompatibly; it is part of every key, so old
#: entries simply stop matching instead of being misread.
CACHE_FORMAT = 1
KEY_HEX_CHARS = 20          # 80 bits: collisions are not a practical concern for a few thousand entries
MANIFEST = "manifest.json"
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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
                    f"(hash files with intrada.core.hashing, pass versions and options as strings or numbers)")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise ValueError(f"cache kind {kind!r} must match {_KIND_RE.pattern} (it names a directory)")


def entry_key(kind: str, parts: Mapping[str, Any]) -> str:
    """Hex digest of everything that made the artifact; dict order does not matter."""
    check_kind(kind)
    if not isinstance(parts, Mapping):
        raise TypeError(f"cache parts for {kind!r} must be a mapping, got {type(parts).__name__}")
    text = canonical_json({"format": CACHE_FORMAT, "kind": kind, "parts": _canonical(parts, "")})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_HEX_CHARS]


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


def make_manifest(kind: str, key: str, parts: Mapping[str, Any], what: str, tmp: Path,
                  info: Mapping[str, Any] | None, build_seconds: float) -> dict[str, Any]:
    """The manifest of the files build() left in ``tmp``; refuses what an entry must not hold."""
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


def load_entry(d: Path, kind: str, key: str) -> tuple[CacheEntry | None, str | None]:
    """(entry, None) if valid; (None, None) if absent; (None, reason) if present but unusable.

    Files are checked by size, not by hash, so a warm run does not re-read gigabytes of artifacts:
    this catches what a full disk or a truncated copy leaves (a killed build never reaches its final
    name), not a same-size edit. OSErrors other than a missing entry propagate (``filename`` names
    the path).
    """
    try:
        raw = (d / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None, ("entry directory has no manifest.json" if d.is_dir() else None)
    except NotADirectoryError:
        return None, "entry path is not a directory"
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
        # A manifest must not point outside its entry, whatever wrote it.
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return None, f"manifest lists an unsafe path {name!r}"
        try:
            st = (d / name).stat()
        except FileNotFoundError:
            return None, f"{name} is missing"
        if not stat.S_ISREG(st.st_mode):
            return None, f"{name} is not a regular file"
        if st.st_size != meta["size"]:
            return None, f"{name} has {st.st_size} bytes, manifest says {meta['size']}"
    return CacheEntry(kind, key, d, manifest), None
