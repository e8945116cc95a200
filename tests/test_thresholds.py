"""intrada.gate.thresholds: the shipped lib/intrada/data/thresholds.toml (read independently with tomllib and
compared with the spec where the spec gives the number) and issue 6's malformed files, each a
ThresholdsError with a pinned message; with_overrides round-trips."""
from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Callable

import pytest

from intrada.core.errors import ThresholdsError
from intrada.gate.thresholds import DEFAULT_PATH, SCHEMA, load, with_overrides

SHIPPED = Path(__file__).resolve().parents[1] / "lib" / "intrada" / "data" / "thresholds.toml"
TEXT = SHIPPED.read_text(encoding="utf-8")


def _entry_line(section: str, key: str) -> str:
    """The shipped file's line for section.key (the file is one inline table per line)."""
    body = TEXT.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    (line,) = [ln for ln in body.splitlines() if ln.startswith(f"{key} = ")]
    return line


def _set_value(section: str, key: str, value_toml: str) -> str:
    line = _entry_line(section, key)
    new = re.sub(r"value = [^,]+,", f"value = {value_toml},", line, count=1)
    assert new != line
    return TEXT.replace(line, new)


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    def w(text: str) -> Path:
        p = tmp_path / "thresholds.toml"
        p.write_text(text, encoding="utf-8")
        return p

    return w


# --- the shipped file --------------------------------------------------------------------------------


def test_default_path_is_the_shipped_file() -> None:
    assert DEFAULT_PATH == SHIPPED


