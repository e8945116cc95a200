"""intrada.model.checkpoint: safe strict loading, the two accepted wrappers, and issue 6's bad checkpoints,
each pinned with its message both from the library and through `intrada pth2onnx` (exit code 2, one
line on stderr, no traceback, nothing written).

Variants are derived from a *compact* state_dict: the exact 640 keys and shapes, every float tensor a
view into one shared random buffer, so torch.save writes that storage once (~10 MB instead of
180 MB) while loading still copies full-size tensors into the real model. The real 180 MB file
(tests/conftest.py, once per session) is used where the size matters: the plain load and the
truncated download. Each variant file is built lazily and shared by the library test and the CLI
test of the same case."""
from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch

from _hostile import payload
from intrada.model.checkpoint import check_keys, load_model, read_state_dict, save_state_dict
from intrada.core.errors import CheckpointError
from intrada.model.deeplab import get_deeplab_v2

RESNET_HEAD_KEYS = [f"layer{h}.conv2d_list.{b}.{p}" for h in (5, 6) for b in range(4) for p in ("weight", "bias")]




# --- bad checkpoint builders: name -> (build(dir, sd, good_path) -> path, pattern) ---------------


def _sd_copy(sd: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict(sd)  # new mapping, shared (never mutated) tensors


def _b_missing(d: Path, sd: Any, good: Path) -> Path:
    return d / "does_not_exist.pth"


def _b_directory(d: Path, sd: Any, good: Path) -> Path:
    (d / "adir.pth").mkdir()
    return d / "adir.pth"


def _b_empty(d: Path, sd: Any, good: Path) -> Path:
    (d / "empty.pth").write_bytes(b"")
    return d / "empty.pth"


def _b_truncated(d: Path, sd: Any, good: Path) -> Path:
    """The real 180 MB torch.save file cut in half (an interrupted download)."""
    out = d / "truncated.pth"
    with open(good, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read(good.stat().st_size // 2))
    return out


def _b_truncated_legacy(d: Path, sd: Any, good: Path) -> Path:
    small = OrderedDict((k, v) for k, v in sd.items() if k.startswith("layer1.0."))
    torch.save(small, d / "full_legacy.pth", _use_new_zipfile_serialization=False)
    data = (d / "full_legacy.pth").read_bytes()
    (d / "truncated_legacy.pth").write_bytes(data[: len(data) // 2])
    return d / "truncated_legacy.pth"


def _b_random_bytes(d: Path, sd: Any, good: Path) -> Path:
    (d / "random.pth").write_bytes(np.random.default_rng(0).bytes(1 << 16))
    return d / "random.pth"


def _b_text(d: Path, sd: Any, good: Path) -> Path:
    (d / "text.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 178000000\n")
    return d / "text.pth"


def _b_plain_pickle(d: Path, sd: Any, good: Path) -> Path:
    """pickle.dump of a dict of lists (Python's default protocol): not a torch file."""
    (d / "pickle.pth").write_bytes(pickle.dumps({"conv1.weight": [0.0] * 4}, protocol=pickle.DEFAULT_PROTOCOL))
    return d / "pickle.pth"


def _b_tensor(d: Path, sd: Any, good: Path) -> Path:
    torch.save(torch.zeros(3), d / "tensor.pth")
    return d / "tensor.pth"


def _b_empty_dict(d: Path, sd: Any, good: Path) -> Path:
    torch.save({}, d / "empty_dict.pth")
    return d / "empty_dict.pth"


def _b_non_tensor(d: Path, sd: Any, good: Path) -> Path:
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3, "lr": 0.1}, d / "non_tensor.pth")
    return d / "non_tensor.pth"


def _b_wrong_keys(d: Path, sd: Any, good: Path) -> Path:
    bad = _sd_copy(sd)
    for k in ("layer3.5.conv2.weight", "layer3.5.bn2.weight", "layer4.2.conv3.weight", "layer6.conv2d_list.3.bias"):
        del bad[k]
    for i in range(5):
        bad[f"extra_head.{i}.weight"] = torch.zeros(2)
    torch.save(bad, d / "wrong_keys.pth")
    return d / "wrong_keys.pth"


def _b_wrong_shapes(d: Path, sd: Any, good: Path) -> Path:
    """A 16-class (SYNTHIA) model: every head tensor has the wrong shape."""
    bad = _sd_copy(sd)
    for k in RESNET_HEAD_KEYS:
        bad[k] = torch.zeros(16, *sd[k].shape[1:])
    torch.save(bad, d / "wrong_shapes.pth")
    return d / "wrong_shapes.pth"


def _b_single_level(d: Path, sd: Any, good: Path) -> Path:
    bad = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("layer5."))
    assert len(bad) == 632  # the reference's single-level entry count
    torch.save(bad, d / "single_level.pth")
    return d / "single_level.pth"


def _b_imagenet_init(d: Path, sd: Any, good: Path) -> Path:
    bad = OrderedDict((f"Scale.{k}", v) for k, v in sd.items() if not k.startswith(("layer5.", "layer6.")))
    torch.save(bad, d / "imagenet_init.pth")
    return d / "imagenet_init.pth"


def _b_nan(d: Path, sd: Any, good: Path) -> Path:
    bad = _sd_copy(sd)
    t = sd["layer4.1.conv2.weight"].clone()
    t.view(-1)[12345] = float("nan")
    bad["layer4.1.conv2.weight"] = t
    torch.save(bad, d / "nan.pth")
    return d / "nan.pth"


def _b_inf(d: Path, sd: Any, good: Path) -> Path:
    bad = _sd_copy(sd)
    t = sd["layer2.3.bn1.running_var"].clone()
    t[5] = float("inf")
    bad["layer2.3.bn1.running_var"] = t
    torch.save(bad, d / "inf.pth")
    return d / "inf.pth"


def _b_malicious(d: Path, sd: Any, good: Path) -> Path:
    torch.save({"conv1.weight": payload("os.system", d / "PWNED")}, d / "malicious.pth")
    return d / "malicious.pth"


NOT_TORCH = r"not a PyTorch checkpoint"
BAD: dict[str, tuple[Callable[[Path, Any, Path], Path], str]] = {
    "missing": (_b_missing, r"does_not_exist\.pth: checkpoint not found"),
    "directory": (_b_directory, r"adir\.pth: is a directory, not a checkpoint file"),
    "empty": (_b_empty, r"empty\.pth: checkpoint is empty \(0 bytes\)"),
    "truncated": (_b_truncated, r"truncated\.pth: truncated or corrupt PyTorch checkpoint"),
    "truncated_legacy": (_b_truncated_legacy, r"truncated_legacy\.pth: truncated or corrupt PyTorch checkpoint"),
    "random_bytes": (_b_random_bytes, r"random\.pth: " + NOT_TORCH),
    "text_file": (_b_text, r"text\.pth: " + NOT_TORCH),
    "plain_pickle": (_b_plain_pickle, r"pickle\.pth: (" + NOT_TORCH + "|refused to unpickle)"),
    "bare_tensor": (_b_tensor, r"expected a state_dict \(a mapping of names to tensors\), got Tensor"),
    "empty_dict": (_b_empty_dict, r"expected a state_dict .*got dict \(empty\)"),
    "non_tensor_entries": (_b_non_tensor, r"2 entries are not tensors \(first: \['epoch', 'lr'\]\)"),
    "wrong_keys": (_b_wrong_keys, r"wrong_keys\.pth: state_dict does not match the IntraDA DeepLabv2: "
                   r"4 missing: layer3\.5\.conv2\.weight, layer3\.5\.bn2\.weight, layer4\.2\.conv3\.weight "
                   r"\(\+1 more\); 5 unexpected: extra_head\.0\.weight, extra_head\.1\.weight, "
                   r"extra_head\.2\.weight \(\+2 more\)"),
    "wrong_shapes": (_b_wrong_shapes, r"16 wrong shape: layer5\.conv2d_list\.0\.weight \[16, 1024, 3, 3\] != "
                     r"\[19, 1024, 3, 3\], layer5\.conv2d_list\.0\.bias \[16\] != \[19\], "
                     r"layer5\.conv2d_list\.1\.weight \[16, 1024, 3, 3\] != \[19, 1024, 3, 3\] \(\+13 more\)"),
    "single_level": (_b_single_level, r"8 missing: layer5\.conv2d_list\.0\.weight, .*\(\+5 more\)\. "
                     r"Hint: this is a single-level \(multi_level=False\) checkpoint without the aux head layer5"),
    "imagenet_init": (_b_imagenet_init, r"536 missing: .* 624 unexpected: Scale\.conv1\.weight.*"
                      r"Hint: this looks like the ImageNet init file"),
    "nan": (_b_nan, r"nan\.pth: 1 tensors hold NaN or Inf \(first: layer4\.1\.conv2\.weight\)"),
    "inf": (_b_inf, r"inf\.pth: 1 tensors hold NaN or Inf \(first: layer2\.3\.bn1\.running_var\)"),
    "malicious_pickle": (_b_malicious, r"malicious\.pth: refused to unpickle"),
}


@pytest.fixture(scope="module")
def compact_sd() -> "OrderedDict[str, torch.Tensor]":
    with torch.device("meta"):
        listing = get_deeplab_v2().state_dict()
    numel = max(v.numel() for v in listing.values())
    g = torch.Generator().manual_seed(11)
    signed = torch.randn(numel, generator=g) * 0.01
    positive = torch.rand(numel, generator=g) + 0.5  # running_var
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, v in listing.items():
        if v.dtype == torch.int64:
            sd[k] = torch.tensor(1234)
        else:
            base = positive if k.endswith("running_var") else signed
            sd[k] = base[: v.numel()].view(v.shape)
    return sd


@pytest.fixture(scope="module")
def bad_checkpoint(tmp_path_factory: pytest.TempPathFactory, compact_sd: Any,
                   random_checkpoint: Path) -> Iterator[Callable[[str], Path]]:
    """``bad_checkpoint(name)`` -> path, built on first use and shared within this module."""
    root = tmp_path_factory.mktemp("bad_checkpoints")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            d = root / name
            d.mkdir()
            built[name] = BAD[name][0](d, compact_sd, random_checkpoint)
        return built[name]

    yield get
    shutil.rmtree(root, ignore_errors=True)


# --- the library -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoint_is_one_clear_error(bad_checkpoint: Callable[[str], Path], case: str) -> None:
    path = bad_checkpoint(case)
    with pytest.raises(CheckpointError, match=BAD[case][1]) as info:
        load_model(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(path) + ": ")  # names the file first
    assert ". Hint: " in text  # says what to do


def test_random_bytes_are_not_reported_as_code(bad_checkpoint: Callable[[str], Path]) -> None:
    """Random bytes are garbage, not a code-carrying pickle: the refusal message would send the
    user after a security problem that does not exist."""
    with pytest.raises(CheckpointError) as info:
        read_state_dict(bad_checkpoint("random_bytes"))
    assert "code" not in str(info.value)


@pytest.mark.parametrize(("fmt", "kind"), [("zip", "os.system"), ("zip", "builtins.open"), ("zip", "builtins.exec"),
                                           ("legacy", "os.system"), ("raw_pickle", "builtins.open")])
def test_code_carrying_pickle_is_never_executed(tmp_path: Path, fmt: str, kind: str) -> None:
    marker = tmp_path / "marker_created_by_unpickling"
    path = tmp_path / "evil.pth"
    evil = {"conv1.weight": payload(kind, marker)}
    if fmt == "raw_pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))  # what torch's legacy format starts with
    else:
        torch.save(evil, path, _use_new_zipfile_serialization=(fmt == "zip"))

    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to unpickle: the file holds Python objects "
                                              r"or code, not only tensors \(weights_only loading\)"):
        load_model(path)
    assert not marker.exists(), "the checkpoint's pickled code ran"

    # control: the payload is live, so the assertion above could fail
    with open(path, "rb") as f:
        obj = pickle.load(f) if fmt == "raw_pickle" else torch.load(f, weights_only=False)
    if hasattr(obj["conv1.weight"], "close"):
        obj["conv1.weight"].close()  # builtins.open returned a file object
    assert marker.exists()


def test_plain_checkpoint_loads_strictly_into_eval_mode(random_checkpoint: Path, random_state_dict: Any) -> None:
    model, ckpt = load_model(random_checkpoint)
    assert ckpt.remap is None and ckpt.path == random_checkpoint
    assert len(ckpt.state_dict) == 640
    assert ckpt.describe() == f"{random_checkpoint} (640 tensors)"
    assert not model.training and not any(m.training for m in model.modules())  # BN uses running stats
    loaded = model.state_dict()
    assert list(loaded) == list(random_state_dict)
    for k, v in random_state_dict.items():
        assert torch.equal(loaded[k], v), k


def test_loaded_model_owns_float32_copies_on_the_cpu(random_state_dict: Any, save_checkpoint: Any) -> None:
    """The layers are built on the meta device and the checkpoint's tensors assigned: what a copying
    load_state_dict gives must still hold. A float64 checkpoint loads as the float32 architecture,
    nothing is left on the meta device, the frozen BN affine stays frozen, and the model's tensors
    are its own (editing one leaves the Checkpoint's untouched)."""
    wide = OrderedDict((k, v.double() if v.is_floating_point() else v) for k, v in random_state_dict.items())
    model, ckpt = load_model(save_checkpoint(wide, "float64.pth"))
    state = model.state_dict()
    assert {v.device.type for v in state.values()} == {"cpu"}
    assert {k: v.dtype for k, v in state.items()} == {k: v.dtype for k, v in random_state_dict.items()}
    assert all(torch.equal(state[k], v) for k, v in random_state_dict.items())
    assert model.conv1.weight.requires_grad and not model.bn1.weight.requires_grad  # upstream's freezing
    with torch.no_grad():
        model.conv1.weight.zero_()
    assert ckpt.state_dict["conv1.weight"].abs().sum() > 0


def _assert_same_weights(state: Any, sd: Any) -> None:
    for k in ("conv1.weight", "layer3.22.bn3.running_var", "layer5.conv2d_list.2.bias", "layer6.conv2d_list.3.weight"):
        assert torch.equal(state[k], sd[k]), k


@pytest.fixture(scope="module")
def meta_model() -> torch.nn.Module:
    with torch.device("meta"):
        return get_deeplab_v2()


def _accepted(path: Path, meta_model: torch.nn.Module) -> Any:
    """read + the strict key/shape check of load_model, without building real weights (the full
    load is covered by the plain, num_batches_tracked and CLI tests)."""
    ckpt = read_state_dict(path)
    check_keys(ckpt, meta_model)
    assert list(ckpt.state_dict)[:2] == ["conv1.weight", "bn1.weight"]
    return ckpt


def test_module_prefix_is_accepted_and_said(save_checkpoint: Callable[..., Path], compact_sd: Any,
                                            meta_model: torch.nn.Module) -> None:
    path = save_checkpoint(OrderedDict((f"module.{k}", v) for k, v in compact_sd.items()), "dp.pth")
    ckpt = _accepted(path, meta_model)
    assert ckpt.remap == "stripped the DataParallel 'module.' prefix"
    assert "stripped the DataParallel 'module.' prefix" in ckpt.describe()
    _assert_same_weights(ckpt.state_dict, compact_sd)


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict"])
def test_state_dict_wrapper_is_accepted_and_said(save_checkpoint: Callable[..., Path], compact_sd: Any,
                                                 meta_model: torch.nn.Module, key: str) -> None:
    path = save_checkpoint({key: compact_sd, "epoch": 7, "best_miou": 47.0}, "wrapped.pth")
    ckpt = _accepted(path, meta_model)
    assert ckpt.remap == f"unwrapped the {key!r} entry"
    _assert_same_weights(ckpt.state_dict, compact_sd)


def test_wrapper_and_prefix_together(save_checkpoint: Callable[..., Path], compact_sd: Any,
                                     meta_model: torch.nn.Module) -> None:
    inner = OrderedDict((f"module.{k}", v) for k, v in compact_sd.items())
    ckpt = _accepted(save_checkpoint({"state_dict": inner}, "both.pth"), meta_model)
    assert ckpt.remap == "unwrapped the 'state_dict' entry; stripped the DataParallel 'module.' prefix"
    _assert_same_weights(ckpt.state_dict, compact_sd)


def test_missing_num_batches_tracked_is_tolerated(save_checkpoint: Callable[..., Path],
                                                  compact_sd: Any) -> None:
    """Spec: checkpoints without num_batches_tracked (536 entries) still load under strict mode."""
    sd = OrderedDict((k, v) for k, v in compact_sd.items() if not k.endswith("num_batches_tracked"))
    assert len(sd) == 536
    model, ckpt = load_model(save_checkpoint(sd, "no_nbt.pth"))
    assert ckpt.remap is None
    loaded = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v), k


