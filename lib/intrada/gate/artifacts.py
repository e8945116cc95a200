"""The gate's artifacts, built lazily into the artifact cache: the demo submission, the ONNX export,
the preprocessed bins, a runner's outputs, an evaluation. Each is keyed by everything that made it,
so a warm run builds nothing; "the code that made it" is derived from each builder's own source
(:func:`intrada.cache.fingerprint.code_identity`), never listed by hand. Plain functions: the pytest
fixtures, the suite's own tests and the benchmarks all call these, with a cache of their choosing.

Run once, judge many times: runners write their outputs here once; judges only read them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..core import protocol
from ..cache.fingerprint import code_identity, stat_fingerprint
from ..cache.store import ArtifactCache
from ..dataset.cityscapes import Sample, list_samples
from ..model.network import DEEPLABV2, Network
from ..core.hashing import cached_file_sha256
from .thresholds import Thresholds

T = TypeVar("T")


# -- the submission --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Submission:
    """What is being judged, resolved from the options (or the embedded demo)."""

    weights: Path | None
    onnx: Path | None  # a submitted ONNX; None means "export from weights"
    cityscapes: Path
    thresholds: Thresholds
    samples: tuple[Sample, ...]
    demo_model: bool
    demo_data: bool
    subset: bool  # fewer images than the official split (or --max-images)

    @property
    def accuracy_unmeaningful(self) -> str | None:
        """Why an mIoU would measure nothing (submitted weights on the synthetic demo split), or None."""
        if self.demo_model or not self.demo_data:
            return None
        return ("the accuracy of submitted weights on the synthetic demo split means nothing: pass --cityscapes ROOT "
                "(the real val split)")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]


def judged_images(split: Sequence[T], max_images: int | None) -> list[T]:
    """The images a run judges: the first ``--max-images`` of the (sorted) split, or all of it. The
    run plan counts with this too, before the split is opened."""
    return list(split[:max_images] if max_images else split)


def resolve_submission(cfg: Any, demo_dir: Path | None) -> Submission:
    """``cfg``: the :class:`intrada.gate.config.GateConfig`; ``demo_dir``: :func:`demo_entry` when the demo
    split or model is used (None otherwise)."""
    if (cfg.demo_data or cfg.demo_model) and demo_dir is None:
        raise ValueError("the demo submission is needed: pass demo_entry(cache)")
    weights = demo_dir / "checkpoint.pth" if cfg.demo_model and demo_dir is not None else cfg.weights
    root = cfg.cityscapes if cfg.cityscapes is not None else demo_dir / "cityscapes"  # type: ignore[operator]
    thresholds = cfg.thresholds
    all_samples = list_samples(root, "val")
    samples = judged_images(all_samples, cfg.max_images)
    full = thresholds.get("accuracy", "full_split_images")
    subset = cfg.max_images is not None and cfg.max_images < len(all_samples) or len(all_samples) < full
    return Submission(weights, cfg.onnx, root, thresholds, tuple(samples), cfg.demo_model, cfg.demo_data, subset)


def demo_entry(cache: ArtifactCache, network: Network = DEEPLABV2) -> Path:
    """The embedded demo submission (checkpoint.pth for ``network``, cityscapes/, thresholds.toml) in ``cache``."""
    from .. import demo
    from .thresholds import DEFAULT_PATH

    parts = {"seed": demo.DEMO_SEED, "images": demo.DEMO_IMAGES, "network": network.name,
             **code_identity(demo_entry), "thresholds": cached_file_sha256(DEFAULT_PATH)[:16]}

    def build(tmp: Path) -> dict[str, Any]:
        from .submission import write_demo

        write_demo(tmp, network=network)
        return {"images": demo.DEMO_IMAGES}

    return cache.get_or_build("demo", parts, build, description="demo submission").path


# -- model artifacts ---------------------------------------------------------------------------------
def onnx_export_entry(cache: ArtifactCache, weights: Path, network: Network = DEEPLABV2) -> Path:
    """ONNX export of ``weights`` in ``cache``, keyed by the checkpoint's sha256, opset, the exporter's
    code and library versions. The checkpoint is loaded on a cache miss only."""
    from ..model import checkpoint, onnx_export

    parts = {"checkpoint_sha256": cached_file_sha256(weights), "opset": protocol.DEFAULT_OPSET,
             "network": network.name, **code_identity(onnx_export_entry)}

    def build(tmp: Path) -> dict[str, Any]:
        onnx_export.export_onnx(checkpoint.load_model(weights, network=network)[0], tmp / "model.onnx")
        return {"checkpoint": str(weights), "opset": protocol.DEFAULT_OPSET}

    return cache.get_or_build("onnx", parts, build, description="ONNX export").file("model.onnx")


# -- data artifacts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bins:
    directory: Path  # holds exactly ``names``' bins: device tools run whole directories
    key: str
    names: tuple[str, ...]
    made: int = 0  # bins preprocessed by this call (0 on a cache hit)
    reused: int = 0  # bins linked from other entries by this call

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.bin"

    def covers(self, names: Sequence[str]) -> bool:
        return set(names) <= set(self.names)


def _reusable_bins(cache: ArtifactCache, same: dict[str, Any], wanted: dict[str, str]) -> dict[str, tuple[Path, str]]:
    """Bins already in the cache for some of ``wanted`` ({name: identity of its image}): name ->
    (a complete bins entry made by the same code and Pillow, the name its bin carries there). Read
    from the entries' own key parts, as :func:`_reusable` does for outputs."""
    from ..cache.manifest import canonical_json

    found: dict[str, tuple[Path, str]] = {}
    by_image = {image: name for name, image in wanted.items()}
    want = canonical_json(same)
    for entry in cache.complete("bins"):
        parts = entry.manifest.get("parts") or {}
        if canonical_json({k: parts.get(k) for k in same}) != want:
            continue
        images = parts.get("images")
        for donor, image in zip(parts.get("names") or (), images if isinstance(images, list) else ()):
            name = by_image.get(image)
            if name is not None and name not in found and f"{donor}.bin" in entry.files:
                found[name] = (entry.path, donor)
    return found


