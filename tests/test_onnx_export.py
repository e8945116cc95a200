"""intrada.model.onnx_export: the real network's export (the session seed's, of the demo checkpoint)
checked with the onnx API directly and against torch through a bare ONNX Runtime session; the CLI's
`intrada pth2onnx --verify` round trip on TinyIntraDA (tests/conftest.py: exported_onnx); inspect_onnx (and intrada.core.checks.check_model_outputs) on issue 6's bad ONNX files,
built by editing the toy export (same interface, 40 kB) with the onnx helper API; `intrada inspect`
through the CLI."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from intrada.core import protocol
from intrada.core.errors import OnnxModelError
from intrada.core.checks import check_model_outputs
from intrada.model.onnx_export import export_onnx, inspect_onnx

SPEC_OPS = {"Conv", "Relu", "Add", "MaxPool", "Identity"}  # spec: BN folded into Conv by the exporter


def _dims(vi: Any) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]


# --- the real export ----------------------------------------------------------------------------------


def test_cli_pth2onnx_verify_succeeds(exported_onnx: Any) -> None:
    run = exported_onnx.cli
    assert run.rc == 0, run.stderr
    assert run.stderr == ""  # a plain state_dict: no remap to announce
    lines = run.stdout.splitlines()
    assert lines[0] == (f"wrote {exported_onnx.path} (opset 11; input image [batch,3,512,1024]; outputs 0 aux_logits "
                        "(aux), 1 main_logits (main) [batch,19,65,129])")
    assert re.match(r"onnxruntime vs pytorch on 1 images: PASS \| aux: .* main: ", lines[1]), lines[1]
    assert len(lines) == 2
    # written to a temporary name and renamed: nothing else is left beside it
    assert [p.name for p in exported_onnx.path.parent.iterdir()] == [exported_onnx.path.name]


def test_export_passes_the_checker_and_has_the_seed_interface(seed_onnx: Any) -> None:
    onnx.checker.check_model(str(seed_onnx.path))
    m = onnx.load(str(seed_onnx.path), load_external_data=False)
    assert {o.domain: o.version for o in m.opset_import}.get("", None) == 11
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    assert [i.name for i in inputs] == ["image"]
    assert inputs[0].type.tensor_type.elem_type == TensorProto.FLOAT
    dims = _dims(inputs[0])
    assert dims[1:] == [3, 512, 1024] and isinstance(dims[0], str) and dims[0]  # dynamic batch
    outs = list(m.graph.output)
    assert [o.name for o in outs] == ["aux_logits", "main_logits"]  # index 0 aux, index 1 main
    for o in outs:
        assert o.type.tensor_type.elem_type == TensorProto.FLOAT
        assert _dims(o) == [dims[0], 19, 65, 129]
    ops = {n.op_type for n in m.graph.node}
    assert ops <= SPEC_OPS, ops - SPEC_OPS
    pools = [n for n in m.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in pools[0].attribute}
    assert attrs["ceil_mode"] == 1 and list(attrs["pads"]) == [1, 1, 1, 1]
    assert list(attrs["kernel_shape"]) == [3, 3] and list(attrs["strides"]) == [2, 2]
    assert 170e6 < seed_onnx.path.stat().st_size < 190e6  # spec: about 178 MB, weights inside


def test_inspect_onnx_on_the_export(seed_onnx: Any) -> None:
    info = inspect_onnx(seed_onnx.path, require_dynamic_batch=True)
    assert info.path == seed_onnx.path
    assert info.opset == 11 and info.input_name == "image"
    assert info.output_names == ("aux_logits", "main_logits")
    assert info.dynamic_batch and info.batch_dim == "batch"
    assert info.output_shapes == (("batch", 19, 65, 129), ("batch", 19, 65, 129))
    assert set(info.op_types) <= SPEC_OPS and "Conv" in info.op_types


def test_onnxruntime_matches_torch_by_index(big_io: Any) -> None:
    t_aux, t_main = big_io.torch_out
    assert len(big_io.ort_out) == 2
    o_aux, o_main = big_io.ort_out
    assert o_aux.shape == o_main.shape == (1, 19, 65, 129) and o_main.dtype == np.float32
    for name, ref, got in (("aux", t_aux, o_aux), ("main", t_main, o_main)):
        scale = float(np.abs(ref).max())
        assert scale > 0
        err = float(np.abs(got.astype(np.float64) - ref).max())
        assert err <= 1e-3 * scale, f"{name}: max|onnx - torch| {err:.3g} > 1e-3 x {scale:.3g}"
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.999, name
    # the heads are distinguishable, so a swapped output order could not pass the loop above
    assert float(np.abs(o_main - t_aux).max()) > 1e-2 * float(np.abs(t_main).max())


# --- export_onnx on the toy (fast) ------------------------------------------------------------------------


def test_export_onnx_writes_atomically_and_takes_the_opset(toy_model: Any, tmp_path: Path) -> None:
    out = export_onnx(toy_model, tmp_path / "sub" / "toy.onnx", opset=13)
    assert out == tmp_path / "sub" / "toy.onnx"
    assert [p.name for p in out.parent.iterdir()] == ["toy.onnx"]
    info = inspect_onnx(out, require_dynamic_batch=True)
    assert info.opset == 13 and info.input_name == "image" and info.dynamic_batch
    assert info.output_names == protocol.ONNX_OUTPUT_NAMES


def test_export_traces_without_autograd_and_writes_the_seeds_bytes(toy_factory: Callable[..., Any],
                                                                    tmp_path: Path) -> None:
    """export_onnx traces under no_grad (one full-size forward without an autograd graph: 9.9 s -> 7.6 s
    for the real model on 2 cores); the file is byte-identical to the seed's plain torch.onnx.export
    with grad enabled and the same arguments."""
    import torch

    model = toy_factory(seed=4)
    grad_seen: list[bool] = []
    model.register_forward_hook(lambda *_: grad_seen.append(torch.is_grad_enabled()))
    ours = export_onnx(model, tmp_path / "ours.onnx")
    assert grad_seen == [False]
    axes = {n: {0: protocol.ONNX_BATCH_DIM} for n in (protocol.ONNX_INPUT_NAME, *protocol.ONNX_OUTPUT_NAMES)}
    seeds = tmp_path / "seed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        assert torch.is_grad_enabled()
        torch.onnx.export(model, (torch.zeros(1, *protocol.INPUT_SHAPE_CHW),), str(seeds),
                          input_names=[protocol.ONNX_INPUT_NAME], output_names=list(protocol.ONNX_OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=protocol.DEFAULT_OPSET, do_constant_folding=True,
                          dynamo=False)
    assert ours.read_bytes() == seeds.read_bytes()


def test_export_onnx_refuses_a_wrong_model_and_leaves_nothing(toy_factory: Callable[..., Any],
                                                              tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match=r"output 0 \('aux_logits'\) has shape \['batch', 19, 64, 128\], "
                                             r"expected \[N, 19, 65, 129\]\. Hint: 65x129 needs maxpool ceil_mode=True"):
        export_onnx(toy_factory(ceil_mode=False), tmp_path / "wrong.onnx")
    assert list(tmp_path.iterdir()) == []


def _disk_with_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    from intrada.core import fs as cache_fs

    monkeypatch.setattr(cache_fs, "free_bytes", lambda path: free)


def test_a_disk_too_small_for_the_weights_is_refused_before_the_trace(toy_factory: Callable[..., Any],
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX holds at least the conv weights (BatchNorm folded in): with less free space the export
    fails at once with ENOSPC and the sizes (the real model: 170 MiB, and no 8 s trace first)."""
    import errno

    from intrada.model.onnx_export import min_export_bytes

    model = toy_factory(seed=2)
    traced: list[bool] = []
    model.register_forward_hook(lambda *_: traced.append(True))
    need = min_export_bytes(model)
    assert need == sum(p.numel() * 4 for name, p in model.named_parameters() if not name.startswith("bn"))
    _disk_with_free(monkeypatch, need - 1)
    with pytest.raises(OSError) as info:
        export_onnx(model, tmp_path / "model.onnx")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "model.onnx")
    assert re.fullmatch(r"No space left on device: the export needs at least \d+ MiB, \d+ MiB free",
                        info.value.strerror), info.value.strerror
    assert traced == [] and list(tmp_path.iterdir()) == []
    _disk_with_free(monkeypatch, need)  # exactly enough: the export runs
    assert export_onnx(model, tmp_path / "model.onnx").is_file() and traced == [True]