def test_legacy_serialization_loads(save_checkpoint: Callable[..., Path], compact_sd: Any,
                                    meta_model: torch.nn.Module) -> None:
    """Spec: old non-zip serialized state_dicts (PyTorch 0.4 era) load with weights_only=True."""
    ckpt = _accepted(save_checkpoint(compact_sd, "legacy.pth", legacy=True), meta_model)
    assert ckpt.remap is None
    _assert_same_weights(ckpt.state_dict, compact_sd)


def test_save_state_dict_is_atomic(tmp_path: Path) -> None:
    sd = OrderedDict(a=torch.arange(3.0))
    target = tmp_path / "out.pth"
    save_state_dict(sd, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], sd["a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pth"]
    # a failing save leaves neither the target nor a temporary file
    target2 = tmp_path / "fail.pth"
    with pytest.raises(Exception):
        save_state_dict({"a": lambda: None}, target2)  # type: ignore[dict-item]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pth"]


# --- through the CLI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD))
def test_cli_pth2onnx_bad_checkpoint(bad_checkpoint: Callable[[str], Path], tmp_path: Path, cli: Any,
                                     case: str) -> None:
    path = bad_checkpoint(case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = cli(["pth2onnx", str(path), str(out_dir / "out.onnx")])
    assert run.rc == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"intrada pth2onnx: error: {path}: ")
    assert re.search(BAD[case][1], lines[0]), lines[0]
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert list(out_dir.iterdir()) == []  # no out.onnx, no temporary file
    if case == "malicious_pickle":
        assert not (path.parent / "PWNED").exists()


