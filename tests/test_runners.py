"""intrada.runners: the base class's lifecycle and validation (with a fake backend that records what
reached it), and the torch / ONNX Runtime / OpenVINO runners agreeing on the toy model, which has
the exact IntraDA interface ([N,3,512,1024] -> 2 x [N,19,65,129]) but runs in milliseconds."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from intrada.core.errors import CheckpointError, IntradaError
from intrada.runners import Runner, RunnerError
from intrada.runners.cpu import OnnxRuntimeRunner, TorchRunner

IN = (3, 512, 1024)
OUT = (19, 65, 129)


class FakeRunner(Runner):
    backend = "fake"

    def __init__(self, out_shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None) -> None:
        super().__init__()
        self.out_shapes = out_shapes
        self.calls: list[str] = []
        self.seen: list[np.ndarray] = []

    def _activate(self) -> None:
        self.calls.append("activate")

    def _deactivate(self) -> None:
        self.calls.append("deactivate")

    def _infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append("infer")
        self.seen.append(batch)
        shapes = self.out_shapes or ((batch.shape[0], *OUT), (batch.shape[0], *OUT))
        return np.zeros(shapes[0], np.float32), np.ones(shapes[1], np.float32)


def _x(n: int = 1, dtype: Any = np.float32) -> np.ndarray:
    return np.zeros((n, *IN), dtype)


# --- base class ---------------------------------------------------------------------------------------------


def test_runner_is_abstract() -> None:
    with pytest.raises(TypeError):
        Runner()  # type: ignore[abstract]


def test_infer_before_activate_is_an_error() -> None:
    r = FakeRunner()
    with pytest.raises(RunnerError, match=r"^fake-runner: infer\(\) called before activate\(\)\. Hint: use the "
                                          r"runner as a context manager$"):
        r.infer(_x())
    assert r.calls == []  # constructing is free, nothing reached the backend


def test_lifecycle() -> None:
    r = FakeRunner()
    with r as active:
        assert active is r
        r.activate()  # idempotent
        aux, main = r.infer(_x(2))
        assert aux.shape == main.shape == (2, *OUT)
    assert r.calls == ["activate", "infer", "deactivate"]
    with pytest.raises(RunnerError, match="before activate"):
        r.infer(_x())
    with pytest.raises(ZeroDivisionError):
        with r:
            1 / 0
    assert r.calls[-2:] == ["activate", "deactivate"]  # deactivated on the way out of an exception


@pytest.mark.parametrize(("batch", "pattern"), [
    (_x(1, np.float64), r"input must be a float32 numpy array, got float64"),
    (_x(1, np.float16), r"input must be a float32 numpy array, got float16"),
    (_x(1, np.uint8), r"input must be a float32 numpy array, got uint8"),
    ([[0.0]], r"input must be a float32 numpy array, got list"),
    (torch.zeros(1, *IN), r"input must be a float32 numpy array, got torch\.float32"),
    (np.zeros(IN, np.float32), r"input shape \(3, 512, 1024\), expected \[N, 3, 512, 1024\]"),
    (np.zeros((0, *IN), np.float32), r"input shape \(0, 3, 512, 1024\), expected \[N, 3, 512, 1024\]"),
    (np.zeros((1, 3, 1024, 2048), np.float32), r"input shape \(1, 3, 1024, 2048\), expected \[N, 3, 512, 1024\]"),
    (np.zeros((1, 1024, 512, 3), np.float32), r"input shape \(1, 1024, 512, 3\), expected \[N, 3, 512, 1024\]"),  # NHWC
    (np.zeros((1, 1, 3, 512, 1024), np.float32), r"input shape \(1, 1, 3, 512, 1024\), expected \[N, 3, 512, 1024\]"),
])
def test_input_validation_happens_before_the_backend(batch: Any, pattern: str) -> None:
    with FakeRunner() as r:
        with pytest.raises(RunnerError, match=r"^fake-runner: " + pattern + r"\. Hint: "):
            r.infer(batch)
        assert "infer" not in r.calls


def test_noncontiguous_input_reaches_the_backend_contiguous() -> None:
    x = np.arange(2 * 3 * 512 * 1024, dtype=np.float32).reshape(2, *IN)[:, ::-1]  # an RGB->BGR view
    assert not x.flags.c_contiguous
    with FakeRunner() as r:
        r.infer(x)
    assert r.seen[0].flags.c_contiguous
    np.testing.assert_array_equal(r.seen[0], x)


@pytest.mark.parametrize(("shapes", "n", "pattern"), [
    (((1, 19, 64, 128), (1, *OUT)), 1, r"aux output has shape \(1, 19, 64, 128\), expected \[1, 19, 65, 129\]"),
    (((1, *OUT), (1, 21, 65, 129)), 1, r"main output has shape \(1, 21, 65, 129\), expected \[1, 19, 65, 129\]"),
    (((1, *OUT), (1, *OUT)), 2, r"aux output has shape \(1, 19, 65, 129\), expected \[2, 19, 65, 129\]"),
    (((*OUT,), (*OUT,)), 1, r"aux output has shape \(19, 65, 129\), expected \[1, 19, 65, 129\]"),
])
def test_output_validation(shapes: Any, n: int, pattern: str) -> None:
    with FakeRunner(shapes) as r:
        with pytest.raises(RunnerError, match=r"^fake-runner: " + pattern + r"\. Hint: check that the model is"):
            r.infer(_x(n))


def test_runner_error_is_a_user_error() -> None:
    assert issubclass(RunnerError, IntradaError)  # the CLI prints it as one line with exit code 2
    assert FakeRunner().describe() == {"backend": "fake"} and FakeRunner().name == "fake-runner"


# --- torch and ONNX Runtime ---------------------------------------------------------------------------------


def test_torch_runner_needs_exactly_one_source(toy_model: Any) -> None:
    with pytest.raises(ValueError, match="exactly one of checkpoint or model"):
        TorchRunner()
    with pytest.raises(ValueError, match="exactly one of checkpoint or model"):
        TorchRunner("x.pth", model=toy_model)


def test_torch_runner_loads_lazily(tmp_path: Path) -> None:
    r = TorchRunner(tmp_path / "missing.pth")  # constructing does not touch the file
    with pytest.raises(CheckpointError, match=r"missing\.pth: checkpoint not found"):
        r.activate()


def test_torch_runner_is_the_model_in_eval_mode(toy_factory: Callable[..., Any], toy_batch: np.ndarray) -> None:
    model = toy_factory()
    model.train()  # train-mode BN would use batch statistics
    with TorchRunner(model=model) as r:
        assert not model.training
        aux, main = r.infer(toy_batch)
    with torch.no_grad():
        ref_aux, ref_main = model.eval()(torch.from_numpy(toy_batch))
    np.testing.assert_array_equal(aux, ref_aux.numpy())
    np.testing.assert_array_equal(main, ref_main.numpy())
    assert aux.dtype == main.dtype == np.float32


def test_torch_runner_rejects_a_single_level_model(toy_factory: Callable[..., Any]) -> None:
    class SingleLevel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = toy_factory(heads=1)

        def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
            return None, self.inner(x)

    with TorchRunner(model=SingleLevel()) as r:
        with pytest.raises(RunnerError, match=r"the model has no aux head \(multi_level=False\)"):
            r.infer(_x())


def _rel_max(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("n", [1, 2])
def test_torch_and_onnxruntime_agree(toy_model: Any, toy_onnx: Path, toy_batch: np.ndarray, n: int) -> None:
    x = toy_batch[:n]
    with TorchRunner(model=toy_model) as t, OnnxRuntimeRunner(toy_onnx, threads=1) as o:
        t_aux, t_main = t.infer(x)
        o_aux, o_main = o.infer(x)
    assert o_aux.shape == o_main.shape == (n, *OUT)
    assert _rel_max(o_aux, t_aux) <= 1e-4 and _rel_max(o_main, t_main) <= 1e-4
    assert _rel_max(o_main, t_aux) > 1e-2  # heads differ: a swap could not pass
    assert (o_main.argmax(1) == t_main.argmax(1)).mean() >= 0.999


def test_onnxruntime_runner_reads_outputs_by_index_not_name(toy_model: Any, toy_exporter: Callable[..., Path],
                                                           toy_batch: np.ndarray, tmp_path: Path) -> None:
    """The seed's export names the aux head "segmentation" and the main head a number."""
    import onnx

    path = toy_exporter(toy_model, tmp_path / "seed_names.onnx", output_names=("segmentation", "main"))
    m = onnx.load(str(path))  # torch.onnx.export refuses numeric names: rename like the 1.8.1 export did
    m.graph.output[1].name = "996"
    for node in m.graph.node:
        node.output[:] = ["996" if o == "main" else o for o in node.output]
    onnx.save(m, str(path))
    with OnnxRuntimeRunner(path) as o:
        aux, main = o.infer(toy_batch[:1])
    with torch.no_grad():
        ref_aux, ref_main = toy_model(torch.from_numpy(toy_batch[:1]))
    assert _rel_max(aux, ref_aux.numpy()) <= 1e-4 and _rel_max(main, ref_main.numpy()) <= 1e-4