def test_a_read_only_folder_is_refused_before_the_trace(toy_factory: Callable[..., Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only filesystem (what root meets: permission bits do not stop it) is EROFS at once, not
    after the trace, and never reported as a full disk (a small read-only mount has little free space)."""
    import errno
    import os

    real = os.statvfs

    class ReadOnly:
        def __init__(self, st: Any) -> None:
            self._st = st

        def __getattr__(self, name: str) -> Any:
            return os.ST_RDONLY | self._st.f_flag if name == "f_flag" else getattr(self._st, name)

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    _disk_with_free(monkeypatch, 0)
    model = toy_factory(seed=2)
    traced: list[bool] = []
    model.register_forward_hook(lambda *_: traced.append(True))
    with pytest.raises(OSError) as info:
        export_onnx(model, tmp_path / "model.onnx")
    assert info.value.errno == errno.EROFS and info.value.filename == str(tmp_path / "model.onnx")
    assert traced == [] and list(tmp_path.iterdir()) == []


def test_cli_os_errors_are_one_line(random_checkpoint: Path, cli: Callable[..., Any], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Any OSError reaching `intrada` (here EROFS from the export's check) is one line naming the path
    and the errno, exit 2, no traceback."""
    import errno

    import intrada.model.onnx_export

    def read_only(model: Any, out: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr(intrada.model.onnx_export, "check_room", read_only)
    out = tmp_path / "model.onnx"
    run = cli(["pth2onnx", str(random_checkpoint), str(out)])
    assert run.rc == 2 and run.stdout == ""
    assert run.stderr == (f"intrada pth2onnx: error: {out}: Read-only file system (EROFS). Hint: check that the path "
                          "exists and that you may read it (an input) or write its folder (an output)\n")


def test_cli_pth2onnx_on_a_full_disk_is_one_line(random_checkpoint: Path, cli: Callable[..., Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to end in the exporter's OSError traceback, after the trace."""
    _disk_with_free(monkeypatch, 20 << 20)
    out = tmp_path / "model.onnx"
    run = cli(["pth2onnx", str(random_checkpoint), str(out)])
    assert run.rc == 2 and run.stdout == ""
    assert run.stderr == (f"intrada pth2onnx: error: {out}: disk full (No space left on device: the export needs at "
                          "least 170 MiB, 20 MiB free). Hint: free space on that disk or write the output to another "
                          "one\n")
    assert list(tmp_path.iterdir()) == []

# --- bad ONNX files ----------------------------------------------------------------------------------------


def _rename_input(m: onnx.ModelProto) -> None:
    m.graph.input[0].name = "input"
    for n in m.graph.node:
        n.input[:] = ["input" if i == "image" else i for i in n.input]


def _static_batch(m: onnx.ModelProto) -> None:
    for vi in (*m.graph.input, *m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = 1  # clears dim_param (oneof)


def _small_input(m: onnx.ModelProto) -> None:
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 256, 512


def _fp16_input(m: onnx.ModelProto) -> None:
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16


def _int_output(m: onnx.ModelProto) -> None:
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64


def _two_inputs(m: onnx.ModelProto) -> None:
    m.graph.input.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))


def _three_outputs(m: onnx.ModelProto) -> None:
    m.graph.node.append(helper.make_node("Identity", ["main_logits"], ["extra"]))
    m.graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 19, 65, 129]))


def _one_output(m: onnx.ModelProto) -> None:
    del m.graph.output[0]


def _unknown_op(m: onnx.ModelProto) -> None:
    m.graph.node.append(helper.make_node("NoSuchOp", ["main_logits"], ["junk"]))


EDITS: dict[str, tuple[Callable[[onnx.ModelProto], None], dict[str, Any], str]] = {
    "wrong_input_name": (_rename_input, {}, r"input is named 'input', expected 'image'\. Hint: atc's --input_shape"),
    "static_batch": (_static_batch, {"require_dynamic_batch": True},
                     r"input batch dimension is static \(1\) but several batch sizes are needed\. Hint: export with "
                     r"dynamic_axes"),
    "wrong_input_size": (_small_input, {}, r"input shape \['batch', 3, 256, 512\], expected \[N, 3, 512, 1024\]"),
    "fp16_input": (_fp16_input, {}, r"input is not float32"),
    "int_output": (_int_output, {}, r"output 0 \('aux_logits'\) is not float32"),
    "two_inputs": (_two_inputs, {}, r"expected 1 input, found 2 \(\['image', 'scale'\]\)"),
    "three_outputs": (_three_outputs, {}, r"expected 2 outputs \(aux, main\), found 3 \(\['aux_logits', "
                      r"'main_logits', 'extra'\]\)"),
    "one_output": (_one_output, {}, r"expected 2 outputs \(aux, main\), found 1 \(\['main_logits'\]\)"),
    "checker": (_unknown_op, {}, r"onnx\.checker rejects the model \(.*NoSuchOp"),
}


@pytest.fixture
def edited_onnx(toy_onnx: Path, tmp_path: Path) -> Callable[[str], Path]:
    def make(case: str) -> Path:
        m = onnx.load(str(toy_onnx))
        EDITS[case][0](m)
        path = tmp_path / f"{case}.onnx"
        onnx.save(m, str(path))
        return path

    return make


def test_toy_passes_as_is(toy_onnx: Path) -> None:
    """The unedited toy passes, so each failure below is caused by its one edit."""
    info = inspect_onnx(toy_onnx, require_dynamic_batch=True)
    assert info.output_names == ("aux_logits", "main_logits") and info.batch_dim == "batch"


@pytest.mark.parametrize("case", list(EDITS))
def test_inspect_rejects(edited_onnx: Callable[[str], Path], case: str) -> None:
    path = edited_onnx(case)
    with pytest.raises(OnnxModelError, match=EDITS[case][2]) as info:
        inspect_onnx(path, **EDITS[case][1])
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_static_batch_is_fine_for_a_single_batch_size(edited_onnx: Callable[[str], Path]) -> None:
    info = inspect_onnx(edited_onnx("static_batch"))
    assert info.batch_dim == 1 and not info.dynamic_batch


def test_wrong_output_shape_from_a_real_graph(toy_factory: Callable[..., Any], toy_exporter: Callable[..., Path],
                                              tmp_path: Path) -> None:
    """64x128 as produced by maxpool ceil_mode=False (not a hand-edited shape)."""
    path = toy_exporter(toy_factory(ceil_mode=False), tmp_path / "floor.onnx")
    with pytest.raises(OnnxModelError, match=r"output 0 \('aux_logits'\) has shape \['batch', 19, 64, 128\], "
                                             r"expected \[N, 19, 65, 129\]"):
        inspect_onnx(path)


def test_single_head_export_is_rejected(toy_factory: Callable[..., Any], toy_exporter: Callable[..., Path],
                                        tmp_path: Path) -> None:
    path = toy_exporter(toy_factory(heads=1), tmp_path / "single.onnx", output_names=("main_logits",))
    with pytest.raises(OnnxModelError, match=r"expected 2 outputs \(aux, main\), found 1.*Hint: export the "
                                             r"multi-level model; the main head is output 1"):
        inspect_onnx(path)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "pattern"), [
    ("missing", r"missing\.onnx: ONNX file not found"),
    ("random_bytes", r"random_bytes\.onnx: not an ONNX model \(.*\)\. Hint: pass the \.onnx written by intrada pth2onnx"),
    ("text", r"text\.onnx: not an ONNX model \(DecodeError"),
    ("empty", r"empty\.onnx: (not an ONNX model|onnx\.checker rejects the model)"),
    ("a_checkpoint", r"a_checkpoint\.onnx: not an ONNX model \(DecodeError"),
])
def test_not_onnx(tmp_path: Path, case: str, pattern: str) -> None:
    path = tmp_path / f"{case}.onnx"
    if case == "random_bytes":
        _write(path, np.random.default_rng(0).bytes(1 << 16))
    elif case == "text":
        path.write_text("this is not an ONNX model\n")
    elif case == "empty":
        _write(path, b"")
    elif case == "a_checkpoint":
        import torch

        torch.save({"conv1.weight": torch.zeros(4)}, path)
    with pytest.raises(OnnxModelError, match=pattern):
        inspect_onnx(path)