def _link_or_copy(source: Path, target: Path) -> bool:
    """False when neither works (the donor entry was removed meanwhile): then the file is made."""
    import shutil

    try:
        os.link(source, target)  # entries are immutable: a hard link is a safe copy
    except OSError:
        try:
            shutil.copy2(source, target)
        except OSError:
            target.unlink(missing_ok=True)
            return False
    return True


def bins_entry(cache: ArtifactCache, samples: Sequence[Sample], *, workers: int = 2) -> Bins:
    """The seed's preprocessing of ``samples`` (one .bin each), keyed by each image's identity.

    A bin is a function of its image, the code and its libraries, so the entry's build links the bins
    that other entries already hold for the same images (same path, size and mtime) and preprocesses
    the others only: the bins of a sample judged before serve a later run on the whole split. The
    entry directory holds exactly the ``samples``' bins."""
    from ..dataset import preprocess

    names = [s.name for s in samples]
    images = [stat_fingerprint([s.image]) for s in samples]
    same = code_identity(bins_entry)  # the code and library versions: what a donor's bins must share
    parts = {"images": images, "names": names, **same}

    def build(tmp: Path) -> dict[str, Any]:
        found = _reusable_bins(cache, same, dict(zip(names, images)))
        reused = {name for name, (entry, donor) in found.items()
                  if _link_or_copy(entry / f"{donor}.bin", tmp / f"{name}.bin")}
        todo = [s for s in samples if s.name not in reused]
        if todo:
            preprocess.preprocess_split(todo, tmp, workers=workers, progress=True)
        return {"images": len(names), "made": len(todo), "reused": len(reused)}

    entry = cache.get_or_build("bins", parts, build, description="preprocessed bins")
    made, reused = (entry.info.get("made", 0), entry.info.get("reused", 0)) if entry.built else (0, 0)
    return Bins(entry.path, entry.key, tuple(names), made, reused)


# Up to this many images, outputs and the noise floor are keyed by the bytes of their bins (8 demo bins:
# 50 MB, ~0.1 s to hash once per process), so a run on other bins of the same images hits: a --max-images
# run's parity images, a sample of a split judged before. Above it, by the bins entry's key: hashing the
# 500 val bins (3 GB) would cost seconds on every warm run.
CONTENT_KEYED_IMAGES = 8


def inputs_key(bins: Bins, names: Sequence[str]) -> dict[str, Any]:
    """What outputs of ``names`` read: their bins' sha256 (few images) or the bins entry (many)."""
    if len(names) <= CONTENT_KEYED_IMAGES:
        return {"bins_sha256": [cached_file_sha256(bins.path(n)) for n in names]}
    return {"bins": bins.key}


def _reusable(cache: ArtifactCache, same: dict[str, Any], wanted: dict[str, str]) -> dict[str, tuple[Path, str]]:
    """Outputs already in the cache for some of ``wanted`` ({name: sha256 of its bin}): name ->
    (a complete outputs entry whose key parts match ``same`` (runner, model, code), the name its
    files carry there). Read from the entries' own key parts: nothing is recorded twice."""
    from ..cache.manifest import canonical_json
    from ..dataset.dumps import CONVENTIONS

    found: dict[str, tuple[Path, str]] = {}
    by_sha = {sha: name for name, sha in wanted.items()}
    want = canonical_json(same)
    for entry in cache.complete("outputs"):
        parts = entry.manifest.get("parts") or {}
        if canonical_json({k: parts.get(k) for k in same}) != want:
            continue
        for donor, sha in zip(parts.get("names") or (), parts.get("bins_sha256") or ()):
            name = by_sha.get(sha)
            if name is not None and name not in found and f"{donor}{CONVENTIONS['ais_bench']['main']}" in entry.files:
                found[name] = (entry.path, donor)
    return found