def test_runners_take_the_heads_at_the_protocol_indices(toy_model: Any, toy_onnx: Path, toy_batch: np.ndarray,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Said once: with the indices swapped in protocol, every runner swaps its heads (a restated
    index in a runner would not follow)."""
    from intrada.core import protocol

    x = toy_batch[:1]
    with TorchRunner(model=toy_model) as t:
        aux, main = t.infer(x)
        monkeypatch.setattr(protocol, "AUX_OUTPUT_INDEX", 1)
        monkeypatch.setattr(protocol, "MAIN_OUTPUT_INDEX", 0)
        swapped = [t.infer(x)]
    with OnnxRuntimeRunner(toy_onnx, threads=1) as o:  # ONNX Runtime picks its outputs on activation
        swapped.append(o.infer(x))
    if _openvino_installed():
        from intrada.runners.openvino import OpenVinoRunner

        with OpenVinoRunner(toy_onnx) as v:
            swapped.append(v.infer(x))
    for s_aux, s_main in swapped:
        assert _rel_max(s_aux, main) <= 1e-4 and _rel_max(s_main, aux) <= 1e-4


def _openvino_installed() -> bool:
    from intrada.runners.openvino import openvino_available

    return openvino_available()


def test_onnxruntime_runner_errors(toy_factory: Callable[..., Any], toy_exporter: Callable[..., Path],
                                   tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    r = OnnxRuntimeRunner(junk)  # lazy
    with pytest.raises(RunnerError, match=r"junk\.onnx: ONNX Runtime cannot load the model \(.*\)\. Hint: check the "
                                          r"file with `intrada inspect`"):
        r.activate()
    single = toy_exporter(toy_factory(heads=1), tmp_path / "single.onnx", output_names=("main_logits",))
    with pytest.raises(RunnerError, match=r"single\.onnx: model has 1 output\(s\), expected 2 \(aux, main\)"):
        OnnxRuntimeRunner(single).activate()


def test_describe(toy_model: Any, toy_onnx: Path) -> None:
    import onnxruntime as ort

    assert TorchRunner(model=toy_model).describe()["version"] == torch.__version__
    d = OnnxRuntimeRunner(toy_onnx, threads=3).describe()
    assert d == {"backend": "onnxruntime", "version": ort.__version__, "device": "cpu",
                 "provider": "CPUExecutionProvider", "threads": 3}


# --- OpenVINO (optional) ----------------------------------------------------------------------------------------


def _openvino() -> Any:
    return pytest.importorskip("openvino", reason="OpenVINO is an optional extra (pip install openvino)")


def test_openvino_f32_agrees_with_onnxruntime(toy_onnx: Path, toy_batch: np.ndarray) -> None:
    _openvino()
    from intrada.runners.openvino import OpenVinoRunner

    with OnnxRuntimeRunner(toy_onnx) as o, OpenVinoRunner(toy_onnx, precision="f32") as v:
        ref = o.infer(toy_batch)
        got = v.infer(toy_batch)
        again = v.infer(toy_batch[:1])
    for g, r in zip(got, ref):
        assert g.shape == r.shape == (2, *OUT) and g.dtype == np.float32
        assert _rel_max(g, r) <= 1e-4
    assert _rel_max(got[1], ref[0]) > 1e-2  # index 0 aux, index 1 main
    # outputs are copies: the next request does not overwrite what an earlier call returned
    assert _rel_max(got[1][:1], again[1]) <= 1e-4 and _rel_max(got[1], ref[1]) <= 1e-4


def test_openvino_bf16_runs_close(toy_onnx: Path, toy_batch: np.ndarray) -> None:
    _openvino()
    from intrada.runners.openvino import OpenVinoRunner

    with OnnxRuntimeRunner(toy_onnx) as o, OpenVinoRunner(toy_onnx, precision="bf16") as v:
        ref_main = o.infer(toy_batch[:1])[1]
        main = v.infer(toy_batch[:1])[1]
    assert (main.argmax(1) == ref_main.argmax(1)).mean() >= 0.95  # thresholds.toml openvino.bf16_min_argmax_agreement


def test_openvino_errors(tmp_path: Path) -> None:
    _openvino()
    from intrada.runners.openvino import OpenVinoRunner

    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoRunner(tmp_path / "m.onnx", precision="fp16")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(RunnerError, match=r"junk\.onnx: OpenVINO cannot compile the model"):
        OpenVinoRunner(junk).activate()
