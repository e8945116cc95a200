"""NaN/Inf detection, said once: every reader and runner check finds non-finite values here."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import OnnxModelError

__all__ = ["NonFinite", "find_nonfinite", "count_nonfinite", "check_model_outputs"]


@dataclass(frozen=True)
class NonFinite:
    """The NaN/Inf values of an array: how many, how many of them are NaN, where the first one is."""

    count: int
    nan: int
    first: tuple[int, ...]  # index of the first non-finite value, C order

    @property
    def inf(self) -> int:
        return self.count - self.nan


def find_nonfinite(array: np.ndarray) -> NonFinite | None:
    """None when every value is finite (the common case: one pass, nothing else computed)."""
    finite = np.isfinite(array)
    if finite.all():
        return None
    bad = ~finite
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    return NonFinite(int(np.count_nonzero(bad)), int(np.count_nonzero(np.isnan(array))), first)


def count_nonfinite(array: np.ndarray) -> int:
    found = find_nonfinite(array)
    return 0 if found is None else found.count


def check_model_outputs(where: str | os.PathLike[str], outputs: Sequence[np.ndarray], inputs: str, *,
                        backend: str = "") -> None:
    """A model that computes NaN/Inf is the model's fault: an OnnxModelError naming the model
    (``where``), the output index and the ``inputs`` it ran on, raised before anything is stored
    (the dumps reader would otherwise blame a cached dump file)."""
    for index, out in enumerate(outputs):
        bad = count_nonfinite(out)
        if bad:
            who = f"{backend} output" if backend else "output"
            raise OnnxModelError(where, f"{who} {index} holds {bad} NaN/Inf values on {inputs}",
                                 "the model is numerically broken; re-export it from a healthy checkpoint")
