"""Verdicts: each gate's judgement as a value, built by a pure function from measurements and limits.

A :class:`Verdict` has three states: passed, failed, or not judged (with the reason). It is truthy
only when it passed, renders itself in one line (:meth:`Verdict.line`, the assertion message) and as
plain data (:meth:`Verdict.as_dict`, for report.json). Polygraphy's ``AccuracyResult`` is the model:
running and judging are separate phases; the judge never runs anything.

The ``judge_*`` functions are torchmetrics-shaped: check the arguments, compute, decide. They never
raise for a bad measurement (NaN, a zero throughput): that is a failed verdict naming what was wrong.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..parity.compare import ParityResult


class State(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_JUDGED = "not judged"


#: The gates and, for each, the subjects whose verdicts judge it. A gate whose required subjects got
#: no passed or failed verdict was not judged (see :mod:`intrada.gate.requirements`).
GATES = ("parity", "accuracy", "perf", "om")


@dataclass(frozen=True)
class Verdict:
    """One judgement: ``gate`` (parity, accuracy, perf, om), ``subject`` (what was judged:
    onnxruntime, dumps, om, openvino-f32 ...), ``kind`` (how to render the details)."""

    gate: str
    subject: str
    kind: str
    state: State
    summary: str  # one line: what was measured against what
    failures: tuple[str, ...] = ()  # why it failed (empty unless failed)
    reason: str | None = None  # why it was not judged
    details: Mapping[str, Any] = field(default_factory=dict)
    where: str | None = None  # where the difference starts (a layer, classes, pixels): said when it fails

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"unknown gate {self.gate!r}; known: {', '.join(GATES)}")
        if (self.state is State.FAILED) != bool(self.failures):
            raise ValueError("a failed verdict names its failures, and only a failed one")
        if (self.state is State.NOT_JUDGED) != (self.reason is not None):
            raise ValueError("a verdict that was not judged says why, and only that one")

    @property
    def passed(self) -> bool:
        return self.state is State.PASSED

    @property
    def judged(self) -> bool:
        return self.state is not State.NOT_JUDGED

    def __bool__(self) -> bool:
        return self.passed

    def line(self) -> str:
        """The one-line message: the assertion message of a failed test, the skip reason of a
        test that could not judge."""
        head = f"{self.gate} [{self.subject}]"
        if self.state is State.NOT_JUDGED:
            return f"{head}: not judged: {self.reason}"
        if self.state is State.FAILED:
            where = f" | where: {self.where}" if self.where else ""
            return f"{head}: FAIL: {'; '.join(self.failures)}{where} | {self.summary}"
        return f"{head}: PASS | {self.summary}"

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "subject": self.subject, "kind": self.kind, "state": self.state.value,
                "summary": self.summary, "failures": list(self.failures), "reason": self.reason,
                "details": dict(self.details), "where": self.where}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        return cls(data["gate"], data["subject"], data["kind"], State(data["state"]), data["summary"],
                   tuple(data.get("failures", ())), data.get("reason"), dict(data.get("details", {})),
                   data.get("where"))


def not_judged(gate: str, subject: str, kind: str, reason: str, **details: Any) -> Verdict:
    return Verdict(gate, subject, kind, State.NOT_JUDGED, "", reason=reason, details=details)


#: the kind of the not-judged verdicts made from :class:`NotJudged`
ABSENT = "absent"


class NotJudged(Exception):
    """Raised where a check cannot be made because something it needs is absent (no --dumps, no
    Ascend tool, no model): the gate records a not-judged verdict (kind :data:`ABSENT`) for every gate
    the check belongs to, with this reason. The checks that can judge say "not judged" with
    :func:`not_judged`; either way the report holds a verdict, and a required gate left with only
    not-judged verdicts fails the run."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decide(gate: str, subject: str, kind: str, summary: str, failures: list[str],
            details: Mapping[str, Any], where: str | None = None) -> Verdict:
    state = State.FAILED if failures else State.PASSED
    return Verdict(gate, subject, kind, state, summary, tuple(failures), None, details, where)


# -- accuracy -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyLimits:
    min_miou: float
    reference_miou: float
    relative_tolerance: float
    allow_subset: bool
    full_split_images: int


def judge_accuracy(score: Mapping[str, Any], limits: AccuracyLimits, *, images: int, subset: bool,
                   subject: str, **extra: Any) -> Verdict:
    """mIoU of one dataset-level confusion matrix against ``limits.min_miou``; a subset of the split
    is not certified (a failure unless ``allow_subset``)."""
    miou = float(score["miou"])
    within = math.isfinite(miou) and miou >= limits.reference_miou * (1 - limits.relative_tolerance)
    summary = (f"mIoU {miou:.2f} on {images} images (threshold {limits.min_miou:.2f}; model-zoo rule: within "
               f"{limits.relative_tolerance:.0%} of {limits.reference_miou:.2f} -> {'yes' if within else 'no'})")
    failures = []
    if not (math.isfinite(miou) and miou >= limits.min_miou):
        failures.append(f"mIoU {miou:.2f} below the threshold {limits.min_miou:.2f}")
    if subset and not limits.allow_subset:
        failures.append(f"not certified: subset ({images} of {limits.full_split_images} val images); run on the "
                        "full split, or use a thresholds file with accuracy.allow_subset = true for smoke tests")
    details = {**score, "min_miou": limits.min_miou, "reference_miou": limits.reference_miou,
               "within_relative_tolerance": within, "relative_tolerance": limits.relative_tolerance,
               "certified": not subset, "subset_allowed": limits.allow_subset, "images": images,
               "full_split_images": limits.full_split_images, **extra}
    return _decide("accuracy", subject, "accuracy", summary, failures, details)


