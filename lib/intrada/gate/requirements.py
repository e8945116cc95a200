"""Which gates a run must judge, and whether it did: the rule that no green run measured nothing.

A gate is *required* when the user asked for it:

* selected by a ``-m`` expression that names its marker (``-m accuracy``, ``-m "parity or om"``);
* implied by the inputs: ``--weights`` / ``--onnx`` -> parity and accuracy; ``--dumps`` -> the dumps
  are judged by the om gate and the accuracy gate; ``--om``, ``--om-runner``, ``--device-id``,
  ``--soc-version`` -> the live om is judged by the om gate (each only when that gate's tests were
  selected at all: ``-m om --onnx M`` asks for the om gate, not for parity);
* named in ``--require`` or in the thresholds file's ``[certification] require`` (always, selected or
  not: a model zoo pins what certification means).

A required gate that ends with no judged verdict of the subjects it was required for fails the run.
A prediction (verdict kind :data:`PREDICTION_KIND`, from a test marked ``preflight``: the om
pre-flight, :mod:`intrada.preflight`) is reported with its gate but never judges it: it neither
passes, fails nor explains a gate; a failed prediction fails its own test (and so the run).
Everything here is pure: the pytest plugin feeds it options, verdicts and test outcomes.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .verdict import ABSENT, GATES, State, Verdict

#: Subjects whose verdicts judge each gate. OpenVINO and the ONNX structure check are reported but
#: do not by themselves make a parity verdict: the gate is "ONNX Runtime computes what PyTorch does".
CORE_SUBJECTS: dict[str, frozenset[str]] = {
    "parity": frozenset({"onnx"}),
    "accuracy": frozenset({"onnxruntime", "dumps", "om"}),
    "perf": frozenset({"onnxruntime", "om"}),
    "om": frozenset({"om", "dumps"}),
}
#: Verdicts of this kind (and the outcomes of tests that make them) never judge a gate.
PREDICTION_KIND = "prediction"
#: option (pytest dest name) -> (gate, subjects it asks to be judged)
IMPLIED_BY_OPTION: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {
    "weights": (("parity", CORE_SUBJECTS["parity"]), ("accuracy", CORE_SUBJECTS["accuracy"])),
    "onnx": (("parity", CORE_SUBJECTS["parity"]), ("accuracy", CORE_SUBJECTS["accuracy"])),
    "dumps": (("om", frozenset({"dumps"})), ("accuracy", frozenset({"dumps"}))),
    "om": (("om", frozenset({"om"})),),
    "om_runner": (("om", frozenset({"om"})),),
    "device_id": (("om", frozenset({"om"})),),
    "soc_version": (("om", frozenset({"om"})),),
}


@dataclass(frozen=True)
class Requirement:
    gate: str
    subjects: frozenset[str]
    why: str  # "-m accuracy", "--weights", "--require", "thresholds file"
    always: bool = False  # required even when none of the gate's tests was selected


def parse_gate_list(text: str, where: str) -> tuple[str, ...]:
    """``"parity,accuracy"`` -> ("parity", "accuracy"); ValueError naming the unknown gate."""
    gates = tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))
    unknown = [g for g in gates if g not in GATES]
    if unknown:
        raise ValueError(f"{where}: unknown gate {unknown[0]!r}; known: {', '.join(GATES)}")
    return gates


def gates_selected_by(markexpr: str) -> tuple[str, ...]:
    """Gates named by a ``-m`` expression that selects a test carrying only that gate's marker."""
    if not markexpr.strip():
        return ()
    from _pytest.mark.expression import Expression

    expr = Expression.compile(markexpr)
    named = []
    for gate in GATES:
        names_it = False

        def only(name: str, /, **_: Any) -> bool:
            nonlocal names_it
            names_it = names_it or name == gate  # noqa: B023 (called before the loop moves on)
            return name == gate  # noqa: B023

        if expr.evaluate(only) and names_it:
            named.append(gate)
    return tuple(named)


def resolve(*, markexpr: str, given_options: Iterable[str], require_option: Sequence[str] = (),
            require_thresholds: Sequence[str] = ()) -> list[Requirement]:
    reqs: list[Requirement] = []
    selected = gates_selected_by(markexpr)
    for gate in selected:
        reqs.append(Requirement(gate, CORE_SUBJECTS[gate], f"-m {markexpr!r}"))
    for opt in given_options:
        for gate, subjects in IMPLIED_BY_OPTION.get(opt, ()):
            # with a -m expression, the inputs say what to judge within the gates it selects: a
            # test carrying two markers (test_om_miou: om and accuracy) does not drag a gate in
            if not markexpr.strip() or gate in selected:
                reqs.append(Requirement(gate, subjects, "--" + opt.replace("_", "-")))
    for gate in require_option:
        reqs.append(Requirement(gate, CORE_SUBJECTS[gate], "--require", always=True))
    for gate in require_thresholds:
        reqs.append(Requirement(gate, CORE_SUBJECTS[gate], "thresholds [certification] require", always=True))
    return reqs


