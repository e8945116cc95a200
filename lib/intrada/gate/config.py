"""The gate's configuration: every option checked and resolved once, into one frozen object.

Pure: option values in (as pytest parsed them), :class:`GateConfig` out, or :class:`ConfigError`
with the one line a user needs. The pytest plugin (fixtures/options.py) registers the options and
turns a ConfigError into a usage error (exit code 4, no test runs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.errors import IntradaError, ThresholdsError
from ..core.fs import not_writable, os_reason
from ..model.network import DEEPLABV2, Network, network_from_env
from .requirements import parse_gate_list
from .thresholds import Thresholds, load

DEFAULT_BATCH_SIZES = "1,2"  # CPU default; on a device pass --batch-sizes 1,4,8,16,32,64


class ConfigError(ValueError):
    """A bad option: the message is the whole user-facing line."""


@dataclass(frozen=True)
class GateConfig:
    """Everything the options decided, resolved once in pytest_configure."""

    weights: Path | None
    onnx: Path | None
    cityscapes: Path | None
    dumps: Path | None
    dump_format: str | None  # None = detect
    batch_sizes: tuple[int, ...]
    max_images: int | None
    thresholds_file: Path | None  # --thresholds
    thresholds: Thresholds  # what this run judges by (thresholds_for: the one rule)
    cache_dir: Path
    report: Path | None
    om: Path | None
    soc_version: str | None
    device_id: int
    om_runner: str  # auto or one of intrada.ascend.runners.RUNNERS
    rootdir: Path
    given: frozenset[str] = field(default_factory=frozenset)  # options the user passed (requirements)
    require: tuple[str, ...] = ()  # --require
    onnx_accuracy: str = "auto"  # auto | full | sample
    network: Network = DEEPLABV2  # the architecture checkpoints are loaded into (intrada.model.network)

    @property
    def dynamic_batch(self) -> bool:
        """The ONNX must take a dynamic batch: more than one batch size is judged."""
        return max(self.batch_sizes) > 1

    @property
    def demo_data(self) -> bool:
        """No --cityscapes: the embedded synthetic split is the data."""
        return self.cityscapes is None

    @property
    def demo_model(self) -> bool:
        """The embedded demo checkpoint is the model: only when no model and no dataset were given."""
        return _demo_model(self.weights, self.onnx, self.cityscapes)

    def as_dict(self) -> dict[str, Any]:
        out = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, (tuple, frozenset)) else v)
               for k, v in self.__dict__.items()}
        return {**out, "thresholds": self.thresholds.origin, "network": self.network.describe()}


def _demo_model(weights: Path | None, onnx: Path | None, cityscapes: Path | None) -> bool:
    return cityscapes is None and weights is None and onnx is None


def thresholds_for(option: Path | None, demo_model: bool) -> Thresholds:
    """The thresholds a run judges by: ``--thresholds``; else the demo's own file when the embedded
    demo model is judged; else the shipped file. The one place this is decided."""
    if option is not None:
        return load(option)
    if demo_model:
        from .submission import demo_thresholds

        return demo_thresholds()
    return load(None)


def _path(value: str) -> Path:
    return Path(os.path.expanduser(value)).resolve()


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes {text!r}: expected comma-separated integers, e.g. 1,4,8,16") from None
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: every batch size must be >= 1")
    return tuple(dict.fromkeys(sizes))  # keep order, drop repeats


def _existing(opt: str, value: str | None, *, kind: str) -> Path | None:
    if value is None:
        return None
    path = _path(value)
    ok = path.is_dir() if kind == "dir" else path.is_file() if kind == "file" else path.exists()
    if not ok:
        what = {"dir": "directory", "file": "file"}.get(kind, "file or directory")
        raise ConfigError(f"{opt} {value}: no such {what}")
    return path


def _writable_dir(where: str, path: Path, what: str = "the artifact cache", option: str = "--cache-dir") -> None:
    """The cache dir (and the --report dir) must be a writable directory or creatable. Checked without
    creating anything: every session runs this, also those that never build an artifact (the cache
    turns errors found later, e.g. a full disk, into one-line CacheErrors of the tests that needed it),
    and a report that cannot be written is refused before the run, not after it."""
    probe = str(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)  # also False under a regular file: the walk stops at the file
    if not os.path.isdir(probe):
        problem = f"{probe} is not a directory (Not a directory, ENOTDIR)"
    elif (why := not_writable(probe)) is not None:
        problem = f"{probe} is not writable ({os_reason(why)})"
    else:
        return
    raise ConfigError(f"{where} {path}: cannot create or write {what}: {problem}. "
                      f"Hint: pass {option} DIR to use a writable directory")


def build_config(options: Mapping[str, Any], rootdir: Path, env: Mapping[str, str]) -> GateConfig:
    """The options as pytest parsed them (dest names) -> the frozen config; ConfigError (a usage
    error) for anything wrong, checked before any test runs."""
    def opt(name: str) -> Any:
        return options.get(name)
    given = frozenset(n for n in ("weights", "onnx", "cityscapes", "dumps", "om", "soc_version", "device_id")
                      if opt(n) is not None)
    if opt("om_runner") != "auto":
        given |= {"om_runner"}
    try:
        require = parse_gate_list(opt("require") or "", "--require")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    device_id = opt("device_id")
    if device_id is not None and device_id < 0:
        raise ConfigError(f"--device-id {device_id}: must be >= 0")
    weights = _existing("--weights", opt("weights"), kind="file")
    onnx = _existing("--onnx", opt("onnx"), kind="file")
    cityscapes = _existing("--cityscapes", opt("cityscapes"), kind="dir")
    dumps = _existing("--dumps", opt("dumps"), kind="dir")
    om = _existing("--om", opt("om"), kind="any")
    thresholds = _existing("--thresholds", opt("thresholds"), kind="file")
    if cityscapes is not None and not (weights or onnx or dumps or om):
        raise ConfigError("--cityscapes given without anything to judge: pass --weights, --onnx, --dumps "
                                "and/or --om")
    if opt("dump_format") != "auto" and dumps is None:
        raise ConfigError(f"--dump-format {opt('dump_format')} given without --dumps DIR")
    max_images = opt("max_images")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max-images {max_images}: must be >= 1")
    try:
        limits = thresholds_for(thresholds, _demo_model(weights, onnx, cityscapes))
    except ThresholdsError as exc:
        raise ConfigError(f"--thresholds: {exc}") from None
    try:
        network = network_from_env(env)
    except IntradaError as exc:
        raise ConfigError(str(exc)) from None
    cache = opt("cache_dir") or env.get("INTRADA_CACHE_DIR") or str(rootdir / ".cache" / "intrada")
    _writable_dir("--cache-dir" if opt("cache_dir") else "INTRADA_CACHE_DIR" if env.get("INTRADA_CACHE_DIR")
                  else "cache dir", _path(cache))
    if opt("report"):
        _writable_dir("--report", _path(opt("report")), "the report", "--report")
    return GateConfig(
        weights=weights, onnx=onnx, cityscapes=cityscapes, dumps=dumps,
        dump_format=None if opt("dump_format") == "auto" else opt("dump_format"),
        batch_sizes=_batch_sizes(opt("batch_sizes") or DEFAULT_BATCH_SIZES),
        max_images=max_images, thresholds_file=thresholds, thresholds=limits, cache_dir=_path(cache),
        report=_path(opt("report")) if opt("report") else None, om=om, soc_version=opt("soc_version"),
        device_id=0 if device_id is None else device_id, rootdir=rootdir, given=given, require=require,
        onnx_accuracy=opt("onnx_accuracy"), om_runner=opt("om_runner"), network=network,
    )


def header_lines(cfg: GateConfig, requirements: Sequence[Any], plan: Any) -> list[str]:
    """The effective setup, said before anything runs: versions, inputs with their hashes, the
    thresholds file, the gates that must be judged and the run plan."""
    import numpy
    import onnx
    import onnxruntime
    import torch

    from ..core.hashing import cached_file_sha256

    lines = [f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
             f"numpy {numpy.__version__}, device cpu ({os.cpu_count()} cores)"]
    mode = "embedded demo submission" if cfg.demo_model else ("real split" if not cfg.demo_data else
                                                             "submitted model on the demo split")
    lines.append(f"mode {mode}; batch sizes {','.join(map(str, cfg.batch_sizes))}; max images "
                 f"{cfg.max_images or 'all'}; cache {cfg.cache_dir}")
    for label, path in (("weights", cfg.weights), ("onnx", cfg.onnx)):
        if path is not None:
            lines.append(f"{label} {path} sha256 {cached_file_sha256(path)[:16]}")
    for label, path in (("cityscapes", cfg.cityscapes), ("dumps", cfg.dumps), ("om", cfg.om), ("report", cfg.report)):
        if path is not None:
            lines.append(f"{label} {path}")
    lines.append(f"thresholds {cfg.thresholds.origin}")
    if not cfg.network.certifies:
        lines.append(f"network {cfg.network.name}: {cfg.network.title}, chosen by the environment "
                     f"(INTRADA_NETWORK); the submission's architecture is not what is judged")
    if requirements:
        lines.append("required (a gate that judges nothing fails the run): " + "; ".join(
            f"{r.gate} [{', '.join(sorted(r.subjects))}] by {r.why}" for r in requirements))
    else:
        lines.append("no gate required (pass -m GATE, --require GATES or inputs to require one)")
    return lines + [f"plan: {line}" for line in plan.lines()]