@pytest.mark.slow  # a console-script process per case
@pytest.mark.parametrize("case", ["missing", "truncated", "plain_pickle", "malicious_pickle", "wrong_keys"])
def test_console_script_bad_checkpoint(bad_checkpoint: Callable[[str], Path], tmp_path: Path, case: str) -> None:
    """The installed `intrada` entry point in a fresh process (default warning filters, real exit)."""
    path = bad_checkpoint(case)
    out = tmp_path / "out.onnx"
    exe = shutil.which("intrada") or sys.executable
    cmd = [exe] if exe != sys.executable else [exe, "-m", "intrada"]
    proc = subprocess.run([*cmd, "pth2onnx", str(path), str(out)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert re.search(BAD[case][1], proc.stderr), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    if case == "malicious_pickle":
        assert not (path.parent / "PWNED").exists()


def test_cli_announces_the_remap(save_checkpoint: Callable[..., Path], compact_sd: Any, toy_onnx: Path,
                                 tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`module.` checkpoints are accepted and the remap is said on stderr. The 30 s export is
    replaced by a copy of the toy ONNX (same interface), the rest of the command runs for real."""
    import intrada.model.onnx_export as onnx_export

    def fake_export(model: Any, out_path: Any, **kwargs: Any) -> Path:
        shutil.copyfile(toy_onnx, out_path)
        return Path(out_path)

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    path = save_checkpoint(OrderedDict((f"module.{k}", v) for k, v in compact_sd.items()), "dp.pth")
    run = cli(["pth2onnx", str(path), str(tmp_path / "m.onnx")])
    assert run.rc == 0, run.stderr
    assert run.stderr.splitlines() == [f"{path}: stripped the DataParallel 'module.' prefix"]
    assert run.stdout.startswith(f"wrote {tmp_path / 'm.onnx'} (opset 11; input image [batch,3,512,1024]")
