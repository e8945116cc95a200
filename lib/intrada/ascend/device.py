"""An om on one Ascend device: what the runners of :mod:`intrada.ascend.runners` share.

:class:`AscendRunner` is the base (an om, a static batch size, a device id); :data:`DeviceRun` is
what a device tool's run of a split returns; :func:`stage_inputs` gives the tools the directory of
bins they take (whole directories, never a list of files; real files, the strictest frontend's
way); :func:`tool_timeout` bounds a tool's subprocess by the number of images.
"""
from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BinsError, ToolError
from ..runners.base import Runner, RunnerError, RunRecord
from .provenance import run_is_fake


def tool_timeout(images: int) -> float:
    # a device does ~50 images/s; the generous margin is for the first model load and slow disks
    return 600.0 + 10.0 * images


#: A device tool's run of a split is a :class:`~intrada.runners.base.RunRecord` whose timing is the
#: tool's own (never a wall clock around a subprocess).
DeviceRun = RunRecord


#: mode of a staged copy and of the staging folder: no group/other write, which msit's CLI refuses
#: (infer/path_security_check.py:187-194); the folder matches the 0o750 msit gives its own output
#: folders (infer/benchmark_process.py:56)
STAGED_FILE_MODE = 0o640
STAGED_DIR_MODE = 0o750


def _linkable(path: Path) -> bool:
    """A hard link shares its inode's mode and owner: link only a file msit would accept as it is."""
    from .pathrules import file_problem

    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and file_problem(str(path)) is None


def stage_inputs(bins_dir: Path, names: Sequence[str], dest: Path) -> Path:
    """``dest``, a fresh folder holding exactly ``<name>.bin`` for ``names``: device tools take a
    whole directory (ais_bench reads every *.bin in it, and msit's checks every file in it;
    benchmark lists what its info file lists).

    Every file is a real file, the strictest frontend's way (msit refuses symlinks and group- or
    other-writable files, infer/utils.py:77-94): a hard link where the filesystem allows and the
    source already passes those checks (a link shares the source's mode and owner, and a shared
    cache's files are not ours to chmod), else a copy written 0o640. The folder is 0o750."""
    missing = [n for n in names if not (bins_dir / f"{n}.bin").is_file()]
    if missing:
        raise BinsError(bins_dir, f"{len(missing)} of {len(names)} bins missing (e.g. {missing[0]}.bin)",
                        "preprocess the split first (`intrada preprocess`)")
    try:
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        dest.mkdir(parents=True)
        os.chmod(dest, STAGED_DIR_MODE)
        for n in names:
            src, dst = bins_dir / f"{n}.bin", dest / f"{n}.bin"
            if _linkable(src):
                try:
                    os.link(src, dst)
                    continue
                except OSError:  # another filesystem (EXDEV), no hard links (EPERM), link limit...
                    pass
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STAGED_FILE_MODE)
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)  # 0o640 less the umask: never more than 0o640
    except OSError as exc:
        raise ToolError(exc.filename or dest, f"cannot stage the inputs here ({exc.strerror})",
                        "free space on that disk, or pass --basetemp DIR on a writable one") from None
    return dest


class AscendRunner(Runner):
    """An om on one device with a static batch size (one om per batch size, as the seed builds)."""

    backend = "ascend"
    kind = "abstract"

    def __init__(self, om: str | os.PathLike[str], *, batch_size: int, device_id: int = 0) -> None:
        super().__init__()
        self.om = Path(om).absolute()
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device_id = device_id

    @property
    def name(self) -> str:
        return f"{self.kind}-runner ({self.om.name})"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "tool": self.kind, "om": str(self.om), "batch_size": self.batch_size,
                "device_id": self.device_id, "fake": run_is_fake(self.kind)}

    def _check_om(self) -> None:
        if not self.om.is_file():
            raise ToolError(self.om, "om file not found", "pass --om PATH.om or let the gate build it with atc")

    # Device tools run whole directories of bins (run_split, overridden by each); only the Python
    # API also has a per-batch infer.
    def _activate(self) -> None:
        self._check_om()

    def _deactivate(self) -> None:
        pass

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RunnerError(self.name, f"{self.kind} runs whole directories of bins, not single batches",
                          "use run_split(), or the ais_bench-api runner for per-batch inference")

