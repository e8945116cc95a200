"""Per-key locks of the artifact cache: flock through filelock, so the kernel drops the lock of a
process that dies (kill -9 included) and a waiter takes over."""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

__all__ = ["new_lock", "try_lock", "acquire"]


def _lock_kwargs() -> dict[str, Any]:
    # filelock >= 4 silently falls back to marker files where flock is missing; those survive
    # kill -9 and would block the next run, so we prefer a clear error (ArtifactCache._lock).
    params = inspect.signature(filelock.FileLock.__init__).parameters
    return {"fallback_to_soft": False} if "fallback_to_soft" in params else {}


_LOCK_KWARGS = _lock_kwargs()


def new_lock(path: Path) -> filelock.FileLock:
    return filelock.FileLock(path, **_LOCK_KWARGS)


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """True while this process holds the lock, False if another one holds it; OSError propagates."""
    lock = new_lock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextmanager
def held() -> Iterator[bool]:
    """Stands in for :func:`try_lock` of a lock the caller already holds (flock is per open file,
    so locking it again would fail)."""
    yield True


def acquire(lock: filelock.FileLock, notice_s: float, repeat_s: float,
            notice: Callable[[float], None]) -> float | None:
    """Block until ``lock`` is held, calling ``notice(seconds_waited)`` after ``notice_s`` and then
    every ``repeat_s``. Returns the seconds waited, or None when the lock was free. OSError propagates."""
    t0 = time.monotonic()
    notice_at = notice_s
    waited = False
    while True:
        step = 0.0 if not waited else max(0.01, notice_at - (time.monotonic() - t0))
        try:
            lock.acquire(timeout=step)
            return time.monotonic() - t0 if waited else None
        except filelock.Timeout:
            waited = True
            elapsed = time.monotonic() - t0
            if elapsed >= notice_at:
                notice(elapsed)
                notice_at += repeat_s