@dataclass(frozen=True)
class TestOutcome:
    __test__ = False  # not a pytest test class
    test: str
    outcome: str  # passed, failed, error, skipped
    message: str = ""
    predicts: bool = False  # a prediction's test (marker ``preflight``): never judges its gate


@dataclass(frozen=True)
class GateVerdict:
    """The verdict block's line for one gate."""

    gate: str
    state: str  # "PASS", "FAIL", "NOT JUDGED", "not run"
    required_by: tuple[str, ...]
    unjudged: tuple[str, ...] = ()  # required subjects that got no judged verdict
    reason: str | None = None
    verdicts: tuple[Verdict, ...] = ()
    tests: tuple[TestOutcome, ...] = field(default=())

    @property
    def predictions(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.kind == PREDICTION_KIND)

    @property
    def prediction_failed(self) -> bool:
        """A prediction said no: its test failed (the run fails), the gate's own state is unchanged."""
        return any(v.state is State.FAILED for v in self.predictions) or \
            any(t.predicts and t.outcome in ("failed", "error") for t in self.tests)

    @property
    def breaks_run(self) -> bool:
        """Required and not judged: the run must fail even if no test failed."""
        return bool(self.required_by) and bool(self.unjudged)

    def line(self) -> str:
        req = f" (required: {', '.join(self.required_by)})" if self.required_by else ""
        if self.breaks_run:
            what = f" [{', '.join(self.unjudged)}]" if self.state != "NOT JUDGED" else ""
            return f"{self.gate:9s} NOT JUDGED{what}{req}: {self.reason or 'no test judged it'}"
        if self.state in ("NOT JUDGED", "not run"):
            return f"{self.gate:9s} {self.state.lower()}: {self.reason or 'not selected'}"
        return f"{self.gate:9s} {self.state}{req}"

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.state, "required_by": list(self.required_by), "unjudged": list(self.unjudged),
                "breaks_run": self.breaks_run, "reason": self.reason,
                "results": [v.as_dict() for v in self.verdicts],
                "tests": [{"test": t.test, "outcome": t.outcome, "message": t.message} for t in self.tests]}


def _reason(verdicts: Sequence[Verdict], subjects: frozenset[str] | None) -> str | None:
    """Why the gate was not judged: the not-judged verdicts of the subjects it needed (a check that
    could not start, kind ABSENT, counts for any subject), the checks that ran first."""
    unjudged = [v for v in verdicts if v.state is State.NOT_JUDGED and v.reason
                and (subjects is None or v.subject in subjects or v.kind == ABSENT)]
    reasons = [v.reason or "" for v in sorted(unjudged, key=lambda v: v.kind == ABSENT)]
    distinct = list(dict.fromkeys(reasons))
    if not distinct:
        return None
    return distinct[0] + (f" (+{len(distinct) - 1} more reasons)" if len(distinct) > 1 else "")


def judge_gates(requirements: Sequence[Requirement], verdicts: Sequence[Verdict],
                tests: Mapping[str, Sequence[TestOutcome]]) -> dict[str, GateVerdict]:
    """One :class:`GateVerdict` per gate from what the run recorded."""
    out: dict[str, GateVerdict] = {}
    for gate in GATES:
        gate_tests = tuple(tests.get(gate, ()))
        gate_verdicts = tuple(v for v in verdicts if v.gate == gate)
        own_tests = [t for t in gate_tests if not t.predicts]  # what judges the gate: no prediction
        own_verdicts = [v for v in gate_verdicts if v.kind != PREDICTION_KIND]
        selected = bool(gate_tests)
        reqs = [r for r in requirements if r.gate == gate and (selected or r.always)]
        judged = {v.subject for v in own_verdicts if v.judged}
        # A requirement on several subjects (-m om: the om or the dumps) is met by any one of them;
        # one from an input (--dumps) names exactly what must be judged.
        unmet = [r for r in reqs if not (r.subjects & judged)]
        failed = any(t.outcome in ("failed", "error") for t in own_tests) or \
            any(v.state is State.FAILED for v in own_verdicts)
        if failed:
            state = "FAIL"
        elif not gate_tests and not gate_verdicts:
            state = "not run"
        elif judged & CORE_SUBJECTS[gate]:
            state = "PASS"
        else:
            state = "NOT JUDGED"
        missing = tuple(sorted({s for r in unmet for s in r.subjects})) if unmet else ()
        reason = None
        if missing or state in ("NOT JUDGED", "not run"):
            reason = _reason(own_verdicts, frozenset(missing) if missing else None)
            if reason is None and reqs and not selected:
                reason = "no test of this gate was selected"
        out[gate] = GateVerdict(gate, state, tuple(dict.fromkeys(r.why for r in reqs)), missing, reason,
                                gate_verdicts, gate_tests)
    return out
