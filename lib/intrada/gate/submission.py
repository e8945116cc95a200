"""The embedded demo as a submission directory: its data and checkpoint (:mod:`intrada.demo`) with
the thresholds file that judges it (the shipped file with :data:`intrada.demo.DEMO_THRESHOLD_OVERRIDES`).

The thresholds are the gate's vocabulary, so the submission is assembled here, above the demo's
generators: :mod:`intrada.demo` stays a leaf that knows nothing of the gate.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.atomic import atomic_dir
from ..core.errors import IntradaError
from ..demo import DEMO_IMAGES, DEMO_SEED, DEMO_THRESHOLD_OVERRIDES, make_cityscapes, make_demo_checkpoint
from ..model.network import DEEPLABV2, Network
from .thresholds import DEFAULT_PATH, Thresholds, parse, with_overrides


def demo_thresholds_text(header: str = "") -> str:
    """The demo's thresholds.toml: the shipped file with the demo's overrides, each with its source."""
    return with_overrides(DEFAULT_PATH, DEMO_THRESHOLD_OVERRIDES, header)


DEMO_THRESHOLDS_ORIGIN = "the demo submission's own thresholds (the shipped file with intrada.demo's overrides)"


def demo_thresholds() -> Thresholds:
    """The demo submission's thresholds (what its thresholds.toml says), without writing it."""
    import tomllib

    return parse(DEFAULT_PATH, tomllib.loads(demo_thresholds_text()), origin=DEMO_THRESHOLDS_ORIGIN)


def write_demo(out_dir: str | os.PathLike[str], *, n_images: int | None = None, seed: int = DEMO_SEED,
               network: Network = DEEPLABV2) -> Path:
    """Write the demo submission: ``checkpoint.pth`` (for ``network``), ``cityscapes/`` and ``thresholds.toml``.

    ``out_dir`` must not exist or be empty. Everything is written to a temporary sibling first and
    renamed into place, so an interrupted run never leaves a half-written submission behind.
    """
    from ..model.checkpoint import save_state_dict

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IntradaError(out, "already exists and is not an empty directory", "choose a new output directory")
    n = n_images or DEMO_IMAGES
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        make_cityscapes(tmp / "cityscapes", n_images=n, seed=seed)
        save_state_dict(make_demo_checkpoint(network.name, seed), tmp / "checkpoint.pth")
        header = (f"Thresholds of the embedded demo submission (seed {seed}, {n} synthetic images):\n"
                  "the shipped lib/intrada/data/thresholds.toml with the entries below replaced, "
                  "each with its measurement.")
        (tmp / "thresholds.toml").write_text(demo_thresholds_text(header))
    return out
