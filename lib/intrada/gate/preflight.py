"""The om pre-flight: on any CPU, what force_fp16 (atc's default precision mode on 310/310P) is
predicted to do to this submission, judged against the om's own limits; on a device, how far the om
is from that prediction.

* :func:`predict` runs the emulation (:mod:`intrada.diagnosis.fp16_emulation`) on the om sample images (the run plan's),
  compares its outputs with ONNX Runtime's float32 outputs of the same images with the om parity
  statistics (cosine, rel. Euclidean, KL, argmax agreement: :mod:`intrada.parity.compare`) and scores both
  (the paired mIoU delta). When the prediction fails, :func:`intrada.diagnosis.fp16_emulation.diagnose` says which
  layer overflows or loses most, on the sample image that deviates most.
* :func:`judge_prediction` makes it a verdict of its own (gate ``om``, kind ``prediction``): it is
  reported and can fail its test, but never judges the om gate (:mod:`intrada.gate.requirements`): a
  prediction never certifies an om.
* :func:`judge_om_parity` is the om parity verdict with the measured deviation beside the prediction:
  per head, the om's rel. Euclidean distance over the predicted one. Gating on that ratio is off
  unless the thresholds file sets ``[om] max_ratio_to_fp16_prediction``.

Measured on the demo (docs/fp16.md): predicted cosine 0.9999985, rel. Euclidean 1.7e-3 (main head), the
om limits (msquickcmp's rel. Euclidean < 0.05) sit ~30x above it, so an om that drifts 20x further than
fp16 rounding explains passes om parity; the ratio says so.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..cache.fingerprint import code_identity
from ..parity.compare import Limits, ParityResult, TensorStats, compare_stored
from .verdict import State, Verdict, judge_parity, not_judged

SUBJECT = "fp16-prediction"
KIND = "prediction"  # intrada.gate.requirements: verdicts of this kind never judge a gate
LABEL = "predicted for force_fp16"


@dataclass(frozen=True)
class Prediction:
    """The emulated om against ONNX Runtime on the om sample images, or why there is none."""

    images: int
    parity: ParityResult | None = None
    emulated_miou: float | None = None
    reference_miou: float | None = None
    seconds_per_image: float | None = None  # the emulation, measured when its outputs were built
    reason: str | None = None  # why there is no prediction
    diagnosis: Mapping[str, Any] | None = None  # intrada.diagnosis.fp16_emulation.Fp16Diagnosis.as_dict(), when it failed
    emulation: Mapping[str, Any] = field(default_factory=dict)  # runner description, cache entry

    @property
    def available(self) -> bool:
        return self.parity is not None

    @property
    def miou_delta(self) -> float | None:
        if self.emulated_miou is None or self.reference_miou is None:
            return None
        return self.emulated_miou - self.reference_miou

    def rel_euclidean(self) -> dict[str, float]:
        """Predicted rel. Euclidean distance per head (aux, main)."""
        return {} if self.parity is None else {s.name: s.rel_euclidean for s in self.parity.outputs}

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "available": self.available, "reason": self.reason,
                "parity": None if self.parity is None else self.parity.as_dict(),
                "emulated_miou": self.emulated_miou, "reference_miou": self.reference_miou,
                "miou_delta": self.miou_delta, "seconds_per_image": self.seconds_per_image,
                "diagnosis": None if self.diagnosis is None else dict(self.diagnosis),
                "emulation": dict(self.emulation)}


def unavailable(reason: str, images: int = 0) -> Prediction:
    return Prediction(images, reason=reason)


# -- building it (the gate's fixture calls this) -----------------------------------------------------
def predict(cache: Any, onnx_path: Path, onnx_sha256: str, samples: Sequence[Any], limits: Limits, *,
            max_miou_delta: float) -> Prediction:
    """The prediction on ``samples`` (the om sample images): the emulation against ONNX Runtime on
    exactly those images. Everything is cached and shared: their bins, ONNX Runtime's outputs (the
    entry the om tests use when an om is judged: same runner, model and images), the emulated
    outputs (keyed like every runner's), both scores, and the diagnosis of a failed prediction. It
    never needs ONNX Runtime on the rest of the split, so a CPU run without a device pays for the
    sample alone."""
    from ..diagnosis import fp16_emulation as fp16
    from ..runners.cpu import OnnxRuntimeRunner
    from . import artifacts

    names = [s.name for s in samples]
    if not names:
        return unavailable("no om sample images")
    why = unsupported_entry(cache, onnx_path, onnx_sha256)
    if why is not None:
        return unavailable(f"the force_fp16 emulation cannot run this model: {why}", len(names))
    bins = artifacts.bins_entry(cache, samples)
    reference = artifacts.outputs_entry(cache, OnnxRuntimeRunner(onnx_path), {"onnx_sha256": onnx_sha256}, bins,
                                        samples, "onnxruntime outputs")
    runner = fp16.Fp16EmulationRunner(onnx_path)
    model_id = {"onnx_sha256": onnx_sha256}  # the emulation's code is the runner's (outputs_entry keys it)
    try:
        emulated = artifacts.outputs_entry(cache, runner, model_id, bins, samples, "force_fp16 emulation outputs")
    except fp16.Fp16Unsupported as exc:
        return unavailable(f"the force_fp16 emulation cannot run this model: {exc}", len(names))
    result = compare_stored("onnxruntime", "force_fp16 emulation", reference, emulated, names, limits)
    emulated_score = artifacts.evaluation_entry(cache, samples, emulated, "force_fp16 emulation mIoU")
    reference_score = artifacts.evaluation_entry(cache, samples, reference, "onnxruntime mIoU on the om sample")
    info = _entry_info(Path(emulated.directory))
    throughput = info.get("throughput")
    seconds = 1.0 / throughput if isinstance(throughput, (int, float)) and throughput > 0 else None
    delta = emulated_score["miou"] - reference_score["miou"]
    diagnosis = None
    if not result.passed or not (math.isfinite(delta) and abs(delta) <= max_miou_delta):
        worst = _worst_image(reference, emulated, names)
        diagnosis = diagnosis_entry(cache, onnx_path, onnx_sha256, bins.path(worst), worst, limits)
    return Prediction(len(names), result, float(emulated_score["miou"]), float(reference_score["miou"]), seconds,
                      diagnosis=diagnosis, emulation={**runner.describe(), "outputs": str(emulated.directory),
                                                      "reference": str(reference.directory)})


def unsupported_entry(cache: Any, onnx_path: Path, onnx_sha256: str) -> str | None:
    """Why the emulation cannot run the model in ``onnx_path`` (its convolutions do not map onto the
    DeepLabv2 module tree, an op without a rule ...), or None; cached, so that a model that cannot be
    emulated is said once and is no failed build."""
    from ..diagnosis import fp16_emulation as fp16

    parts = {"onnx_sha256": onnx_sha256, **code_identity(unsupported_entry)}

    def build(tmp: Path) -> dict[str, Any]:
        try:
            fp16.load_emulation(onnx_path)
            reason = None
        except fp16.Fp16Unsupported as exc:
            reason = str(exc)
        (tmp / "support.json").write_text(json.dumps({"unsupported": reason}))
        return {"unsupported": reason}

    entry = cache.get_or_build("fp16-support", parts, build, description="force_fp16 emulation check")
    return json.loads(entry.file("support.json").read_text())["unsupported"]  # type: ignore[no-any-return]


def _entry_info(directory: Path) -> dict[str, Any]:
    from ..cache.manifest import MANIFEST

    try:
        return dict(json.loads((directory / MANIFEST).read_text()).get("info") or {})
    except (OSError, ValueError):
        return {}


def _worst_image(reference: Any, candidate: Any, names: Sequence[str]) -> str:
    """The image whose main head deviates most (rel. Euclidean)."""
    def rel(name: str) -> float:
        s = TensorStats("main")
        s.update(reference.read(name, "main"), candidate.read(name, "main"))
        return s.rel_euclidean
    return max(names, key=rel)


def diagnosis_entry(cache: Any, onnx_path: Path, onnx_sha256: str, bin_path: Path, name: str,
                    limits: Limits) -> dict[str, Any]:
    """:func:`intrada.diagnosis.fp16_emulation.diagnose` on one preprocessed image, cached (JSON)."""
    from ..core.hashing import cached_file_sha256
    from ..diagnosis import fp16_emulation as fp16

    parts = {"onnx_sha256": onnx_sha256, "bin_sha256": cached_file_sha256(bin_path),
             "limits": {k: v for k, v in limits.__dict__.items() if v is not None},
             **code_identity(diagnosis_entry)}

    def build(tmp: Path) -> dict[str, Any]:
        from ..dataset.preprocess import read_bin

        d = fp16.diagnose(fp16.load_emulation(onnx_path), read_bin(bin_path), limits, image_name=name)
        (tmp / "diagnosis.json").write_text(json.dumps({**d.as_dict(), "markdown": d.markdown()}, indent=1))
        return {"report": d.report()}

    entry = cache.get_or_build("fp16-diagnosis", parts, build, description="force_fp16 layer diagnosis")
    return json.loads(entry.file("diagnosis.json").read_text())  # type: ignore[no-any-return]


# -- judging it -----------------------------------------------------------------------------------------
def judge_prediction(prediction: Prediction, *, max_miou_delta: float, limits_source: str = "",
                     **extra: Any) -> Verdict:
    """The prediction against the om limits (``prediction.parity`` carries them) and the om's mIoU
    delta limit: a verdict of its own (subject ``fp16-prediction``, kind ``prediction``)."""
    if not prediction.available or prediction.parity is None:
        return not_judged("om", SUBJECT, KIND, f"{LABEL}: no prediction: {prediction.reason}",
                          prediction=prediction.as_dict(), **extra)
    base = judge_parity(prediction.parity, gate="om", subject=SUBJECT)
    if not base.judged:
        return not_judged("om", SUBJECT, KIND, f"{LABEL}: {base.reason}", prediction=prediction.as_dict(), **extra)
    failures = [f"{f} (predicted)" for f in base.failures]
    delta = prediction.miou_delta
    if delta is None or not (math.isfinite(delta) and abs(delta) <= max_miou_delta):
        failures.append(f"|delta mIoU| {abs(delta) if delta is not None else float('nan'):.3f} > {max_miou_delta:g} "
                        "(predicted)")
    main = prediction.parity.outputs[-1]
    cost = "" if prediction.seconds_per_image is None else f"; emulation {prediction.seconds_per_image:.1f} s per image"
    miou = ("mIoU not scored" if delta is None else f"mIoU {prediction.emulated_miou:.3f} vs "
            f"{prediction.reference_miou:.3f} (delta {delta:+.3f}, limit {max_miou_delta:g})")
    summary = (f"{LABEL} (CPU emulation, never certifies an om): on {prediction.images} om sample images vs ONNX "
               f"Runtime: {main.name} cosine {main.cosine:.7f}, rel. euclidean {main.rel_euclidean:.3g}, KL "
               f"{main.kl:.3g}, max|d|/scale {main.max_abs_over_scale:.3g}, argmax {main.argmax_agreement:.4%}; "
               f"{miou}{cost}")
    where = None if prediction.diagnosis is None else str(prediction.diagnosis.get("report"))
    state = State.FAILED if failures else State.PASSED
    details = {**prediction.as_dict(), "max_miou_delta": max_miou_delta, "limits_source": limits_source,
               "limits": {k: v for k, v in prediction.parity.limits.__dict__.items() if v is not None}, **extra}
    return Verdict("om", SUBJECT, KIND, state, summary, tuple(failures), None, details, where)


def ratios(measured: ParityResult, prediction: Prediction | None) -> dict[str, float]:
    """Per head: the om's rel. Euclidean distance over the predicted one (heads both have)."""
    if prediction is None or not prediction.available:
        return {}
    predicted = prediction.rel_euclidean()
    out = {}
    for s in measured.outputs:
        p = predicted.get(s.name)
        if p is not None:
            out[s.name] = s.rel_euclidean / p if p > 0 else (1.0 if s.rel_euclidean == 0 else math.inf)
    return out


def judge_om_parity(result: ParityResult, prediction: Prediction | None, *, subject: str,
                    max_ratio: float | None = None, ratio_source: str | None = None, where: str | None = None,
                    **extra: Any) -> Verdict:
    """:func:`intrada.gate.verdict.judge_parity` of the om (or the dumps) against ONNX Runtime, with the
    deviation beside the force_fp16 prediction in its line and details. ``max_ratio`` (thresholds
    ``[om] max_ratio_to_fp16_prediction``; None: off) fails an om whose rel. Euclidean distance exceeds
    that many times the predicted one, on any head; with the gate on and no prediction, the om fails
    (a check asked for that could not run)."""
    verdict = judge_parity(result, gate="om", subject=subject, where=where, **extra)
    if not verdict.judged:
        return verdict
    r = ratios(result, prediction)
    predicted = {} if prediction is None else prediction.rel_euclidean()
    if r:
        shown = " ".join(f"{head} {r[head]:.3g}x ({s.rel_euclidean:.3g} vs predicted {predicted[head]:.3g})"
                         for head, s in ((s.name, s) for s in result.outputs) if head in r)
        line = f"rel. euclidean over the force_fp16 prediction: {shown}"
    else:
        why = "none" if prediction is None else (prediction.reason or "none")
        line = f"no force_fp16 prediction to compare with ({why})"
    failures = list(verdict.failures)
    gate = "off" if max_ratio is None else f"max {max_ratio:g}x ({ratio_source})"
    if max_ratio is not None:
        if not r:
            failures.append(f"[om] max_ratio_to_fp16_prediction is set but there is no prediction ({line})")
        else:
            worst = max(r, key=lambda h: r[h])
            if not r[worst] <= max_ratio:
                failures.append(f"{worst}: rel. euclidean {r[worst]:.3g}x the force_fp16 prediction > {max_ratio:g}")
    details = {**verdict.details, "fp16_prediction": {
        "ratio_rel_euclidean": r, "predicted_rel_euclidean": predicted,
        "measured_rel_euclidean": {s.name: s.rel_euclidean for s in result.outputs},
        "max_ratio": max_ratio, "ratio_source": ratio_source, "gate": gate,
        "prediction": None if prediction is None else {k: v for k, v in prediction.as_dict().items()
                                                        if k not in ("parity", "diagnosis")}}}
    state = State.FAILED if failures else State.PASSED
    return replace(verdict, state=state, failures=tuple(failures), summary=f"{verdict.summary} | {line}",
                   details=details)
