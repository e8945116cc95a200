"""Fingerprints for the artifact cache's keys: the code that made an artifact and the identity of
the files it was made from. (Running a runner over a split is :meth:`intrada.runners.base.Runner.run_split`.)"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable



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