# --- NaN / Inf in outputs -------------------------------------------------------------------------------


def test_check_finite_on_a_graph_producing_nan(toy_onnx: Path, tmp_path: Path, toy_batch: np.ndarray) -> None:
    import onnxruntime as ort

    m = onnx.load(str(toy_onnx))
    for init in m.graph.initializer:
        if init.name == "main_a.bias":
            bias = numpy_helper.to_array(init).copy()
            bias[3] = np.nan
            init.CopyFrom(numpy_helper.from_array(bias, init.name))
    path = tmp_path / "nan.onnx"
    onnx.save(m, str(path))
    inspect_onnx(path)  # structurally fine: only running it shows the problem
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    aux, main = sess.run(None, {"image": toy_batch[:1]})
    check_model_outputs(path, (aux,), "1 random image")  # the aux head is untouched
    with pytest.raises(OnnxModelError, match=r"nan\.onnx: output 1 holds 8385 NaN/Inf values on 1 random image\. "
                                             r"Hint: the model is numerically broken"):
        check_model_outputs(path, (aux, main), "1 random image")  # one class plane: 65 x 129 = 8385 values


# --- `intrada inspect` -------------------------------------------------------------------------------------


def test_cli_inspect_the_export(exported_onnx: Any, cli: Any) -> None:
    run = cli(["inspect", str(exported_onnx.path)])
    assert run.rc == 0 and run.stderr == ""
    summary = json.loads(run.stdout)
    assert summary["path"] == str(exported_onnx.path)
    assert summary["input"] == "image" and summary["opset"] == 11 and summary["batch_dim"] == "batch"
    assert summary["outputs"] == ["aux_logits", "main_logits"]
    assert summary["output_shapes"] == [["batch", 19, 65, 129], ["batch", 19, 65, 129]]
    assert set(summary["ops"]) <= SPEC_OPS


@pytest.mark.parametrize("case", ["wrong_input_name", "one_output", "three_outputs", "checker"])
def test_cli_inspect_rejects(edited_onnx: Callable[[str], Path], cli: Any, case: str) -> None:
    path = edited_onnx(case)
    run = cli(["inspect", str(path)])
    assert run.rc == 2 and run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"intrada inspect: error: {path}: ")
    assert re.search(EDITS[case][2], lines[0]) and "Traceback" not in run.stderr


def test_cli_inspect_not_onnx(tmp_path: Path, cli: Any) -> None:
    path = _write(tmp_path / "random.onnx", np.random.default_rng(1).bytes(4096))
    run = cli(["inspect", str(path)])
    assert run.rc == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1
    assert re.match(rf"intrada inspect: error: {re.escape(str(path))}: not an ONNX model", run.stderr)