def outputs_entry(cache: ArtifactCache, runner: Any, model_id: dict[str, Any], bins: Bins,
                  samples: Sequence[Sample], description: str) -> Any:
    """Outputs of ``runner`` on ``samples``, stored once as ais_bench-layout dumps; a DumpSet.

    Per image, outputs are a function of the runner, the model and the bin's bytes: when the entry
    is built for a few images (content-keyed, :func:`inputs_key`), images another entry of the same
    runner and model already holds are linked from it, and the runner runs on the others only (a
    --max-images run after a full one, a sample of a split judged before)."""
    import shutil

    from ..dataset.dumps import CONVENTIONS, DumpSet

    names = [s.name for s in samples]
    desc = {k: v for k, v in runner.describe().items() if k != "threads"}
    inputs = inputs_key(bins, names)
    # the runner's class (its module, whole) is the code that computes the outputs
    same = {"runner": desc, "model": model_id, **code_identity(outputs_entry, type(runner))}
    parts = {**same, **inputs, "names": names}
    shas = dict(zip(names, inputs.get("bins_sha256", ())))

    def build(tmp: Path) -> dict[str, Any]:
        reused = _reusable(cache, same, shas) if shas else {}
        for name, (entry, donor) in reused.items():
            for suffix in CONVENTIONS["ais_bench"].values():  # the heads the donor holds
                f, target = entry / f"{donor}{suffix}", tmp / f"{name}{suffix}"
                if f.is_file():
                    try:
                        os.link(f, target)  # entries are immutable: a hard link is a safe copy
                    except OSError:
                        shutil.copy2(f, target)
        todo = [n for n in names if n not in reused]
        record = runner.run_split(bins.directory, todo, tmp, batch_size=1, progress=True, desc=description) \
            if todo else None
        return {"images": len(names), **desc, "reused": len(reused),
                "throughput": None if record is None else record.throughput,
                "timing": None if record is None else record.throughput_field}

    entry = cache.get_or_build("outputs", parts, build, description=description)
    return DumpSet.open(entry.path, list(samples), convention="ais_bench")


def evaluation_entry(cache: ArtifactCache, samples: Sequence[Sample], dumps: Any, description: str) -> dict[str, Any]:
    """mIoU (score JSON) of a DumpSet over ``samples``, keyed by the dump files' and labels' identity."""
    from ..evaluation import evaluate

    files = sorted(Path(dumps.directory).iterdir())
    labels = [s.label_required for s in samples]
    parts = {"dumps": stat_fingerprint(files), "convention": dumps.convention, "labels": stat_fingerprint(labels),
             "names": [s.name for s in samples], **code_identity(evaluation_entry)}

    def build(tmp: Path) -> dict[str, Any]:
        result = evaluate.evaluate_dumps(list(samples), dumps, workers=evaluate.workers_for(len(samples)),
                                         label_cache_dir=cache.root / "labels", progress=True)
        (tmp / "score.json").write_text(json.dumps(result.score.to_json(), indent=1))
        return {"miou": result.score.miou, "cost": result.cost()}

    entry = cache.get_or_build("eval", parts, build, description=description)
    return json.loads(entry.file("score.json").read_text())  # type: ignore[no-any-return]


def noise_floor_entry(cache: ArtifactCache, weights: Path, bins: Bins, samples: Sequence[Sample],
                      network: Network = DEEPLABV2) -> dict[str, Any]:
    """The float32 rounding noise of ``weights`` on ``samples`` (intrada.parity.noise: float32 vs float64
    forward on the centre ``noise.GATE_CROP`` of each image), keyed by everything that moves it:
    checkpoint, images, crop, threads, code and library versions."""
    import torch

    from ..model import checkpoint
    from ..parity import noise

    names = [s.name for s in samples]
    parts = {"checkpoint_sha256": cached_file_sha256(weights), **inputs_key(bins, names), "names": names,
             "crop": list(noise.GATE_CROP), "network": network.name, "threads": torch.get_num_threads(),
             **code_identity(noise_floor_entry)}

    def build(tmp: Path) -> dict[str, Any]:
        from ..dataset.preprocess import read_bin

        net = checkpoint.load_model(weights, network=network)[0]
        floor = noise.measure_noise_floor(net, [read_bin(bins.path(n)) for n in names], crop=noise.GATE_CROP)
        (tmp / "floor.json").write_text(json.dumps({**floor.as_dict(), "report": floor.report()}, indent=1))
        return {"floor": floor.max_abs_over_scale}

    entry = cache.get_or_build("noise", parts, build, description="float32 noise floor (float64 forward)")
    return json.loads(entry.file("floor.json").read_text())  # type: ignore[no-any-return]

