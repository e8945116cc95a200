"""What the artifact cache did: per-process counters and ``<root>/events.jsonl``, one JSON line per
hit / build / wait, appended by every process (pytest-xdist workers included)."""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["EVENTS", "CacheStats", "read_events", "append_event"]

EVENTS = "events.jsonl"


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


def append_event(root: Path, line: str) -> None:
    """Append one line to ``root/events.jsonl``; OSError (ENOSPC for a short write) on failure."""
    data = line.encode("utf-8")
    # One write() on an O_APPEND descriptor: lines of concurrent processes never interleave.
    fd = os.open(root / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
