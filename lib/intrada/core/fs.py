"""The artifact cache's filesystem side: OS-error reasons, disk-full judgement, exclusive writes, cleanup.

:mod:`intrada.cache.store` words its own OS errors with :func:`os_reason` and blames a failed build on
the disk when :func:`disk_full` says so: ENOSPC or EDQUOT anywhere in the exception's chain, or
less than :data:`FULL_DISK_BYTES` free (many writers report a full disk without an errno).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("intrada.cache.store")  # the cache's own logger: one name for all its messages

#: Below this many free bytes a failed build is blamed on the full disk, because many writers
#: (numpy.tofile, torch.save) report ENOSPC without an errno.
FULL_DISK_BYTES = 1 << 20

#: This host's name as written into temp-dir names and events.
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def os_reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or -1)
    text = exc.strerror or str(exc)
    return f"{text}, {name}" if name else text


def free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 1 << 62  # unknown: do not blame the disk
    return st.f_bavail * st.f_frsize


def not_writable(folder: str | os.PathLike[str]) -> OSError | None:
    """Why no file can be created in the existing directory ``folder``, or None: EROFS for a read-only
    filesystem (which stops root too), EACCES for permissions."""
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(folder))
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def disk_full(exc: BaseException, path: Path) -> bool:
    """Whether ``exc`` (raised while writing under ``path``) comes from a full disk."""
    if any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in _chain(exc)):
        return True
    return free_bytes(path) < FULL_DISK_BYTES


def full_reason(exc: BaseException) -> str:
    """Why :func:`disk_full` said yes, for the error message."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return os_reason(e)
    return f"less than {FULL_DISK_BYTES >> 20} MiB free; build() raised {type(exc).__name__}: {exc}"


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file (fails if ``path`` exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def rmtree(path: Path) -> None:
    """Best effort: cleanup must never hide the error that caused it."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("intrada cache: could not remove %s (%s); it will be removed later", path, os_reason(exc))
