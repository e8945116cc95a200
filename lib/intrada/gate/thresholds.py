"""Thresholds: one TOML file, every value with its source.

Every entry is an inline table ``name = { value = ..., source = "..." }``. The schema below is the
whole vocabulary: unknown keys, wrong types and missing required entries are errors, because a
typo in a gate's threshold silently disabling it is exactly what a gate must not allow.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ..parity.compare import Limits
from ..parity.noise import DerivedLimits, derive_limits
from ..core.errors import ThresholdsError
from .requirements import parse_gate_list
from .verdict import GATES, AccuracyLimits

# Shipped as package data (pyproject: [tool.setuptools.package-data]), so an installed, non-editable
# package finds it too. Wheels install unpacked, so the resource is a real file: it is hashed for the
# cache key, copied by `intrada demo`, and named in messages. Reviewers edit this one file.
DEFAULT_PATH = Path(str(resources.files("intrada").joinpath("data", "thresholds.toml")))

# section -> key -> (type, required)
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "accuracy": {
        "min_miou": ((int, float), True),
        "reference_miou": ((int, float), True),
        "relative_tolerance": ((int, float), True),
        "allow_subset": (bool, True),
        "full_split_images": (int, True),
    },
    "parity": {
        "images": (int, True),
        "max_abs_over_scale": ((int, float), True),
        "min_cosine": ((int, float), True),
        "min_argmax_agreement": ((int, float), True),
        # max_abs_over_scale above is the outer bound; the gate applies
        # min(it, noise_factor * max(measured float32 noise floor, noise_min_floor)) (intrada.parity.noise)
        "noise_factor": ((int, float), True),
        "noise_min_floor": ((int, float), True),
    },
    "om": {
        "min_cosine": ((int, float), True),
        "max_rel_euclidean": ((int, float), True),
        "max_kl": ((int, float), True),
        "min_argmax_agreement": ((int, float), True),
        "max_miou_delta": ((int, float), True),
        "onnx_sample_images": (int, True),
        # the om pre-flight's images, a spread subset of the om sample (intrada.gate.plan); absent: the whole sample
        "preflight_images": (int, False),
        # off unless set: the om's rel. Euclidean distance over the force_fp16 prediction's (intrada.preflight)
        "max_ratio_to_fp16_prediction": ((int, float), False),
    },
    "openvino": {
        "min_cosine": ((int, float), True),
        "max_abs_over_scale": ((int, float), True),
        "min_argmax_agreement": ((int, float), True),
        "bf16_min_argmax_agreement": ((int, float), True),
    },
    "perf": {
        "cpu_min_fraction_of_roofline": ((int, float), True),
        "rounds": (int, True),
    },
    "certification": {
        "require": (list, False),
    },
}
# sections that may be left out of a thresholds file (older files, the demo's own)
OPTIONAL_SECTIONS = ("certification",)
DEVICE_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "device": (str, True),  # e.g. "Ascend310P3", "Ascend310", "T4"
    "batch_size": (int, True),
    "min_fps": ((int, float), True),
    "unit": (str, True),  # "card" (what the seed reports) or "chip"
    "chips_per_card": (int, False),
    "source": (str, True),
}


@dataclass(frozen=True)
class DeviceTarget:
    device: str
    batch_size: int
    min_fps: float
    unit: str
    chips_per_card: int
    source: str


class Thresholds:
    """Read-only view: ``t.get("accuracy", "min_miou")`` and ``t.source(...)``."""

    def __init__(self, path: Path, values: dict[str, dict[str, Any]], sources: dict[str, dict[str, str]],
                 devices: list[DeviceTarget], origin: str | None = None) -> None:
        self.path = path
        self.origin = origin or str(path)  # what to call them in messages and reports
        self._values = values
        self._sources = sources
        self.devices = devices

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def source(self, section: str, key: str) -> str:
        return self._sources[section][key]

    def section(self, section: str) -> dict[str, Any]:
        return dict(self._values[section])

    # -- ready limits for the judges (intrada.gate.verdict); no caller rebuilds them from keys ------------
    def accuracy_limits(self) -> AccuracyLimits:
        a = self._values["accuracy"]
        return AccuracyLimits(float(a["min_miou"]), float(a["reference_miou"]), float(a["relative_tolerance"]),
                              bool(a["allow_subset"]), int(a["full_split_images"]))

    def parity_limits(self) -> Limits:
        p = self._values["parity"]
        return Limits(max_abs_over_scale=p["max_abs_over_scale"], min_cosine=p["min_cosine"],
                      min_argmax_agreement=p["min_argmax_agreement"])

    def om_limits(self) -> Limits:
        o = self._values["om"]
        return Limits(min_cosine=o["min_cosine"], max_rel_euclidean=o["max_rel_euclidean"], max_kl=o["max_kl"],
                      min_argmax_agreement=o["min_argmax_agreement"])

    def derived_limits(self, floor: float, outer: Limits | None = None) -> DerivedLimits:
        """The limits an fp32 runtime is judged by: ``noise_factor`` x the measured float32 noise
        floor (at least ``noise_min_floor``), inside ``outer`` (default: the fixed [parity] limits).
        The one derivation (intrada.parity.noise.derive_limits) every fp32 comparison uses."""
        p = self._values["parity"]
        return derive_limits(floor, factor=float(p["noise_factor"]), outer=outer or self.parity_limits(),
                             minimum=float(p["noise_min_floor"]))

    def om_sample(self) -> dict[str, int | None]:
        """The run plan's image counts (intrada.gate.plan.make_plan's keywords): ``sample_images``, the
        om sample ([om] onnx_sample_images), and ``preflight_images``, the pre-flight's share of it
        ([om] preflight_images; None when the file leaves it out: the whole sample)."""
        o = self._values["om"]
        return {"sample_images": int(o["onnx_sample_images"]),
                "preflight_images": None if "preflight_images" not in o else int(o["preflight_images"])}

    def fp16_ratio_gate(self) -> tuple[float | None, str | None]:
        """[om] max_ratio_to_fp16_prediction and its source; (None, None) when the file leaves it out
        (the shipped file does: no device has calibrated it yet)."""
        o = self._values["om"]
        if "max_ratio_to_fp16_prediction" not in o:
            return None, None
        return float(o["max_ratio_to_fp16_prediction"]), self._sources["om"]["max_ratio_to_fp16_prediction"]

    def openvino_limits(self, precision: str, floor: float | None = None) -> Limits:
        """bf16 (8 mantissa bits): the main-head argmax only. fp32: the [openvino] limits, and within
        them the limits derived from the measured noise ``floor`` when it is given."""
        o = self._values["openvino"]
        if precision == "bf16":
            return Limits(min_argmax_agreement=o["bf16_min_argmax_agreement"])
        fixed = Limits(max_abs_over_scale=o["max_abs_over_scale"], min_cosine=o["min_cosine"],
                       min_argmax_agreement=o["min_argmax_agreement"])
        return fixed if floor is None else self.derived_limits(floor, outer=fixed).limits

    @property
    def required_gates(self) -> tuple[str, ...]:
        """[certification] require: the gates every run with this file must judge."""
        return tuple(self._values.get("certification", {}).get("require", ()))

    def device_target(self, device: str, batch_size: int) -> DeviceTarget | None:
        for d in self.devices:
            if d.device.lower() == device.lower() and d.batch_size == batch_size:
                return d
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "origin": self.origin,
                **{s: {k: {"value": v, "source": self._sources[s][k]} for k, v in sec.items()}
                   for s, sec in self._values.items()},
                "devices": [d.__dict__ for d in self.devices]}


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def _check_type(path: Path, where: str, value: Any, t: type | tuple[type, ...]) -> None:
    # bool is an int subclass: `min_miou = true` must not pass as a number.
    if isinstance(value, bool) and t is not bool:
        ok = False
    else:
        ok = isinstance(value, t)
    if not ok:
        raise ThresholdsError(path, f"{where} must be {_type_name(t)}, got {type(value).__name__} {value!r}",
                              "fix the value's type")


def parse(path: Path, data: Mapping[str, Any], *, origin: str | None = None) -> Thresholds:
    values: dict[str, dict[str, Any]] = {}
    sources: dict[str, dict[str, str]] = {}
    unknown_sections = [s for s in data if s not in SCHEMA and s != "devices" and s != "meta"]
    if unknown_sections:
        raise ThresholdsError(path, f"unknown section [{unknown_sections[0]}]",
                              f"known sections: {', '.join(sorted(SCHEMA))}, devices, meta")
    for section, keys in SCHEMA.items():
        table = data.get(section)
        if table is None and section in OPTIONAL_SECTIONS:
            table = {}
        if not isinstance(table, Mapping):
            raise ThresholdsError(path, f"missing section [{section}]", f"copy it from {DEFAULT_PATH}")
        unknown = [k for k in table if k not in keys]
        if unknown:
            raise ThresholdsError(path, f"unknown key {section}.{unknown[0]}",
                                  f"known keys in [{section}]: {', '.join(keys)}")
        values[section], sources[section] = {}, {}
        for key, (t, required) in keys.items():
            if key not in table:
                if required:
                    raise ThresholdsError(path, f"missing required entry {section}.{key}",
                                          f"add {key} = {{ value = ..., source = \"...\" }}")
                continue
            entry = table[key]
            if not isinstance(entry, Mapping) or set(entry) != {"value", "source"}:
                raise ThresholdsError(path, f"{section}.{key} must be {{ value = ..., source = \"...\" }}, got {entry!r}",
                                      "every threshold names where its number comes from")
            _check_type(path, f"{section}.{key}", entry["value"], t)
            _check_type(path, f"{section}.{key}.source", entry["source"], str)
            if not entry["source"].strip():
                raise ThresholdsError(path, f"{section}.{key}.source is empty", "say where the number comes from")
            values[section][key] = entry["value"]
            sources[section][key] = entry["source"]
    devices = []
    for i, dev in enumerate(data.get("devices", [])):
        if not isinstance(dev, Mapping):
            raise ThresholdsError(path, f"devices[{i}] must be a table", "use [[devices]] entries")
        unknown = [k for k in dev if k not in DEVICE_KEYS]
        if unknown:
            raise ThresholdsError(path, f"unknown key devices[{i}].{unknown[0]}", f"known: {', '.join(DEVICE_KEYS)}")
        for key, (t, required) in DEVICE_KEYS.items():
            if key not in dev:
                if required:
                    raise ThresholdsError(path, f"missing devices[{i}].{key}", "each device target needs it")
                continue
            _check_type(path, f"devices[{i}].{key}", dev[key], t)
        if dev["unit"] not in ("card", "chip"):
            raise ThresholdsError(path, f"devices[{i}].unit is {dev['unit']!r}", "use \"card\" or \"chip\"")
        devices.append(DeviceTarget(dev["device"], dev["batch_size"], float(dev["min_fps"]), dev["unit"],
                                    dev.get("chips_per_card", 1), dev["source"]))
    _check_ranges(path, values)
    require = values.get("certification", {}).get("require", [])
    if not all(isinstance(g, str) for g in require):
        raise ThresholdsError(path, f"certification.require must be a list of gate names, got {require!r}",
                              f"use some of {', '.join(GATES)}")
    try:
        parse_gate_list(",".join(require), "certification.require")
    except ValueError as exc:
        raise ThresholdsError(path, str(exc), f"use some of {', '.join(GATES)}") from None
    return Thresholds(path, values, sources, devices, origin)


def _check_ranges(path: Path, v: dict[str, dict[str, Any]]) -> None:
    # An infinite upper limit passes whatever is measured; a negative one always fails.
    for section, keys in SCHEMA.items():
        for key in keys:
            if key.startswith("max_") and key in v[section] and not 0.0 <= v[section][key] < math.inf:
                raise ThresholdsError(path, f"{section}.{key} = {v[section][key]} must be finite and >= 0",
                                      "an infinite limit disables the check")
    for section, key in (("parity", "min_cosine"), ("parity", "min_argmax_agreement"), ("om", "min_cosine"),
                         ("om", "min_argmax_agreement"), ("openvino", "min_cosine"),
                         ("openvino", "min_argmax_agreement"), ("openvino", "bf16_min_argmax_agreement"),
                         ("perf", "cpu_min_fraction_of_roofline")):
        if not 0.0 <= v[section][key] <= 1.0:
            raise ThresholdsError(path, f"{section}.{key} = {v[section][key]} is outside 0..1", "it is a fraction")
    factor, floor = v["parity"]["noise_factor"], v["parity"]["noise_min_floor"]
    if not 1.0 <= factor < math.inf:
        raise ThresholdsError(path, f"parity.noise_factor = {factor} must be finite and >= 1",
                              "a limit below the measured noise fails faithful exports")
    ratio = v["om"].get("max_ratio_to_fp16_prediction")
    if ratio is not None and not 1.0 <= ratio < math.inf:
        raise ThresholdsError(path, f"om.max_ratio_to_fp16_prediction = {ratio} must be finite and >= 1",
                              "an om that rounds exactly as predicted has ratio 1; leave the key out to turn the "
                              "check off")
    if not 0.0 < floor < math.inf:
        raise ThresholdsError(path, f"parity.noise_min_floor = {floor} must be finite and > 0",
                              "use one float32 ulp, 1.1920929e-07")
    if not 0.0 <= v["accuracy"]["min_miou"] <= 100.0:
        raise ThresholdsError(path, f"accuracy.min_miou = {v['accuracy']['min_miou']} is outside 0..100",
                              "mIoU is in percent")
    if v["parity"]["images"] < 1 or v["perf"]["rounds"] < 1 or v["om"]["onnx_sample_images"] < 1 \
            or v["om"].get("preflight_images", 1) < 1:
        raise ThresholdsError(path, "parity.images, om.onnx_sample_images, om.preflight_images and perf.rounds must "
                                    "be >= 1",
                              "use a positive count")


def load(path: str | os.PathLike[str] | None = None) -> Thresholds:
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ThresholdsError(path, "thresholds file not found", f"pass --thresholds FILE or omit it for {DEFAULT_PATH.name}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(path, f"not valid TOML ({exc})", "fix the syntax") from None
    return parse(path, data)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def with_overrides(base: Path, overrides: Mapping[str, tuple[Any, str]], header: str = "") -> str:
    """TOML text of ``base`` with ``{"section.key": (value, source)}`` replaced; validated."""
    with open(base, "rb") as f:
        data = tomllib.load(f)
    for dotted, (value, source) in overrides.items():
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})[key] = {"value": value, "source": source}
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for section in SCHEMA:
        if section in OPTIONAL_SECTIONS and not data.get(section):
            continue
        lines.append(f"[{section}]")
        for key, entry in data[section].items():
            lines.append(f"{key} = {{ value = {_toml_value(entry['value'])}, source = {_toml_value(entry['source'])} }}")
        lines.append("")
    for dev in data.get("devices", []):
        lines.append("[[devices]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in dev.items()]
        lines.append("")
    text = "\n".join(lines)
    parse(base, tomllib.loads(text))
    return text
