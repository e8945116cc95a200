"""intrada.parity.upstream: telling upstream ADVENT from PyPI's placeholder, and the cross-check verdicts.

The real upstream code cannot ship with this repository, so the "upstream" packages here are fakes
written into a temporary site folder: a faithful one (our model under upstream's module path),
and ones that differ the way a wrong re-implementation would (BN eps, swapped heads, floor-mode
pooling, a single-level model). Forward passes use a 32x48 input: the network is fully
convolutional, and 32 rows make ceil- and floor-mode pooling differ (conv1 16 -> 9 vs 8 rows).
"""
from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from intrada.parity.compare import Limits
from intrada.parity.upstream import UpstreamStatus, compare_with_upstream, find_upstream

# the parity gate's fp32 limits (lib/intrada/data/thresholds.toml [parity])
LIMITS = Limits(max_abs_over_scale=1e-3, min_cosine=0.99999, min_argmax_agreement=0.999)
SMALL_INPUT = np.random.default_rng(0).normal(0.0, 50.0, (1, 3, 32, 48)).astype(np.float32)

MAKE = "from intrada.model.deeplab import get_deeplab_v2 as _ours\n"
FAITHFUL = MAKE + textwrap.dedent("""
    def get_deeplab_v2(num_classes=19, multi_level=True):
        return _ours(num_classes, multi_level)
""")
WRONG_EPS = MAKE + textwrap.dedent("""
    import torch.nn as nn

    def get_deeplab_v2(num_classes=19, multi_level=True):
        model = _ours(num_classes, multi_level)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-2  # 1e-3 moves these logits by only 4e-4 of their scale, inside LIMITS
        return model
""")
SWAPPED_HEADS = textwrap.dedent("""
    from intrada.model.deeplab import ResNetMulti

    class Swapped(ResNetMulti):
        def forward(self, x):
            aux, main = super().forward(x)
            return main, aux

    def get_deeplab_v2(num_classes=19, multi_level=True):
        return Swapped((3, 4, 23, 3), num_classes, multi_level)
""")
FLOOR_POOL = MAKE + textwrap.dedent("""
    def get_deeplab_v2(num_classes=19, multi_level=True):
        return _ours(num_classes, multi_level, ceil_mode=False)
""")
SINGLE_LEVEL = MAKE + textwrap.dedent("""
    def get_deeplab_v2(num_classes=19, multi_level=True):
        return _ours(num_classes, False)
""")


def _drop_advent() -> None:
    for name in [m for m in sys.modules if m == "advent" or m.startswith("advent.")]:
        del sys.modules[name]


@pytest.fixture
def fake_advent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """``fake_advent({relative path: source})``: a site folder first on sys.path holding those files;
    any ``advent`` imported before is hidden, and whatever the test imports is dropped afterwards."""
    for name in [m for m in sys.modules if m == "advent" or m.startswith("advent.")]:
        monkeypatch.delitem(sys.modules, name)

    def make(files: dict[str, str]) -> Path:
        site = tmp_path / "site"
        for rel, text in files.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_text(text)
        monkeypatch.syspath_prepend(str(site))
        return site

    yield make
    _drop_advent()


def upstream_package(deeplabv2: str) -> dict[str, str]:
    return {"advent/__init__.py": "", "advent/model/__init__.py": "", "advent/model/deeplabv2.py": deeplabv2}


def test_absent_upstream_is_one_line_not_available() -> None:
    status = find_upstream("intrada_test_no_such_package")
    assert (status.kind, status.available, bool(status)) == ("absent", False, False)
    check = compare_with_upstream({}, SMALL_INPUT, LIMITS, status=status)
    assert not check.available and not check
    line = check.report()
    assert "\n" not in line
    assert line.startswith("upstream ADVENT cross-check not available: no module named 'intrada_test_no_such_package'")
    assert "PYTHONPATH" in line
    assert check.as_dict()["status"]["kind"] == "absent" and check.as_dict()["parity"] is None