def test_shipped_file_is_declared_package_data() -> None:
    # A non-editable install copies only declared package data; without it load() finds nothing.
    pyproject = tomllib.loads((SHIPPED.parents[3] / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["tool"]["setuptools"]["package-data"]["intrada"]
    assert SHIPPED.relative_to(SHIPPED.parents[1]).as_posix() in declared


def test_shipped_file_every_entry_has_a_value_and_a_source() -> None:
    raw = tomllib.loads(TEXT)  # independent of the loader
    for section, keys in SCHEMA.items():
        # every key, except optional ones the shipped file leaves out ([om] max_ratio_to_fp16_prediction: off)
        assert set(raw[section]) == {k for k, (_, required) in keys.items() if required or k in raw[section]}, section
        assert set(raw[section]) <= set(keys), section
        for key, entry in raw[section].items():
            assert set(entry) == {"value", "source"}, f"{section}.{key}"
            assert isinstance(entry["source"], str) and len(entry["source"].strip()) >= 10, f"{section}.{key}"
    assert raw["devices"] and all(d["source"].strip() for d in raw["devices"])
    t = load()
    for section in SCHEMA:
        for key in raw[section]:
            assert t.get(section, key) == raw[section][key]["value"]
            assert t.source(section, key) == raw[section][key]["source"]


def test_shipped_values_that_the_spec_fixes() -> None:
    t = load(SHIPPED)
    assert t.get("accuracy", "reference_miou") == 47.0  # upstream README, "Ours + entropy normalization"
    assert t.get("accuracy", "full_split_images") == 500  # Cityscapes val
    assert t.get("accuracy", "relative_tolerance") == 0.01  # model-zoo "within 1%"
    assert t.get("accuracy", "allow_subset") is False
    # msquickcmp MONITOR_THRESHOLD (Ascend/msit msit/components/debug/compare/msquickcmp/net_compare/analyser.py:34,
    # at 0f0957619^, before the debug component was removed)
    assert t.get("om", "min_cosine") == 0.99
    assert t.get("om", "max_rel_euclidean") == 0.05
    assert t.get("om", "max_kl") == 0.005
    # seed README device numbers (section 5)
    p310p = t.device_target("ascend310p3", 1)  # case-insensitive device name
    assert p310p is not None and p310p.min_fps == pytest.approx(46.2538, abs=0.01) and p310p.unit == "card"
    p310 = t.device_target("Ascend310", 4)
    assert p310 is not None and p310.min_fps == 28.792 and p310.chips_per_card == 4
    t4 = t.device_target("T4", 32)
    assert t4 is not None and t4.min_fps == 28.654
    assert t.device_target("T4", 1) is None
    d = t.as_dict()
    assert d["path"] == str(SHIPPED) and d["parity"]["images"]["source"] == t.source("parity", "images")


# --- malformed files --------------------------------------------------------------------------------------


def _drop_line(section: str, key: str) -> str:
    return TEXT.replace(_entry_line(section, key) + "\n", "")


def _drop_section(section: str) -> str:
    head, rest = TEXT.split(f"[{section}]\n", 1)
    return head + "\n[" + rest.split("\n[", 1)[1] if "\n[" in rest else head


BAD: dict[str, tuple[Callable[[], str], str]] = {
    "unknown_section": (lambda: TEXT + '\n[acuracy]\nmin_miou = { value = 1, source = "typo" }\n',
                        r"unknown section \[acuracy\]\. Hint: known sections: accuracy, certification, om, openvino, parity, perf"),
    "unknown_key": (lambda: TEXT.replace("[accuracy]\n", '[accuracy]\nmin_mIoU = { value = 1.0, source = "x" }\n'),
                    r"unknown key accuracy\.min_mIoU\. Hint: known keys in \[accuracy\]: min_miou, "),
    "string_for_number": (lambda: _set_value("accuracy", "min_miou", '"47"'),
                          r"accuracy\.min_miou must be int or float, got str '47'"),
    "bool_for_number": (lambda: _set_value("accuracy", "min_miou", "true"),
                        r"accuracy\.min_miou must be int or float, got bool True"),
    "bool_for_int": (lambda: _set_value("parity", "images", "false"), r"parity\.images must be int, got bool False"),
    "float_for_int": (lambda: _set_value("parity", "images", "2.0"), r"parity\.images must be int, got float 2\.0"),
    "int_for_bool": (lambda: _set_value("accuracy", "allow_subset", "1"),
                     r"accuracy\.allow_subset must be bool, got int 1"),
    "missing_entry": (lambda: _drop_line("om", "max_kl"),
                      r"missing required entry om\.max_kl\. Hint: add max_kl = \{ value = \.\.\., source = "),
    "missing_section": (lambda: _drop_section("perf"), r"missing section \[perf\]"),
    "bare_value": (lambda: TEXT.replace(_entry_line("om", "min_cosine"), "min_cosine = 0.99"),
                   r"om\.min_cosine must be \{ value = \.\.\., source = \"\.\.\.\" \}, got 0\.99\. Hint: every "
                   r"threshold names where its number comes from"),
    "no_source": (lambda: TEXT.replace(_entry_line("om", "min_cosine"), "min_cosine = { value = 0.99 }"),
                  r"om\.min_cosine must be \{ value = \.\.\., source = \"\.\.\.\" \}, got \{'value': 0\.99\}"),
    "extra_field": (lambda: TEXT.replace(_entry_line("om", "min_cosine"),
                                         'min_cosine = { value = 0.99, source = "s", unit = "x" }'),
                    r"om\.min_cosine must be \{ value = \.\.\., source = "),
    "source_not_str": (lambda: TEXT.replace(_entry_line("om", "min_cosine"), "min_cosine = { value = 0.99, source = 1 }"),
                       r"om\.min_cosine\.source must be str, got int 1"),
    "empty_source": (lambda: TEXT.replace(_entry_line("om", "min_cosine"), 'min_cosine = { value = 0.99, source = "" }'),
                     r"om\.min_cosine\.source "),
    "fraction_above_1": (lambda: _set_value("parity", "min_cosine", "1.5"),
                         r"parity\.min_cosine = 1\.5 is outside 0\.\.1\. Hint: it is a fraction"),
    "fraction_negative": (lambda: _set_value("om", "min_argmax_agreement", "-0.1"),
                          r"om\.min_argmax_agreement = -0\.1 is outside 0\.\.1"),
    "fraction_nan": (lambda: _set_value("openvino", "min_cosine", "nan"), r"openvino\.min_cosine = nan is outside 0\.\.1"),
    "roofline_fraction": (lambda: _set_value("perf", "cpu_min_fraction_of_roofline", "30"),
                          r"perf\.cpu_min_fraction_of_roofline = 30 is outside 0\.\.1"),
    "miou_percent": (lambda: _set_value("accuracy", "min_miou", "470.0"),
                     r"accuracy\.min_miou = 470\.0 is outside 0\.\.100\. Hint: mIoU is in percent"),
    "zero_images": (lambda: _set_value("parity", "images", "0"),
                    r"parity\.images, om\.onnx_sample_images, om\.preflight_images and perf\.rounds must be >= 1"),
    "zero_sample": (lambda: _set_value("om", "onnx_sample_images", "0"),
                    r"parity\.images, om\.onnx_sample_images, om\.preflight_images and perf\.rounds must be >= 1"),
    "zero_preflight": (lambda: _set_value("om", "preflight_images", "0"),
                       r"parity\.images, om\.onnx_sample_images, om\.preflight_images and perf\.rounds must be >= 1"),
    "device_unknown_key": (lambda: TEXT + '\n[[devices]]\ndevice = "X"\nbatch_size = 1\nmin_fps = 1.0\nunit = "card"\n'
                                          'source = "s"\nfps = 3\n', r"unknown key devices\[3\]\.fps"),
    "device_missing_key": (lambda: TEXT + '\n[[devices]]\ndevice = "X"\nbatch_size = 1\nunit = "card"\nsource = "s"\n',
                           r"missing devices\[3\]\.min_fps"),
    "device_bad_unit": (lambda: TEXT + '\n[[devices]]\ndevice = "X"\nbatch_size = 1\nmin_fps = 1.0\nunit = "board"\n'
                                       'source = "s"\n', r"devices\[3\]\.unit is 'board'\. Hint: use \"card\" or \"chip\""),
    "device_wrong_type": (lambda: TEXT + '\n[[devices]]\ndevice = "X"\nbatch_size = "1"\nmin_fps = 1.0\nunit = "card"\n'
                                         'source = "s"\n', r"devices\[3\]\.batch_size must be int, got str '1'"),
    "bad_toml": (lambda: TEXT.replace("[parity]", "[parity", 1), r"not valid TOML \(.*line \d+.*\)\. Hint: fix the syntax"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_file(write: Callable[[str], Path], case: str) -> None:
    text = BAD[case][0]()
    assert text != TEXT
    path = write(text)
    with pytest.raises(ThresholdsError, match=BAD[case][1]) as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"nope\.toml: thresholds file not found\. Hint: pass --thresholds FILE"):
        load(tmp_path / "nope.toml")


def test_empty_file(write: Callable[[str], Path]) -> None:
    with pytest.raises(ThresholdsError, match=r"missing section \[accuracy\]"):
        load(write(""))


# --- with_overrides --------------------------------------------------------------------------------------


def test_with_overrides_round_trips_unchanged(write: Callable[[str], Path]) -> None:
    base = load(SHIPPED)
    copy = load(write(with_overrides(SHIPPED, {})))
    for section, keys in SCHEMA.items():
        assert set(copy.section(section)) == set(base.section(section)), section
        for key in base.section(section):
            assert copy.get(section, key) == base.get(section, key) and type(copy.get(section, key)) is type(
                base.get(section, key)), f"{section}.{key}"
            assert copy.source(section, key) == base.source(section, key)
    assert copy.devices == base.devices


def test_with_overrides_replaces_value_and_source(write: Callable[[str], Path]) -> None:
    text = with_overrides(SHIPPED, {"accuracy.min_miou": (30.5, 'demo: measured "30.9"'),
                                    "accuracy.allow_subset": (True, "demo split")},
                          header="demo thresholds\nsecond line")
    assert text.startswith("# demo thresholds\n# second line\n")
    t = load(write(text))
    assert t.get("accuracy", "min_miou") == 30.5 and t.source("accuracy", "min_miou") == 'demo: measured "30.9"'
    assert t.get("accuracy", "allow_subset") is True
    base = load(SHIPPED)
    assert t.section("parity") == base.section("parity") and t.section("om") == base.section("om")


@pytest.mark.parametrize(("override", "pattern"), [
    ({"parity.min_cosine": (2.0, "x")}, r"parity\.min_cosine = 2\.0 is outside 0\.\.1"),
    ({"parity.min_cosin": (0.9, "x")}, r"unknown key parity\.min_cosin"),
    ({"accuracy.min_miou": (True, "x")}, r"accuracy\.min_miou must be int or float, got bool True"),
])
def test_with_overrides_validates(override: dict, pattern: str) -> None:
    with pytest.raises(ThresholdsError, match=pattern):
        with_overrides(SHIPPED, override)


def test_nan_override_text_is_rejected_not_written() -> None:
    with pytest.raises(ThresholdsError):
        with_overrides(SHIPPED, {"om.min_cosine": (math.nan, "x")})


@pytest.mark.parametrize(("section", "key", "value"), [
    ("parity", "max_abs_over_scale", "inf"), ("openvino", "max_abs_over_scale", "inf"),
    ("om", "max_rel_euclidean", "inf"), ("om", "max_kl", "-0.1"), ("om", "max_miou_delta", "inf"),
])
def test_upper_limits_must_be_finite_and_non_negative(write: Callable[[str], Path], section: str, key: str,
                                                      value: str) -> None:
    """`max_* = inf` would make a gate pass whatever it measures (a disabled gate that still says
    PASS); a negative one makes it fail whatever it measures."""
    assert 0 <= load(SHIPPED).get(section, key) < math.inf
    with pytest.raises(ThresholdsError, match=rf"{section}\.{key}"):
        load(write(_set_value(section, key, value)))


def test_certification_pins_the_required_gates(tmp_path) -> None:
    from intrada.gate.thresholds import load

    assert load().required_gates == ()  # the shipped file requires nothing: a CPU machine can pass
    path = tmp_path / "zoo.toml"
    path.write_text(TEXT.replace('require = { value = []', 'require = { value = ["parity", "om"]'))
    assert load(path).required_gates == ("parity", "om")
    path.write_text(TEXT.replace('require = { value = []', 'require = { value = ["parity", "omm"]'))
    with pytest.raises(ThresholdsError, match=r"certification\.require: unknown gate 'omm'; known: parity, "
                                              r"accuracy, perf, om"):
        load(path)
    # an older file without the section still loads (nothing required)
    path.write_text(TEXT.split("[certification]")[0] + "[[devices]]" + TEXT.split("[[devices]]", 1)[1])
    assert load(path).required_gates == ()


def test_thresholds_hand_out_ready_limits() -> None:
    from intrada.gate.thresholds import load

    t = load()
    assert t.parity_limits().max_abs_over_scale == t.get("parity", "max_abs_over_scale")
    assert t.om_limits().max_kl == t.get("om", "max_kl") and t.om_limits().max_abs_over_scale is None
    assert t.openvino_limits("bf16").min_cosine is None
    assert t.openvino_limits("bf16").min_argmax_agreement == t.get("openvino", "bf16_min_argmax_agreement")
    # fp32 runtimes: noise_factor x the measured floor inside their fixed limits, one derivation for both
    floor = 1.45e-6
    assert t.derived_limits(floor).limits.max_abs_over_scale == pytest.approx(t.get("parity", "noise_factor") * floor)
    assert t.openvino_limits("f32", floor).max_abs_over_scale == t.derived_limits(floor).limits.max_abs_over_scale
    assert t.openvino_limits("f32", 1.0).max_abs_over_scale == t.get("openvino", "max_abs_over_scale")  # outer
    assert t.openvino_limits("f32").max_abs_over_scale == t.get("openvino", "max_abs_over_scale")
    acc = t.accuracy_limits()
    assert (acc.min_miou, acc.full_split_images, acc.allow_subset) == (47.0, 500, False)
