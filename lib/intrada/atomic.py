"""Write-then-rename: one mechanism for every file the project writes, so a killed run or a failed
write never leaves a half-written file under its final name."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` when the block succeeds.

    The temporary name is hidden and ends in ``.tmp`` (never ``.bin`` or ``.png``), so globs of
    bins, dumps or Cityscapes images never see it; pid and token keep concurrent writers apart.
    Whatever the block leaves at the temporary path is removed if it fails.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(final: str | os.PathLike[str], text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