def test_pypi_placeholder_is_detected(fake_advent: Callable[..., Path]) -> None:
    # what `pip install advent` puts in site-packages: a bare package and its 0.0.0 metadata
    fake_advent({"advent/__init__.py": "", "advent-0.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: advent\n"
                 "Version: 0.0.0\n", "advent-0.0.0.dist-info/top_level.txt": "advent\n"})
    status = find_upstream()
    assert (status.kind, status.available) == ("placeholder", False)
    assert "has no advent.model.deeplabv2" in status.reason
    assert "installed distribution advent 0.0.0" in status.reason
    check = compare_with_upstream({}, SMALL_INPUT, LIMITS, status=status)
    assert check.report().startswith("upstream ADVENT cross-check not available: 'advent' at ")


@pytest.mark.parametrize("files, kind, words", [
    ({"advent/__init__.py": "", "advent/model/__init__.py": "",
      "advent/model/deeplabv2.py": "import intrada_test_missing_dependency\n"},
     "broken", "ModuleNotFoundError: No module named 'intrada_test_missing_dependency'"),
    ({"advent/__init__.py": "raise RuntimeError('bad install')\n"}, "broken", "RuntimeError: bad install"),
    (upstream_package("get_deeplab_v2 = None\n"), "unusable", "has no callable get_deeplab_v2"),
    (upstream_package("def get_deeplab_v2(n=19):\n    pass\n"), "unusable", "does not take num_classes and multi_level"),
], ids=["missing-dependency", "raising-init", "no-constructor", "other-signature"])
def test_unusable_advent_packages_are_reported(fake_advent: Callable[..., Path], files: dict[str, str], kind: str,
                                               words: str) -> None:
    fake_advent(files)
    status = find_upstream()
    assert (status.kind, status.available) == (kind, False)
    assert words in status.reason and "\n" not in status.reason


def test_namespace_package_layout_is_found(fake_advent: Callable[..., Path]) -> None:
    # a checkout without __init__.py files still imports (namespace packages)
    site = fake_advent({"advent/model/deeplabv2.py": FAITHFUL})
    status = find_upstream()
    assert status.available, status.reason
    assert status.location == str(site / "advent/model/deeplabv2.py")


def test_faithful_upstream_matches_bit_for_bit(fake_advent, random_state_dict, random_model) -> None:
    fake_advent(upstream_package(FAITHFUL))
    check = compare_with_upstream(random_state_dict, SMALL_INPUT, LIMITS, model=random_model)
    assert check and check.available and check.identical, check.report()
    assert check.report().startswith("upstream ADVENT cross-check (bit-identical outputs): intrada.model.deeplab vs "
                                     "upstream ADVENT on 1 images: PASS")
    assert check.as_dict()["parity"]["outputs"][1]["output"] == "main"


@pytest.mark.parametrize("source, failure", [
    (WRONG_EPS, "max|diff|/scale"),
    (SWAPPED_HEADS, "cosine"),
], ids=["bn-eps-1e-2", "swapped-heads"])
def test_differing_upstream_is_a_mismatch(fake_advent, random_state_dict, random_model, source: str,
                                          failure: str) -> None:
    fake_advent(upstream_package(source))
    check = compare_with_upstream(random_state_dict, SMALL_INPUT, LIMITS, model=random_model)
    assert check.available and not check and not check.identical
    assert "FAIL (" in check.report() and failure in check.report(), check.report()


def test_other_output_shape_is_a_mismatch(fake_advent, random_state_dict, random_model) -> None:
    fake_advent(upstream_package(FLOOR_POOL))
    check = compare_with_upstream(random_state_dict, SMALL_INPUT, LIMITS, model=random_model)
    assert check.available and not check
    assert check.report().startswith("upstream ADVENT cross-check FAIL (")
    assert "aux output shape [1, 19, 4, 6] upstream vs [1, 19, 5, 7] ours for input [1, 3, 32, 48]" in check.report()


def test_weights_refused_by_upstream_is_a_mismatch(fake_advent, random_state_dict) -> None:
    fake_advent(upstream_package(SINGLE_LEVEL))
    check = compare_with_upstream(random_state_dict, SMALL_INPUT, LIMITS)
    assert check.available and not check and check.parity is None
    assert "upstream's model refused the weights (strict load): RuntimeError: Error(s) in loading state_dict" \
        in check.report()


def test_status_is_plain_data() -> None:
    status = UpstreamStatus("absent", "no module named 'advent'")
    assert status.as_dict() == {"available": False, "kind": "absent", "reason": "no module named 'advent'",
                                "location": None}
    assert status.report() == "upstream ADVENT not available: no module named 'advent'"
