"""The gate's configuration: option values in, one frozen GateConfig or one usage line out."""
from __future__ import annotations

from pathlib import Path

import pytest

from intrada.gate.config import ConfigError, build_config

DEFAULTS = {"weights": None, "onnx": None, "cityscapes": None, "dumps": None, "dump_format": "auto",
            "batch_sizes": None, "max_images": None, "thresholds": None, "cache_dir": None, "report": None,
            "om": None, "soc_version": None, "device_id": None, "om_runner": "auto", "require": None,
            "onnx_accuracy": "auto"}


def config(tmp_path: Path, **options):
    return build_config({**DEFAULTS, **options}, tmp_path, {})


def test_defaults_are_the_embedded_demo_on_cpu(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert cfg.demo_model and cfg.demo_data and cfg.batch_sizes == (1, 2) and cfg.device_id == 0
    assert cfg.cache_dir == (tmp_path / ".cache" / "intrada").resolve() and cfg.given == frozenset()


def test_what_was_given_is_recorded_for_the_requirements(tmp_path: Path) -> None:
    ckpt = tmp_path / "sub.pth"
    ckpt.write_bytes(b"x")
    cfg = config(tmp_path, weights=str(ckpt), device_id=0, om_runner="ais_bench-cli", require="om,parity")
    assert cfg.given == {"weights", "device_id", "om_runner"} and cfg.require == ("om", "parity")
    assert not cfg.demo_model and cfg.demo_data


@pytest.mark.parametrize("options, message", [
    ({"batch_sizes": "1,x"}, "--batch-sizes '1,x': expected comma-separated integers, e.g. 1,4,8,16"),
    ({"batch_sizes": "0"}, "--batch-sizes '0': every batch size must be >= 1"),
    ({"require": "parity,speed"}, "--require: unknown gate 'speed'; known: parity, accuracy, perf, om"),
    ({"device_id": -1}, "--device-id -1: must be >= 0"),
    ({"max_images": 0}, "--max-images 0: must be >= 1"),
    ({"weights": "/no/such.pth"}, "--weights /no/such.pth: no such file"),
    ({"dump_format": "msame"}, "--dump-format msame given without --dumps DIR"),
])
def test_bad_options_are_one_line(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, **options)
    assert str(err.value) == message


def test_cityscapes_alone_judges_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--cityscapes given without anything to judge"):
        config(tmp_path, cityscapes=str(tmp_path))


def test_the_cache_dir_comes_from_the_environment(tmp_path: Path) -> None:
    cfg = build_config(DEFAULTS, tmp_path, {"INTRADA_CACHE_DIR": str(tmp_path / "c")})
    assert cfg.cache_dir == (tmp_path / "c").resolve()
