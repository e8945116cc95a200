"""An om on one Ascend device: what the runners of :mod:`intrada.ascend.runners` share.

:class:`AscendRunner` is the base (an om, a static batch size, a device id); :data:`DeviceRun` is
what a device tool's run of a split returns; :func:`stage_inputs` gives the tools the directory of
bins they take (they run whole directories, never a list of files); :func:`tool_timeout` bounds a
tool's subprocess by the number of images.
"""
from __future__ import annotations

import os
import shutil
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


def stage_inputs(bins_dir: Path, names: Sequence[str], dest: Path) -> Path:
    """A directory holding exactly ``<name>.bin`` for ``names``: device tools take a whole
    directory (ais_bench sorts every *.bin in it, benchmark lists what its info file lists).
    ``bins_dir`` itself when it already is that, else ``dest`` filled with symlinks."""
    wanted = {f"{n}.bin" for n in names}
    missing = [n for n in names if not (bins_dir / f"{n}.bin").is_file()]
    if missing:
        raise BinsError(bins_dir, f"{len(missing)} of {len(names)} bins missing (e.g. {missing[0]}.bin)",
                        "preprocess the split first (`intrada preprocess`)")
    present = {p.name for p in bins_dir.iterdir() if p.suffix == ".bin"}
    if present == wanted:
        return bins_dir
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for n in names:
        os.symlink((bins_dir / f"{n}.bin").absolute(), dest / f"{n}.bin")
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

