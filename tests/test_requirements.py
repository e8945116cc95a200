"""Which gates a run must judge, and the rule that a required gate that judged nothing breaks the run."""
from __future__ import annotations

import pytest

from intrada.gate.requirements import CORE_SUBJECTS, Requirement, TestOutcome, gates_selected_by, judge_gates, parse_gate_list, resolve
from intrada.gate.verdict import ABSENT, State, Verdict, not_judged


def passed(gate: str, subject: str) -> Verdict:
    return Verdict(gate, subject, "parity", State.PASSED, "ok")


@pytest.mark.parametrize("expr, gates", [
    ("", ()), ("accuracy", ("accuracy",)), ("parity or accuracy", ("parity", "accuracy")),
    ("not perf", ()), ("om and not accuracy", ("om",)), ("slow", ()), ("accuracy and om", ()),
    ("(perf)", ("perf",)),
])
def test_gates_selected_by_a_mark_expression(expr: str, gates: tuple) -> None:
    assert gates_selected_by(expr) == gates


def test_gate_lists_are_checked() -> None:
    assert parse_gate_list("parity, om,parity", "--require") == ("parity", "om")
    with pytest.raises(ValueError, match=r"--require: unknown gate 'speed'; known: parity, accuracy, perf, om"):
        parse_gate_list("parity,speed", "--require")


def test_inputs_imply_gates_within_the_selected_ones() -> None:
    everything = resolve(markexpr="", given_options=["weights", "dumps"])
    assert {(r.gate, r.why) for r in everything} == {
        ("parity", "--weights"), ("accuracy", "--weights"), ("om", "--dumps"), ("accuracy", "--dumps")}
    only_om = resolve(markexpr="om", given_options=["onnx", "dumps", "device_id"])
    assert {(r.gate, tuple(sorted(r.subjects)), r.why) for r in only_om} == {
        ("om", ("dumps", "om"), "-m 'om'"), ("om", ("dumps",), "--dumps"), ("om", ("om",), "--device-id")}


def test_pinned_gates_are_required_even_when_nothing_selects_them() -> None:
    reqs = resolve(markexpr="parity", given_options=[], require_option=["om"], require_thresholds=["accuracy"])
    pinned = {r.gate: r for r in reqs if r.always}
    assert set(pinned) == {"om", "accuracy"} and pinned["accuracy"].why == "thresholds [certification] require"
    gates = judge_gates(reqs, [passed("parity", "onnx")], {"parity": [TestOutcome("t", "passed")]})
    assert gates["parity"].state == "PASS" and not gates["parity"].breaks_run
    assert gates["om"].breaks_run and gates["om"].reason == "no test of this gate was selected"
    assert gates["accuracy"].breaks_run


def _absent(gate: str, test: str, reason: str) -> Verdict:
    """What the report records when a check could not start (a fixture raised NotJudged)."""
    return not_judged(gate, test, ABSENT, reason)


def test_a_required_gate_whose_tests_all_skipped_breaks_the_run() -> None:
    reqs = resolve(markexpr="om", given_options=[])
    tests = {"om": [TestOutcome("a", "skipped", "Skipped: no Ascend om to judge"),
                    TestOutcome("b", "skipped", "Skipped: no Ascend om to judge")]}
    verdicts = [_absent("om", "a", "no Ascend om to judge"), _absent("om", "b", "no Ascend om to judge")]
    gate = judge_gates(reqs, verdicts, tests)["om"]
    assert gate.state == "NOT JUDGED" and gate.breaks_run and gate.reason == "no Ascend om to judge"
    assert gate.line() == "om        NOT JUDGED (required: -m 'om'): no Ascend om to judge"


def test_the_same_skips_without_a_requirement_pass_and_say_so() -> None:
    tests = {"om": [TestOutcome("a", "skipped", "Skipped: no Ascend om to judge")]}
    gate = judge_gates([], [_absent("om", "a", "no Ascend om to judge")], tests)["om"]
    assert not gate.breaks_run and gate.line() == "om        not judged: no Ascend om to judge"


def test_an_input_names_exactly_what_must_be_judged() -> None:
    """-m om --dumps D on a host that can run an om: the live om passing does not judge the dumps."""
    reqs = resolve(markexpr="om", given_options=["dumps"])
    verdicts = [passed("om", "om"), not_judged("om", "dumps", "parity", "dumps unreadable")]
    gate = judge_gates(reqs, verdicts, {"om": [TestOutcome("a", "passed"), TestOutcome("b", "skipped", "x")]})["om"]
    assert gate.state == "PASS" and gate.breaks_run and gate.unjudged == ("dumps",)
    assert gate.reason == "dumps unreadable" and "NOT JUDGED [dumps]" in gate.line()


def test_non_core_verdicts_do_not_judge_a_gate() -> None:
    """OpenVINO and the ONNX structure check are reported, but parity is ONNX Runtime vs PyTorch."""
    assert CORE_SUBJECTS["parity"] == frozenset({"onnx"})
    reqs = [Requirement("parity", CORE_SUBJECTS["parity"], "--onnx")]
    verdicts = [passed("parity", "onnx-structure"), passed("parity", "openvino-f32"),
                not_judged("parity", "onnx", "parity", "no --weights")]
    gate = judge_gates(reqs, verdicts, {"parity": [TestOutcome("x", "passed")]})["parity"]
    assert gate.breaks_run and gate.reason == "no --weights"


def test_a_failure_is_a_failure_whatever_was_required() -> None:
    failed = Verdict("accuracy", "onnxruntime", "accuracy", State.FAILED, "s", ("below",))
    gate = judge_gates([], [failed], {"accuracy": [TestOutcome("t", "failed", "below")]})["accuracy"]
    assert gate.state == "FAIL" and not gate.breaks_run
    errored = judge_gates([], [], {"perf": [TestOutcome("t", "error", "ToolError")]})["perf"]
    assert errored.state == "FAIL"


def test_gate_verdicts_are_plain_data() -> None:
    reqs = resolve(markexpr="perf", given_options=[])
    d = judge_gates(reqs, [], {"perf": [TestOutcome("t", "skipped", "disabled")]})["perf"].as_dict()
    assert d["verdict"] == "NOT JUDGED" and d["breaks_run"] and d["required_by"] == ["-m 'perf'"]
    assert d["tests"] == [{"test": "t", "outcome": "skipped", "message": "disabled"}]


def test_not_judged_has_one_way_in() -> None:
    """Fixtures raise NotJudged (the report turns it into a not-judged verdict per gate); tests judge
    through verdicts. Neither calls pytest.skip itself."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    offenders = [f"{p.relative_to(repo)}:{i}" for folder in ("fixtures", "acceptance") for p in (repo / folder).glob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "pytest.skip(" in line and p.name != "report.py"]
    assert not offenders, offenders
