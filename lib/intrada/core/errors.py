"""User-facing errors.

Every error a user can cause is an :class:`IntradaError`: one line that names the file (or option),
says what is wrong (expected vs got) and what to do next. The CLI prints it without a traceback and
exits with code 2; the pytest plugin turns it into a usage error or a failing test's message.
"""
from __future__ import annotations

import errno
import os


class IntradaError(Exception):
    """``<where>: <problem>. Hint: <hint>`` on one line."""

    def __init__(self, where: str | os.PathLike[str], problem: str, hint: str | None = None) -> None:
        self.where = os.fspath(where)
        self.problem = problem
        self.hint = hint
        super().__init__(str(self))

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        # Worker processes send errors back pickled; the default reduce passes only the message.
        return (type(self), (self.where, self.problem, self.hint))

    def __str__(self) -> str:
        text = f"{self.where}: {self.problem}"
        if self.hint:
            text += f". Hint: {self.hint}"
        return " ".join(text.split("\n"))


class CheckpointError(IntradaError):
    """The .pth cannot be read or does not match the architecture."""


class OnnxModelError(IntradaError):
    """The ONNX file is not a valid IntraDA export."""


class DatasetError(IntradaError):
    """The Cityscapes tree is missing, incomplete or malformed."""


class BinsError(IntradaError):
    """Preprocessed input .bin files are malformed."""


class DumpsError(IntradaError):
    """Recorded device outputs are malformed, incomplete or ambiguous."""


class ThresholdsError(IntradaError):
    """The thresholds file is malformed."""


class CacheError(IntradaError):
    """The artifact cache cannot be used (read-only, full, corrupted)."""


class ToolError(IntradaError):
    """An external tool (atc, ais_bench, benchmark, npu-smi) failed or is unusable."""


def os_error_line(exc: OSError) -> str:
    """``<path>: <what>. Hint: <what to do>`` for an OSError that reached the CLI or the report writer."""
    where = exc.filename or "the output"
    name = errno.errorcode.get(exc.errno or -1, "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{where}: disk full ({exc.strerror}). Hint: free space on that disk or write the output to another one"
    return (f"{where}: {exc.strerror}{f' ({name})' if name else ''}. Hint: check that the path exists and that you "
            "may read it (an input) or write its folder (an output)")
