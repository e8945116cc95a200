"""What the robustness tests share: a malicious pickle payload, a temp folder other users can
traverse, and a way to run a check as an unprivileged user (root ignores permission bits)."""
from __future__ import annotations

import builtins
import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class Payload:
    """Unpickling calls ``fn(*args)``: what a malicious .pth does."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


def payload(kind: str, marker: Path) -> Payload:
    """A payload that creates ``marker`` when unpickled, through ``os.system``, ``builtins.open`` or
    ``builtins.exec``."""
    if kind == "os.system":
        return Payload(os.system, (f"touch {shlex.quote(str(marker))}",))
    if kind == "builtins.open":
        return Payload(builtins.open, (str(marker), "w"))
    if kind == "builtins.exec":
        return Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",))
    raise ValueError(kind)


@contextlib.contextmanager
def traversable_tmp(prefix: str) -> Iterator[Path]:
    """A temp folder other users can traverse (pytest's tmp_path sits under a 0700 folder); removed
    afterwards, whatever permissions the test left on the folders inside it."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        for d in [base, *base.rglob("*")]:
            if d.is_dir() and not d.is_symlink():
                os.chmod(d, 0o755)
        shutil.rmtree(base)


def as_nobody(fn: Callable[[], str]) -> str:
    """``fn()`` run in a forked child as ``nobody`` when this process is root (root ignores permission
    bits, nobody does not), else here. The child's answer, or ``child failed: ...``."""
    if os.geteuid() != 0:
        return fn()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, fn().encode())
        except BaseException as exc:
            os.write(w, f"child failed: {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out
