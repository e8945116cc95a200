"""Glue shared by the CLI and the gate's fixtures: run a runner over preprocessed bins and store
its outputs as dumps (the ais_bench layout), so every consumer reads runner outputs the same way
it reads device outputs."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from .checks import check_model_outputs
from .runners.base import Runner


def batched(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_to_dumps(runner: Runner, names: Sequence[str], bins_dir: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str], *, batch_size: int = 1, progress: bool = False,
                 desc: str | None = None) -> Path:
    """Infer ``<bins_dir>/<name>.bin`` for every name and write ``<out_dir>/<name>_{0,1}.bin``.

    The last batch is simply smaller (ONNX Runtime takes any N for a dynamic batch); ais_bench pads
    it instead and drops the padded outputs, which gives the same files.
    """
    from .dumps import write_dumps
    from .preprocess import read_bins

    bins_dir, out_dir = Path(bins_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with runner, tqdm(total=len(names), desc=desc or f"{runner.backend} inference", unit="img",
                      disable=not progress, leave=False) as bar:
        for chunk in batched(list(names), batch_size):
            batch = read_bins([bins_dir / f"{n}.bin" for n in chunk])
            aux, main = runner.infer(batch)
            _check_finite(runner, (aux, main), chunk)
            for i, name in enumerate(chunk):
                write_dumps(out_dir, name, aux[i], main[i])
            bar.update(len(chunk))
    return out_dir


def _check_finite(runner: Runner, outputs: tuple, names: Sequence[str]) -> None:
    where = getattr(runner, "onnx_path", None) or getattr(runner, "checkpoint", None) or runner.name
    check_model_outputs(where, outputs, ", ".join(names), backend=runner.backend)


def code_fingerprint(*modules: object) -> str:
    """sha256 over the source of the given modules: part of every cache key, so a change to the code
    that makes an artifact invalidates it."""
    h = hashlib.sha256()
    for mod in modules:
        path = getattr(mod, "__file__", None)
        if path is None:
            raise TypeError(f"{mod!r} has no source file")
        h.update(Path(path).name.encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def stat_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Cheap identity of many input files (name, size, mtime_ns), like make: dataset images are
    keyed this way so a warm run does not re-hash gigabytes; checkpoints and ONNX use content sha256."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