# -- tensor parity --------------------------------------------------------------------------------
def judge_parity(result: ParityResult, *, gate: str, subject: str, where: str | None = None,
                 **extra: Any) -> Verdict:
    """A :class:`~intrada.parity.compare.ParityResult` as a verdict (ONNX vs PyTorch, om vs ONNX...). No
    images compared is not a pass. ``where``: where the outputs start to differ (first diverging
    layer, classes), said in the failure line."""
    if result.images == 0:
        return not_judged(gate, subject, "parity", f"{result.candidate} vs {result.reference}: no images compared")
    summary = result.report().split(" | ", 1)[-1]
    summary = f"{result.candidate} vs {result.reference} on {result.images} images | {summary}"
    return _decide(gate, subject, "parity", summary, list(result.failures), {**result.as_dict(), **extra}, where)


def judge_miou_delta(candidate_miou: float, reference_miou: float, *, max_delta: float, images: int,
                     subject: str, label: str, source: str, where: str | None = None, **extra: Any) -> Verdict:
    """|mIoU(om) - mIoU(ONNX)| on the same images within ``max_delta`` points."""
    delta = candidate_miou - reference_miou
    summary = (f"{label}: mIoU {candidate_miou:.3f} vs ONNX Runtime {reference_miou:.3f} on {images} images: "
               f"delta {delta:+.3f} (limit {max_delta:g})")
    failures = [] if math.isfinite(delta) and abs(delta) <= max_delta else [f"|delta mIoU| {abs(delta):.3f} > {max_delta:g}"]
    return _decide("om", subject, "miou_delta", summary, failures, {
        "om_miou": candidate_miou, "onnx_miou": reference_miou, "delta": delta, "max_delta": max_delta,
        "source_of_limit": source, "images": images, "label": label, **extra}, where)


# -- throughput -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throughput:
    """A measured throughput and where every factor of it came from."""

    backend: str
    device: str
    batch_size: int  # the batch size of the artifact that ran (read from it, never from a name)
    batch_source: str  # where batch_size was read
    fps: float  # in the unit of the target (per card or per chip)
    basis: str  # how fps was derived from the tool's own numbers
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ThroughputTarget:
    min_fps: float
    source: str


def judge_throughput(measured: Throughput, target: ThroughputTarget | None, *, subject: str,
                     no_target_reason: str | None = None) -> Verdict:
    """fps >= target. Without a target the figure is recorded but not judged."""
    summary = (f"{measured.backend} on {measured.device} bs{measured.batch_size} ({measured.batch_source}): "
               f"{measured.fps:.3f} fps ({measured.basis})")
    details = {"backend": measured.backend, "device": measured.device, "batch_size": measured.batch_size,
               "batch_source": measured.batch_source, "fps": measured.fps, "fps_basis": measured.basis,
               "min_fps": None if target is None else target.min_fps,
               "threshold_source": None if target is None else target.source, **measured.extra}
    if not (math.isfinite(measured.fps) and measured.fps > 0):
        return _decide("perf", subject, "throughput", summary, [f"throughput {measured.fps!r} is not a positive "
                                                                f"number"], details)
    if target is None:
        return Verdict("perf", subject, "throughput", State.NOT_JUDGED, summary,
                       reason=f"{summary}: recorded; {no_target_reason or 'no target for this device and batch size'}",
                       details=details)
    failures = [] if measured.fps >= target.min_fps else [f"{measured.fps:.3f} fps < {target.min_fps:.3f} "
                                                          f"(target: {target.source})"]
    return _decide("perf", subject, "throughput", f"{summary}; target {target.min_fps:.3f} fps", failures, details)


def judge_onnx_interface(info: Any, *, dynamic_batch_required: bool) -> Verdict:
    """The ONNX's interface as inspected (:func:`intrada.model.onnx_export.inspect_onnx` raises for a
    malformed file, so a verdict exists only for a readable one)."""
    from ..core import protocol

    failures = []
    if info.input_name != protocol.ONNX_INPUT_NAME:
        failures.append(f"input is named {info.input_name!r}, expected {protocol.ONNX_INPUT_NAME!r}")
    summary = (f"opset {info.opset}; input {info.input_name} [{info.batch_dim},3,512,1024]; outputs "
               f"{', '.join(info.output_names)} (by position: 0 aux, 1 main)"
               + ("; dynamic batch" if dynamic_batch_required else ""))
    return _decide("parity", "onnx-structure", "structure", summary, failures, {
        "path": str(info.path), "opset": info.opset, "input": info.input_name, "outputs": list(info.output_names),
        "batch_dim": str(info.batch_dim), "ops": list(info.op_types)})
