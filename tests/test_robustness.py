"""Issue 6 at the gate level: bad inputs given to `pytest acceptance`, and faults during its builds.

The library and CLI halves of issue 6 are pinned next to the code they test (test_checkpoint,
test_onnx_export, test_cityscapes, test_dumps, test_preprocess, test_thresholds, test_cache); the
full map of cases is docs/robustness.md. Here every case is a real `pytest acceptance ...` run judged
by its exit code, its output and the report.json it writes (tests/_gate.py):

* a bad option is a usage error (exit 4): one `ERROR: ...` line naming the option and the file, no
  traceback, no test run;
* a bad file behind a valid option (checkpoint content, ONNX content, dataset tree, full cache
  disk) fails or errors exactly the tests that need it, each with the library's one-line message,
  and nothing passes in its place;
* kill -9 during each artifact build, 4 xdist workers asking for the same artifacts, a full disk
  under the ONNX export (slow: each needs one real export).

The plugin's behaviour runs in this process (tests/_gate.py); what needs a process runs as one:
one usage error (the exit code 4 a shell sees), the three killed runs, the xdist run.

Runs start from their own cache holding only the demo submission (the xdist run: also the session
seed's runner outputs, as donors), hard-linked from the session cache (tests/_gate.py), so nothing
here depends on, or disturbs, what other runs have cached. Files of
the seeded demo are hard links: tests replace them (unlink, then write), never write into them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from _gate import GATE_ARGS, TINY, GateRun, demo_entry, link_tree, seed_cache
from _gate import run_gate as _run_gate
from _hostile import Payload, as_nobody, traversable_tmp
from _report import accuracy
from intrada.cache.events import read_events
from intrada.cache.manifest import KEY_HEX_CHARS
from intrada.core.hashing import file_sha256
from intrada.dataset.cityscapes import list_samples
from intrada.dataset.dumps import write_dumps
from intrada.core.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
GATE = [*GATE_ARGS, "--benchmark-disable"]
KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_HEX_CHARS}}}$")
MODEL_TESTS = ("test_onnx_well_formed", "test_onnxruntime_matches_pytorch", "test_onnxruntime_miou")


# -- the demo submission and fresh caches ------------------------------------------------------------
@pytest.fixture(scope="module")
def demo() -> Path:
    """The demo entry of the session cache (checkpoint.pth, cityscapes/, thresholds.toml)."""
    return demo_entry()


def seeded_cache(root: Path, demo: Path) -> Path:
    """A fresh cache holding only the demo entry (no events, no other artifacts)."""
    return seed_cache(root, demo.parent.parent, keys=frozenset({("demo", demo.name)}))


@pytest.fixture(scope="session")
def tiny_demo() -> Path:
    """The demo entry for TinyIntraDA, in the tiny session cache: for the runs whose point is the
    cache's mechanics (kill -9, xdist), not the real network's numbers."""
    return demo_entry(tiny=True)


@pytest.fixture
def own_demo_cache(tmp_path: Path, demo: Path) -> Path:
    """This test's fresh cache, seeded with the demo only (its bad-input runs build at most bins)."""
    return seeded_cache(tmp_path / "cache", demo)


def real_args(demo: Path) -> list[str]:
    return ["--weights", str(demo / "checkpoint.pth"), "--cityscapes", str(demo / "cityscapes"),
            "--thresholds", str(demo / "thresholds.toml")]


def entries(cache: Path, kind: str) -> list[str]:
    """Complete entries (key-named directories) of a kind."""
    d = cache / kind
    return sorted(n for n in os.listdir(d) if KEY_RE.match(n)) if d.is_dir() else []


def temp_dirs(cache: Path, kind: str | None = None) -> list[Path]:
    kinds = [cache / kind] if kind else [d for d in cache.iterdir() if d.is_dir()]
    return sorted(p for d in kinds if d.is_dir() for p in d.iterdir() if p.name.startswith(".tmp-"))


# -- running the gate ------------------------------------------------------------------------------
Gate = GateRun


def run_gate(tmp_path: Path, *args: str, cache: Path | None = None, subprocess: bool = False,
             env: dict[str, str] | None = None) -> Gate:
    return _run_gate(tmp_path, "--benchmark-disable", *args, cache=cache, subprocess=subprocess, timeout=600, env=env)


def assert_usage_error(gate: Gate, *needles: str) -> str:
    """Exit 4, one `ERROR: ` line on stderr holding every needle, no traceback, no test run."""
    assert gate.ret == pytest.ExitCode.USAGE_ERROR, gate.tail()
    lines = [ln for ln in gate.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), gate.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in gate.stdout + gate.stderr
    assert not re.search(r"\d+ (passed|failed|error)", gate.stdout), gate.stdout
    assert gate.report == {}, "a usage error must not write a report"
    return lines[0]


def assert_one_line_errors(gate: Gate, tests: tuple[str, ...], prefix: str,
                           outcomes: tuple[str, ...] = ("error",)) -> None:
    """Each of ``tests`` has one of ``outcomes`` and a message starting with ``prefix``; nothing passed;
    the terminal shows the one-line message, never a traceback into the library."""
    for name in tests:
        assert gate.outcome(name) in outcomes, (name, gate.tests.get(name), gate.tail())
        assert gate.message(name).startswith(prefix), (name, gate.message(name))
    assert all(t["outcome"] != "passed" for t in gate.tests.values()), gate.tests
    assert gate.ret == pytest.ExitCode.TESTS_FAILED, gate.tail()
    assert prefix in gate.stdout
    assert "Traceback" not in gate.stdout and "site-packages" not in gate.stdout, gate.tail()


