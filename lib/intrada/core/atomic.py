"""Write-then-rename: one mechanism for every file the project writes, so a killed run or a failed
write never leaves a half-written file under its final name."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator


def new_token() -> str:
    """pid and a random part: keeps concurrent writers' temporary names apart."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def temp_path(final: str | os.PathLike[str], token: str) -> Path:
    """The temporary name of ``final`` for the writer ``token``: hidden and ending in ``.tmp``
    (never ``.bin`` or ``.png``), so globs of bins, dumps or Cityscapes images never see it, and
    ``.*.<token>.tmp`` finds exactly one writer's leftovers."""
    final = Path(final)
    return final.with_name(f".{final.name}.{token}.tmp")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, token: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` when the block succeeds.

    Whatever the block leaves at the temporary path is removed if it fails. A writer that may be
    killed (no cleanup runs) passes its own ``token`` to find its leftovers later.
    """
    tmp = temp_path(final, token or new_token())
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: yield a new empty temporary directory beside
    ``final`` and rename it onto ``final`` (which may be missing or an empty directory)."""
    tmp = temp_path(final, new_token())
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, final)  # rename(2) also replaces an empty directory
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(final: str | os.PathLike[str], text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