# -- 1. bad options: usage errors ----------------------------------------------------------------------
def _thresholds_variant(tmp: Path, old: str, new: str, name: str) -> Path:
    text = (REPO / "lib" / "intrada" / "data" / "thresholds.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def _drop_line(tmp: Path, start: str, name: str) -> Path:
    text = (REPO / "lib" / "intrada" / "data" / "thresholds.toml").read_text(encoding="utf-8")
    (line,) = [ln for ln in text.splitlines(keepends=True) if ln.startswith(start)]
    path = tmp / name
    path.write_text(text.replace(line, ""), encoding="utf-8")
    return path


def _u_weights_missing(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--weights", str(tmp / "missing.pth")], [f"--weights {tmp / 'missing.pth'}: no such file"]


def _u_onnx_missing(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--onnx", str(tmp / "model.onnx")], [f"--onnx {tmp / 'model.onnx'}: no such file"]


def _u_cityscapes_missing(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return (["--cityscapes", str(tmp / "cityscapes"), "--weights", str(demo / "checkpoint.pth")],
            [f"--cityscapes {tmp / 'cityscapes'}: no such directory"])


def _u_cityscapes_without_model(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return (["--cityscapes", str(demo / "cityscapes")],
            ["--cityscapes given without anything to judge: pass --weights, --onnx, --dumps and/or --om"])


def _u_dumps_missing(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--dumps", str(tmp / "dumps")], [f"--dumps {tmp / 'dumps'}: no such directory"]


def _u_dump_format_without_dumps(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--dump-format", "msame"], ["--dump-format msame given without --dumps DIR"]


def _u_batch_sizes_not_int(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--batch-sizes", "1,x"], ["--batch-sizes '1,x': expected comma-separated integers, e.g. 1,4,8,16"]


def _u_batch_sizes_zero(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--batch-sizes", "0"], ["--batch-sizes '0': every batch size must be >= 1"]


def _u_max_images_zero(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--max-images", "0"], ["--max-images 0: must be >= 1"]


def _u_thresholds_missing(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    return ["--thresholds", str(tmp / "t.toml")], [f"--thresholds {tmp / 't.toml'}: no such file"]


def _u_thresholds_unknown_key(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    p = _thresholds_variant(tmp, "[accuracy]\n", '[accuracy]\nmin_mIoU = { value = 1.0, source = "typo" }\n', "t.toml")
    return ["--thresholds", str(p)], [f"--thresholds: {p}: unknown key accuracy.min_mIoU. Hint: known keys in "
                                      "[accuracy]: min_miou"]


def _u_thresholds_wrong_type(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    p = _thresholds_variant(tmp, "min_miou = { value = 47.0,", 'min_miou = { value = "47",', "t.toml")
    return ["--thresholds", str(p)], [f"--thresholds: {p}: accuracy.min_miou must be int or float, got str '47'"]


def _u_thresholds_missing_entry(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    p = _drop_line(tmp, "max_kl = ", "t.toml")
    return ["--thresholds", str(p)], [f"--thresholds: {p}: missing required entry om.max_kl. Hint: add max_kl = "]


def _u_cache_dir_under_a_file(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    (tmp / "afile").write_text("x")
    return (["--cache-dir", str(tmp / "afile" / "cache")],
            [f"--cache-dir {tmp / 'afile' / 'cache'}: cannot create or write the artifact cache: {tmp / 'afile'} "
             "is not a directory (Not a directory, ENOTDIR). Hint: pass --cache-dir DIR to use a writable directory"])


def _u_report_under_a_file(tmp: Path, demo: Path) -> tuple[list[str], list[str]]:
    """It used to run every test and end in an OSError traceback while writing the report."""
    (tmp / "afile").write_text("x")
    return (["--report", str(tmp / "afile" / "report")],
            [f"--report {tmp / 'afile' / 'report'}: cannot create or write the report: {tmp / 'afile'} "
             "is not a directory (Not a directory, ENOTDIR). Hint: pass --report DIR to use a writable directory"])


USAGE: dict[str, Callable[[Path, Path], tuple[list[str], list[str]]]] = {
    "weights_missing": _u_weights_missing,
    "onnx_missing": _u_onnx_missing,
    "cityscapes_missing": _u_cityscapes_missing,
    "cityscapes_without_model": _u_cityscapes_without_model,
    "dumps_missing": _u_dumps_missing,
    "dump_format_without_dumps": _u_dump_format_without_dumps,
    "batch_sizes_not_int": _u_batch_sizes_not_int,
    "batch_sizes_zero": _u_batch_sizes_zero,
    "max_images_zero": _u_max_images_zero,
    "thresholds_missing": _u_thresholds_missing,
    "thresholds_unknown_key": _u_thresholds_unknown_key,
    "thresholds_wrong_type": _u_thresholds_wrong_type,
    "thresholds_missing_entry": _u_thresholds_missing_entry,
    "cache_dir_under_a_file": _u_cache_dir_under_a_file,
    "report_under_a_file": _u_report_under_a_file,
}


# One case runs as a subprocess: exit code 4 and the one stderr line as a shell sees them.
USAGE_IN_A_SUBPROCESS = "thresholds_unknown_key"


@pytest.mark.parametrize("case", list(USAGE))
def test_bad_option_is_a_usage_error(tmp_path: Path, case: str) -> None:
    """Options are checked before anything is read, so a stand-in submission (an empty .pth, an empty
    split directory) is enough: only their existence is looked at."""
    stand_in = tmp_path / "submission"
    (stand_in / "cityscapes").mkdir(parents=True)
    (stand_in / "checkpoint.pth").write_bytes(b"")
    args, needles = USAGE[case](tmp_path, stand_in)
    if "--cache-dir" not in args:
        args += ["--cache-dir", str(tmp_path / "cache")]
    gate = run_gate(tmp_path, "-m", "parity or accuracy", *args, subprocess=case == USAGE_IN_A_SUBPROCESS)
    assert_usage_error(gate, *needles)
    assert not (tmp_path / "cache").exists(), "a refused run must not create its cache"


def test_cache_dir_from_the_environment_is_checked_and_named(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("INTRADA_CACHE_DIR", str(tmp_path / "afile" / "c"))
    gate = run_gate(tmp_path, "-m", "parity")
    assert_usage_error(gate, f"INTRADA_CACHE_DIR {tmp_path / 'afile' / 'c'}: cannot create or write the "
                             "artifact cache", "Hint: pass --cache-dir DIR")


@contextlib.contextmanager
def mounted(*commands: list[str], target: Path) -> Iterator[None]:
    """Run mount commands (root only); skip with the reason when this machine does not allow it."""
    target.mkdir(parents=True, exist_ok=True)
    for i, cmd in enumerate(commands):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            why = (proc.stderr.strip() or f"exit {proc.returncode}") if proc.returncode else ""
        except OSError as exc:  # no mount binary
            why = str(exc)
        if why:
            if i:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
            pytest.skip(f"cannot mount here ({' '.join(cmd)}: {why}); a real read-only or full filesystem needs "
                        "root and mount permission")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_read_only_cache_dir_is_a_usage_error_even_with_complete_entries(tmp_path: Path,
                                                                         demo: Path) -> None:
    """A read-only bind mount of a cache that holds the demo entry: root gets a real EROFS (permission
    bits would not stop root). The run is refused before any test, so no verdict comes from it."""
    src = seeded_cache(tmp_path / "cache-src", demo)
    ro = tmp_path / "cache-ro"
    with mounted(["mount", "--bind", str(src), str(ro)], ["mount", "-o", "remount,bind,ro", str(ro)], target=ro):
        assert not os.access(ro, os.W_OK)
        gate = run_gate(tmp_path, "-m", "parity or accuracy", cache=ro)
        listing = sorted(os.listdir(ro))
    assert_usage_error(gate, f"--cache-dir {ro}: cannot create or write the artifact cache: {ro} is not writable "
                             "(Read-only file system, EROFS). Hint: pass --cache-dir DIR to use a writable directory")
    assert listing == ["demo"]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    with traversable_tmp("intrada-robustness-") as base:
        yield base


def test_cache_dir_not_writable_by_this_user_is_named(shared_tmp: Path) -> None:
    """The same start-of-session check for plain permissions (EACCES). Root ignores permission bits and
    `nobody` cannot start this Python (it lives under /root), so the check runs in a forked child that
    drops to `nobody` (tests/_hostile.py), as tests/test_cache.py does for the cache itself."""
    from intrada.gate.config import ConfigError, _writable_dir

    base = shared_tmp
    (base / "cache").mkdir()
    os.chmod(base / "cache", 0o555)
    target = base / "cache" / "intrada"

    def attempt() -> str:
        try:
            _writable_dir("--cache-dir", target)
        except ConfigError as exc:
            return str(exc)
        return "accepted"

    msg = as_nobody(attempt)
    if os.geteuid() == 0:
        assert attempt() == "accepted"  # root may write there: only the unprivileged user is refused
    assert msg == (f"--cache-dir {target}: cannot create or write the artifact cache: {base / 'cache'} is not "
                   "writable (Permission denied, EACCES). Hint: pass --cache-dir DIR to use a writable directory"), msg
    assert not target.exists()


# -- 1b. bad files behind valid options: the tests that need them fail, one line each --------------------


def _bad_truncated(tmp: Path, demo: Path) -> Path:
    """An interrupted download: the first 4 MB of the demo checkpoint."""
    path = tmp / "truncated.pth"
    with open(demo / "checkpoint.pth", "rb") as f:
        path.write_bytes(f.read(4 << 20))
    return path


def _bad_code_pickle(tmp: Path, demo: Path) -> Path:
    import shlex

    path = tmp / "malicious.pth"
    torch.save({"conv1.weight": Payload(os.system, (f"touch {shlex.quote(str(tmp / 'PWNED'))}",))}, path)
    return path


def _bad_single_level(tmp: Path, demo: Path) -> Path:
    """The demo checkpoint without layer5 (multi_level=False): loads, but is not the IntraDA model."""
    sd = torch.load(demo / "checkpoint.pth", map_location="cpu", weights_only=True)
    path = tmp / "single_level.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer5.")}, path)
    return path


BAD_WEIGHTS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated": (_bad_truncated, "truncated or corrupt PyTorch checkpoint"),
    "code_pickle": (_bad_code_pickle, "refused to unpickle"),
    "single_level": (_bad_single_level, "state_dict does not match the IntraDA DeepLabv2: 8 missing: "
                     "layer5.conv2d_list.0.weight"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_weights_content_errors_every_model_test(tmp_path: Path, demo: Path, own_demo_cache: Path,
                                                     case: str) -> None:
    """--weights exists (no usage error) but cannot be used: every test that needs the model errors with
    the CheckpointError line; no ONNX is exported, the pickled code never runs. The demo split is given
    as --cityscapes: submitted weights on the embedded split would skip the accuracy test (an mIoU there
    means nothing), and the accuracy test must be one that needs the model."""
    build, problem = BAD_WEIGHTS[case]
    weights = build(tmp_path, demo)
    marker = tmp_path / "PWNED"
    try:
        gate = run_gate(tmp_path, "-m", "parity or accuracy", "--weights", str(weights), "--cityscapes",
                        str(demo / "cityscapes"), "--thresholds", str(demo / "thresholds.toml"), "--max-images", "2",
                        cache=own_demo_cache)
        ran_payload = marker.exists()
        if case == "code_pickle":  # control: the payload is live, so the check above could fail
            torch.load(weights, weights_only=False)
            assert marker.exists()
    finally:
        weights.unlink()
    assert not ran_payload, "the gate unpickled the checkpoint's code"
    assert_one_line_errors(gate, MODEL_TESTS, f"CheckpointError: {weights}: {problem}")
    assert entries(own_demo_cache, "onnx") == [] and temp_dirs(own_demo_cache) == []


def test_not_onnx_fails_the_parity_gate(tmp_path: Path, demo: Path, own_demo_cache: Path) -> None:
    """The usual slip: the .pth passed as --onnx."""
    onnx = tmp_path / "model.onnx"
    os.link(demo / "checkpoint.pth", onnx)
    gate = run_gate(tmp_path, "-m", "parity", "--onnx", str(onnx), "--max-images", "2", cache=own_demo_cache)
    assert gate.outcome("test_onnx_well_formed") == "failed"
    assert re.match(rf"OnnxModelError: {re.escape(str(onnx))}: not an ONNX model \(.*\)\. Hint: ",
                    gate.message("test_onnx_well_formed")), gate.message("test_onnx_well_formed")
    assert gate.report["verdicts"]["parity"]["verdict"] == "FAIL"
    # no --weights: the PyTorch comparison is skipped (said), not passed
    assert gate.outcome("test_onnxruntime_matches_pytorch") == "skipped"
    assert_one_line_errors(gate, ("test_onnx_well_formed",), f"OnnxModelError: {onnx}: not an ONNX model",
                           outcomes=("failed",))


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory: pytest.TempPathFactory, toy_factory: Callable[..., Any],
             toy_exporter: Callable[..., Path]) -> dict[str, Path]:
    """The toy model (exact IntraDA interface, exports in a second) with one defect each, exported once
    for the module."""
    d = tmp_path_factory.mktemp("toy-onnx")
    nan = toy_factory()
    with torch.no_grad():
        nan.main_a.bias[3] = float("nan")  # one class plane of the main head: 65 x 129 NaN per image
    return {
        "wrong_input_name": toy_exporter(toy_factory(), d / "wrong_input_name.onnx", input_name="input"),
        "static_batch": toy_exporter(toy_factory(), d / "static_batch.onnx", dynamic=False),
        "one_output": toy_exporter(toy_factory(heads=1), d / "one_output.onnx", output_names=("main_logits",)),
        "nan_outputs": toy_exporter(nan, d / "nan_outputs.onnx"),
    }


BAD_ONNX: dict[str, tuple[list[str], str | None]] = {
    "wrong_input_name": ([], "input is named 'input', expected 'image'. Hint: "),
    "static_batch": (["--batch-sizes", "1,4"], "input batch dimension is static (1) but several batch sizes are "
                     "needed. Hint: export with dynamic_axes"),
    # control: no batch sweep asked, so the same static file is fine
    "static_batch_single_size": (["--batch-sizes", "1", "-k", "well_formed"], None),
    "one_output": ([], "expected 2 outputs (aux, main), found 1 (['main_logits'])"),
}


@pytest.mark.parametrize("case", list(BAD_ONNX))
def test_bad_onnx_interface_fails_well_formedness(tmp_path: Path, own_demo_cache: Path, case: str,
                                                  toy_onnx: dict[str, Path]) -> None:
    """Structural defects are found by test_onnx_well_formed (failed) and stop every consumer of the ONNX
    (error, same line) before any inference."""
    onnx = toy_onnx[case.removesuffix("_single_size")]
    extra, problem = BAD_ONNX[case]
    gate = run_gate(tmp_path, "-m", "parity", "-k", "not matches_pytorch", "--onnx", str(onnx), *extra,
                    cache=own_demo_cache)
    if problem is None:
        assert gate.outcome("test_onnx_well_formed") == "passed", gate.tests
        return
    prefix = f"OnnxModelError: {onnx}: {problem}"
    assert gate.outcome("test_onnx_well_formed") == "failed"
    assert_one_line_errors(gate, ("test_openvino_matches_onnxruntime[f32]", "test_openvino_matches_onnxruntime[bf16]"),
                           prefix)
    assert gate.message("test_onnx_well_formed").startswith(prefix)


def test_onnx_with_nan_outputs_fails_both_gates(tmp_path: Path, demo: Path, own_demo_cache: Path,
                                                toy_onnx: dict[str, Path]) -> None:
    """Structurally fine (well-formedness passes), numerically broken: running it must not give a verdict
    that passes. The NaN reaches the accuracy test as one line counting the non-finite values."""
    onnx = toy_onnx["nan_outputs"]
    gate = run_gate(tmp_path, "-m", "parity or accuracy", "--onnx", str(onnx), "--cityscapes", str(demo / "cityscapes"),
                    "--thresholds", str(demo / "thresholds.toml"), "--max-images", "2", cache=own_demo_cache)
    assert gate.ret == pytest.ExitCode.TESTS_FAILED, gate.tail()
    verdicts = {g: v["verdict"] for g, v in gate.report["verdicts"].items()}
    assert verdicts["accuracy"] == "FAIL" and verdicts["parity"] == "FAIL", gate.tests
    assert gate.outcome("test_onnx_well_formed") == "passed"
    assert gate.outcome("test_onnxruntime_miou") == "error"
    # The line names the ONNX (not a cached dump file) and nothing is stored for it.
    assert re.match(rf"OnnxModelError: {re.escape(str(onnx))}: onnxruntime output [01] holds \d+ NaN/Inf values",
                    gate.message("test_onnxruntime_miou")), gate.message("test_onnxruntime_miou")
    assert "Traceback" not in gate.stdout


def _tree(tmp_path: Path, demo: Path) -> Path:
    tree = tmp_path / "cityscapes"
    link_tree(demo / "cityscapes", tree)
    return tree


def _tree_missing_label(tree: Path) -> tuple[list[str], tuple[str, ...], str]:
    label = list_samples(tree)[3].label
    assert label is not None
    label.unlink()
    return ([], MODEL_TESTS + ("test_device_dumps_miou",),
            f"DatasetError: {label}: label file missing (1 of 8 images have no gtFine labelIds). "
            "Hint: extract gtFine_trainvaltest.zip into the same root")


def _tree_empty_split(tree: Path) -> tuple[list[str], tuple[str, ...], str]:
    val = tree / "leftImg8bit" / "val"
    for png in val.glob("*/*.png"):
        png.unlink()
    return ([], MODEL_TESTS + ("test_device_dumps_miou",),
            f"DatasetError: {val}: the val split is empty: no <city>/*_leftImg8bit.png files. Hint: ")


def _tree_wrong_image_size(tree: Path) -> tuple[list[str], tuple[str, ...], str]:
    image = list_samples(tree)[1].image
    with Image.open(image) as im:
        small = im.resize((1024, 512))
    image.unlink()  # a hard link into the repository cache: replace it, never write through it
    small.save(image)
    # only the preprocessing sees image sizes: select the test whose first need is the bins
    return (["-k", "matches_pytorch", "--max-images", "2"], ("test_onnxruntime_matches_pytorch",),
            f"DatasetError: {image}: image is 1024x512, expected 2048x1024. Hint: ")


BAD_TREES: dict[str, Callable[[Path], tuple[list[str], tuple[str, ...], str]]] = {
    "missing_label": _tree_missing_label,
    "empty_split": _tree_empty_split,
    "wrong_image_size": _tree_wrong_image_size,
}


@pytest.mark.parametrize("case", list(BAD_TREES))
def test_bad_cityscapes_tree_errors_the_tests_that_read_it(tmp_path: Path, demo: Path,
                                                           own_demo_cache: Path, case: str) -> None:
    """Found before any export: listing the split (every test) or preprocessing it (bins)."""
    tree = _tree(tmp_path, demo)
    extra, tests, prefix = BAD_TREES[case](tree)
    gate = run_gate(tmp_path, "-m", "parity or accuracy", "--cityscapes", str(tree), "--weights",
                    str(demo / "checkpoint.pth"), "--thresholds", str(demo / "thresholds.toml"), *extra,
                    cache=own_demo_cache)
    assert_one_line_errors(gate, tests, prefix)
    assert entries(own_demo_cache, "onnx") == [] and temp_dirs(own_demo_cache) == []


def test_label_ids_out_of_range_error_the_accuracy_test(tmp_path: Path, demo: Path,
                                                        own_demo_cache: Path) -> None:
    """Judged from --dumps (no model needed): the bad label is found while scoring, in a worker process,
    and reported naming the label file."""
    tree = _tree(tmp_path, demo)
    samples = list_samples(tree)[:2]
    label = samples[1].label
    assert label is not None
    with Image.open(label) as im:
        ids = np.array(im)
    ids[100:200, 100:200] = 40
    label.unlink()  # a hard link into the repository cache: replace it, never write through it
    Image.fromarray(ids).save(label)
    dumps = tmp_path / "dumps"
    zeros = np.zeros((19, 65, 129), np.float32)
    for s in samples:
        write_dumps(dumps, s.name, zeros, zeros)
    gate = run_gate(tmp_path, "-m", "accuracy", "--cityscapes", str(tree), "--dumps", str(dumps), "--thresholds",
                    str(demo / "thresholds.toml"), "--max-images", "2", cache=own_demo_cache)
    assert_one_line_errors(gate, ("test_device_dumps_miou",),
                           f"DatasetError: {label}: label ids go up to 40, expected 0..33. Hint: ")
    assert gate.outcome("test_onnxruntime_miou") == "skipped"  # no model given: said, not passed
    assert entries(own_demo_cache, "eval") == []


def test_label_id_minus_one_is_ignored_not_refused(tmp_path: Path) -> None:
    """Issue 6 allows ids -1..33 (-1 is the licence plate of the Cityscapes label table). A PNG cannot hold
    a negative value, so this uses a 32-bit signed TIFF (mode I), which Pillow opens the same way."""
    from intrada.dataset.cityscapes import load_train_ids

    ids = np.full((1024, 2048), 7, np.int32)  # road
    ids[:, :100] = -1
    ids[:, 100:200] = 0  # unlabeled: ignored too
    path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(ids).save(path, format="TIFF")
    with Image.open(path) as im:
        assert im.mode == "I"
    got = load_train_ids(path)
    assert (got[:, :200] == 255).all() and (got[:, 200:] == 0).all()
    ids[0, 0] = -2
    Image.fromarray(ids).save(path, format="TIFF")
    with pytest.raises(DatasetError, match=r"label ids range -2\.\.7, expected -1\.\.33"):
        load_train_ids(path)


def _zero_dumps(directory: Path, names: list[str], convention: str = "ais_bench") -> None:
    zeros = np.zeros((19, 65, 129), np.float32)
    suffixes = {"ais_bench": ("_0", "_1"), "benchmark": ("_1", "_2"), "msame": ("_output_0", "_output_1")}[convention]
    directory.mkdir(exist_ok=True)
    for name in names:
        for suffix in suffixes:
            zeros.tofile(directory / f"{name}{suffix}.bin")


def _dumps_truncated(d: Path, names: list[str]) -> str:
    _zero_dumps(d, names)
    (d / f"{names[1]}_1.bin").write_bytes(b"\0" * 1000)
    return rf"DumpsError: {re.escape(str(d / names[1]))}_1\.bin: 1,000 bytes, expected 637,260 .*truncated"


def _dumps_unknown_file(d: Path, names: list[str]) -> str:
    _zero_dumps(d, names)
    (d / "notes.bin").write_bytes(b"x")
    return rf"DumpsError: {re.escape(str(d))}: 1 \.bin file\(s\) match no dump convention: notes\.bin"


def _dumps_mixed(d: Path, names: list[str]) -> str:
    _zero_dumps(d, names[:1], "ais_bench")
    _zero_dumps(d, names[1:], "benchmark")
    return rf"DumpsError: {re.escape(str(d))}: mixed conventions: 0-based ais_bench files .* 1-based benchmark files"


def _dumps_inf(d: Path, names: list[str]) -> str:
    _zero_dumps(d, names)
    bad = np.zeros((19, 65, 129), np.float32)
    bad[4, 0, :3] = np.inf
    bad.tofile(d / f"{names[0]}_1.bin")
    return rf"DumpsError: {re.escape(str(d / names[0]))}_1\.bin: 3 non-finite values \(0 NaN, 3 Inf\) of 159,315"


BAD_DUMPS: dict[str, Callable[[Path, list[str]], str]] = {
    "truncated": _dumps_truncated,
    "unknown_file": _dumps_unknown_file,
    "mixed_conventions": _dumps_mixed,
    "inf": _dumps_inf,
}


@pytest.mark.parametrize("case", list(BAD_DUMPS))
def test_bad_dumps_error_the_dumps_test(tmp_path: Path, demo: Path, own_demo_cache: Path,
                                        case: str) -> None:
    """--dumps of the first two demo images with one defect (zero logits otherwise: no model needed)."""
    names = [s.name for s in list_samples(demo / "cityscapes")[:2]]
    dumps = tmp_path / "dumps"
    pattern = BAD_DUMPS[case](dumps, names)
    gate = run_gate(tmp_path, "-m", "accuracy", "--cityscapes", str(demo / "cityscapes"), "--dumps", str(dumps),
                    "--thresholds", str(demo / "thresholds.toml"), "--max-images", "2", cache=own_demo_cache)
    msg = gate.message("test_device_dumps_miou")
    assert re.match(pattern, msg), msg
    assert_one_line_errors(gate, ("test_device_dumps_miou",), msg)


def test_a_report_that_cannot_be_written_fails_the_run_in_one_line(tmp_path: Path, gate_seed: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--report DIR was writable at the start (a usage error otherwise), but the disk fills before the
    end: the run fails (exit 1) with one red line naming the file, and no traceback; the verdict block
    is still printed. It used to end in an OSError traceback at the terminal summary."""
    import errno

    import intrada.gate.report

    def full(directory: Path, *_: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(directory) / "report.json"))

    monkeypatch.setattr(intrada.gate.report, "write_report", full)
    report = tmp_path / "rep"
    gate = _run_gate(tmp_path, "--benchmark-disable", "-m", "parity", "-k", "onnxruntime_matches", cache=gate_seed.cache,
                     report=report)
    assert gate.ret == pytest.ExitCode.TESTS_FAILED, gate.tail()
    assert "1 passed" in gate.stdout and "parity    PASS" in gate.stdout
    assert (f"intrada gate: FAILED: the report was not written: {report / 'report.json'}: disk full (No space left "
            "on device). Hint: free space on that disk or write the output to another one; exit code 1") in gate.stdout
    assert "Traceback" not in gate.stdout + gate.stderr and "report written" not in gate.stdout


def test_full_cache_disk_while_preprocessing_is_one_line(tmp_path: Path, demo: Path) -> None:
    """A 4 MB tmpfs as the cache: the first 6.3 MB bin hits a real ENOSPC in a preprocessing worker."""
    fs = tmp_path / "smallfs"
    with mounted(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)], target=fs):
        cache = fs / "cache"
        gate = run_gate(tmp_path, "-m", "parity", "-k", "matches_pytorch", *real_args(demo), "--max-images", "2",
                        cache=cache)
        left = entries(cache, "bins"), temp_dirs(cache)
    # Today a BinsError naming the temporary bin (numpy reports the short write without an errno, so the
    # cache cannot tell a full disk); either class is one line that says to free space.
    msg = gate.message("test_onnxruntime_matches_pytorch")
    assert re.match(rf"(BinsError|CacheError): {re.escape(str(cache))}.*disk full", msg) \
        and "free space" in msg, msg
    assert_one_line_errors(gate, ("test_onnxruntime_matches_pytorch",), msg)
    assert left == ([], [])


# -- 2. kill -9 during each artifact build -------------------------------------------------------------
def _start(cache: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pytest", *GATE, "--cache-dir", str(cache), *args],
                                cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
              timeout: float = 400.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"gate run ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the pytest process and its preprocessing / scoring workers
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _verify_entries(cache: Path) -> dict[str, list[str]]:
    """Every entry's files against its manifest's sha256 (what a full verification does)."""
    found: dict[str, list[str]] = {}
    for kind_dir in sorted(d for d in cache.iterdir() if d.is_dir() and d.name != "labels"):
        for key in entries(cache, kind_dir.name):
            manifest = json.loads((kind_dir / key / "manifest.json").read_text())
            for name, meta in manifest["files"].items():
                assert file_sha256(kind_dir / key / name) == meta["sha256"], f"{kind_dir.name}/{key}/{name}"
            found.setdefault(kind_dir.name, []).append(key)
    return found


@pytest.mark.slow
def test_kill9_during_each_build_then_a_clean_run(tmp_path: Path, tiny_demo: Path) -> None:
    """`pytest acceptance -m accuracy` killed (SIGKILL to its process group) while it builds the ONNX
    export, then the bins, then the runner outputs; each time no entry of that kind exists and its temp
    dir is left. The next run (in this process: it needs no process of its own) removes the stale temp
    dirs, builds each artifact once and passes. On TinyIntraDA (the same builders and cache): the
    kills land in the cache's code, not in the network's."""
    cache = seeded_cache(tmp_path / "cache", tiny_demo)
    log = tmp_path / "gate.log"
    args = ("-m", "accuracy", "-p", "no:xdist")
    # For outputs, wait for a first written file: the kill then lands mid-artifact (the tiny network
    # writes the 8 images' outputs over ~0.1 s or more; the poll runs every 5 ms). The export writes its
    # one file at the end and the bins' workers write theirs within milliseconds of each other, so those
    # two are killed as soon as their temp dir exists.
    stages = {"onnx": False, "bins": False, "outputs": True}
    killed: dict[str, Path] = {}
    for kind, wait_for_file in stages.items():
        proc = _start(cache, log, *args, env=TINY)

        def building(kind: str = kind, wait_for_file: bool = wait_for_file) -> bool:
            for t in temp_dirs(cache, kind):
                with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                    if t not in killed.values() and (not wait_for_file or any(t.iterdir())):
                        return True
            return False

        _wait_for(f"a {kind} build started", building, proc, log)
        _kill_group(proc)
        (tmp,) = [t for t in temp_dirs(cache, kind) if t not in killed.values()]
        killed[kind] = tmp
        assert entries(cache, kind) == [], f"kill -9 during the {kind} build left an entry under its final name"
        assert tmp.is_dir(), "kill -9 runs no cleanup: the partial build must still be there"
        if wait_for_file:
            assert any(tmp.iterdir())
    assert entries(cache, "onnx") and entries(cache, "bins"), "each rerun got past the previous kill"

    t0 = time.time()
    final = run_gate(tmp_path, *args, cache=cache, env=TINY)
    assert final.ret == 0, final.tail()
    data = final.report
    assert data["verdicts"]["accuracy"]["verdict"] == "PASS"
    assert accuracy(data, "onnxruntime")["miou"] > 80

    assert temp_dirs(cache) == [], "stale temp dirs of the killed builds were not removed"
    assert all(not t.exists() for t in killed.values())
    found = _verify_entries(cache)
    assert {k: len(v) for k, v in found.items()} == {"demo": 1, "onnx": 1, "bins": 1, "outputs": 1, "eval": 1}
    events = read_events(cache)
    builds = Counter(e["kind"] for e in events if e["event"] == "build")
    assert builds == {"onnx": 1, "bins": 1, "outputs": 1, "eval": 1}, builds
    assert not [e for e in events if e["event"] in ("build_failed",) or e.get("rebuild")]
    stale: Counter[str] = Counter()
    for e in events:
        if e["event"] == "stale_removed":
            stale[e["kind"]] += e["count"]
    assert stale == {"onnx": 1, "bins": 1, "outputs": 1}, stale
    last = {(e["kind"], e["event"]) for e in read_events(cache, since=t0)}
    assert last == {("demo", "hit"), ("onnx", "hit"), ("bins", "hit"), ("outputs", "stale_removed"),
                    ("outputs", "build"), ("eval", "build")}, last


# -- 3. four xdist workers ------------------------------------------------------------------------------
PROBE = textwrap.dedent('''
    """Records, per xdist worker, that its session started and the artifact each fixture handed to the
    tests, with the sha256 of its bytes."""
    import hashlib, json, os
    from pathlib import Path
    import pytest

    SEEN = {}

    def _digest(path):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()

    def pytest_sessionstart(session):
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            (Path(os.environ["INTRADA_PROBE_DIR"]) / f"{worker}.started").touch()

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(fixturedef, request):
        result = yield  # raises (and records nothing) when the fixture failed or skipped
        if fixturedef.argname in ("onnx_file", "bins", "onnx_outputs", "torch_outputs"):
            path = Path(result if isinstance(result, (str, Path)) else result.directory)
            SEEN[fixturedef.argname] = {"path": str(path), "sha256": _digest(path)}
        return result

    def pytest_sessionfinish(session):
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker:
            out = Path(os.environ["INTRADA_PROBE_DIR"]) / f"{worker}.json"
            out.write_text(json.dumps({"pid": os.getpid(), "seen": SEEN}))
    ''')


def _onnx_lock(cache: Path, weights: Path) -> Path:
    """The lock file of the ONNX export entry that ``weights`` make on TinyIntraDA: its key computed
    by the builder itself (a cache that records the key parts and builds nothing)."""
    from intrada.cache.store import ArtifactCache
    from intrada.gate.artifacts import onnx_export_entry
    from intrada.model.network import TINY as TINY_NETWORK

    class Asked(Exception):
        pass

    class Recorder(ArtifactCache):
        def get_or_build(self, kind, parts, build, *, description=""):  # type: ignore[no-untyped-def]
            raise Asked(self.key(kind, parts))

    with pytest.raises(Asked) as asked:
        onnx_export_entry(Recorder(cache), weights, TINY_NETWORK)
    return cache / "onnx" / f".{asked.value.args[0]}.lock"


@pytest.mark.slow
def test_four_xdist_workers_build_each_artifact_once(tmp_path: Path, tiny_demo: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`pytest acceptance -n 4`: session fixtures run in every worker, so up to four processes ask for the
    same export, bins and outputs at once. Each is built once (one build event per key), the others
    wait on the lock or hit, and every worker's fixtures hand its tests the same bytes.

    On TinyIntraDA (the same builders, cache and plugin): its export takes a fraction of a second, so
    contention is made certain rather than left to timing. This test holds the export's lock (the key
    computed by the builder itself) until every worker's session has started and a moment more; the
    workers that ask for the export meanwhile wait, then one builds it and the others find it."""
    from intrada.cache.lock import new_lock

    cache = seeded_cache(tmp_path / "cache", tiny_demo)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (tmp_path / "intrada_probe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("INTRADA_PROBE_DIR", str(probe_dir))
    lock_path = _onnx_lock(cache, tiny_demo / "checkpoint.pth")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = new_lock(lock_path)
    lock.acquire()
    log = tmp_path / "gate.log"
    report = tmp_path / "report"
    try:
        # one image: the contention is over the artifacts, not over how many images they hold
        proc = _start(cache, log, "--benchmark-disable", "-n", "4", "-p", "intrada_probe", "-m", "parity or accuracy",
                      "--max-images", "1", "--report", str(report), env=TINY)
        _wait_for("every worker's session started", lambda: len(list(probe_dir.glob("gw*.started"))) == 4, proc, log)
        time.sleep(1.0)  # the workers go on to their first tests, which ask for the export
    finally:
        lock.release()
    assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
    data = json.loads((report / "report.json").read_text())
    assert data["verdicts"]["parity"]["verdict"] == "PASS"
    assert data["verdicts"]["accuracy"]["verdict"] == "PASS"

    events = read_events(cache)
    runs = {e["run"] for e in events}
    assert len(runs) == 1 and None not in runs, runs  # every event carries the xdist testrunuid
    (run,) = runs
    assert read_events(cache, run_id=run) == events
    assert len({e["pid"] for e in events}) >= 3  # each worker's session touches the cache (4 today)
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_key[(e["kind"], e["key"])].append(e)
    assert not [e for e in events if e["event"] == "build_failed"]
    for (kind, key), evs in by_key.items():
        builds = [e for e in evs if e["event"] == "build"]
        assert len(builds) == (0 if kind == "demo" else 1), (kind, key, evs)
        builder = builds[0]["pid"] if builds else None
        assert all(e["event"] in ("hit", "wait") for e in evs if e["pid"] != builder), (kind, evs)
    kinds = Counter(kind for kind, _ in by_key)
    assert kinds["onnx"] == 1 and kinds["bins"] == 1 and kinds["outputs"] >= 2, kinds  # ORT and torch (+ OpenVINO)
    (onnx_key,) = [key for kind, key in by_key if kind == "onnx"]
    assert lock_path.name == f".{onnx_key}.lock"  # the lock this test held is the export's
    onnx_events = by_key[("onnx", onnx_key)]
    assert len({e["pid"] for e in onnx_events}) >= 3, onnx_events
    assert len([e for e in onnx_events if e["event"] == "wait"]) >= 2, onnx_events  # the held lock was waited on

    seen = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("gw*.json"))]
    assert len(seen) == 4
    found = _verify_entries(cache)
    for name in ("onnx_file", "bins", "onnx_outputs"):
        views = {(w["seen"][name]["path"], w["seen"][name]["sha256"]) for w in seen if name in w["seen"]}
        users = sum(name in w["seen"] for w in seen)
        assert len(views) == 1, (name, views)
        assert users >= (3 if name == "onnx_file" else 1), (name, users)
    onnx_path = Path(next(w["seen"]["onnx_file"]["path"] for w in seen if "onnx_file" in w["seen"]))
    assert onnx_path.parent.name == found["onnx"][0]
    manifest = json.loads((onnx_path.parent / "manifest.json").read_text())
    assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == manifest["files"]["model.onnx"]["sha256"]
    assert temp_dirs(cache) == []


# -- 4. a full disk under the ONNX export ------------------------------------------------------------------
@pytest.mark.slow
def test_full_cache_disk_during_the_onnx_export(tmp_path: Path, demo: Path) -> None:
    """A 20 MB tmpfs as the cache: the 178 MB export cannot fit. The exporter refuses before its trace
    (ENOSPC with the sizes; the ENOSPC of a real write is pinned in test_cache.py and by the bins below).
    Every test that needs the ONNX errors with the CacheError line, none passes, and nothing of the
    export is left on the disk."""
    fs = tmp_path / "smallfs"
    with mounted(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(fs)], target=fs):
        cache = fs / "cache"
        gate = run_gate(tmp_path, "-m", "parity or accuracy", "-k", "not matches_pytorch", *real_args(demo),
                        "--max-images", "2", cache=cache)
        left = entries(cache, "onnx"), temp_dirs(cache)
        used = os.statvfs(fs)
        used_bytes = (used.f_blocks - used.f_bfree) * used.f_frsize
        events = read_events(cache)
    line = gate.message("test_onnx_well_formed")
    assert re.fullmatch(rf"CacheError: {re.escape(str(cache))}: disk full while building ONNX export in onnx/ \(No "
                        r"space left on device: the export needs at least 170 MiB, (1\d|20) MiB free, ENOSPC\)\. Hint: "
                        r"free space on that disk or pass --cache-dir DIR on another one", line), line
    assert_one_line_errors(gate, ("test_onnx_well_formed", "test_onnxruntime_miou",
                                  "test_openvino_matches_onnxruntime[f32]", "test_openvino_matches_onnxruntime[bf16]"),
                           line)
    assert left == ([], [])
    assert used_bytes < 1 << 20, f"{used_bytes} bytes still used on the cache disk"
    assert [(e["kind"], e["event"]) for e in events] == [("onnx", "build_failed")], events  # tried once
