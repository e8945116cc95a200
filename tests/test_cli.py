"""`intrada` end to end on a small Cityscapes-format tree (real 2048x1024 PNGs): pth2onnx ->
preprocess -> gen-info -> infer -> postprocess, the seed's chain without a device.

pth2onnx exports a random-weights checkpoint of TinyIntraDA (``exported_onnx``: the export and its
--verify; the real network's export is checked on the session seed's, tests/test_onnx_export.py). The chain's infer and postprocess run the toy network with the exact interface
(``toy_onnx``: input ``image`` [N,3,512,1024], outputs [N,19,65,129] aux then main): what they do
(batching, the ais_bench file layout, the main head at index 1, the mIoU) does not depend on the
network's depth, and the real network's two full-size forwards per image would only add time; the
gate runs the real chain on the demo (tests/test_gate.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from intrada.core import protocol

pytestmark = pytest.mark.slow  # every step is a `python -m intrada` process



def intrada(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "intrada", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from intrada.demo import make_cityscapes

    root = tmp_path_factory.mktemp("cli") / "cityscapes"
    make_cityscapes(root, n_images=2, seed=3)
    return root


@pytest.fixture(scope="module")
def chain(tree: Path, toy_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the whole chain once; each test inspects one step's output."""
    work = tmp_path_factory.mktemp("chain")
    steps = {
        "preprocess": intrada("preprocess", str(tree), str(work / "bins"), "--quiet"),
        "gen-info": intrada("gen-info", "bin", str(work / "bins"), str(work / "list.info"), "512", "1024"),
        "infer": intrada("infer", "--onnx", str(toy_onnx), "--bins", str(work / "bins"), "--out",
                         str(work / "dumps"), "--batch-size", "2", "--quiet"),
        "postprocess": intrada("postprocess", str(tree), str(work / "dumps"), "--json", str(work / "miou.json"),
                               "--quiet"),
    }
    return {"work": work, "steps": steps, "onnx": toy_onnx}


def test_every_step_succeeds(chain: dict) -> None:
    for name, proc in chain["steps"].items():
        assert proc.returncode == 0, f"intrada {name}: {proc.stderr}"


def test_pth2onnx_reports_the_interface(exported_onnx) -> None:
    assert exported_onnx.cli.rc == 0, exported_onnx.cli.stderr
    assert "0 aux_logits (aux), 1 main_logits (main)" in exported_onnx.cli.stdout
    assert "PASS" in exported_onnx.cli.stdout  # --verify: ONNX Runtime vs PyTorch


def test_preprocess_writes_one_bin_per_image(chain: dict, tree: Path) -> None:
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.preprocess import preprocess_image

    samples = list_samples(tree)
    bins = sorted((chain["work"] / "bins").glob("*.bin"))
    assert [b.stem for b in bins] == [s.name for s in samples]
    assert all(b.stat().st_size == protocol.BIN_BYTES for b in bins)
    assert np.array_equal(np.fromfile(bins[0], dtype="<f4").reshape(protocol.INPUT_SHAPE_CHW),
                          preprocess_image(samples[0].image))


def test_gen_info_lines_follow_the_seed(chain: dict) -> None:
    lines = (chain["work"] / "list.info").read_text().splitlines()
    bins = sorted((chain["work"] / "bins").glob("*.bin"))
    assert lines == [f"{i} {chain['work'] / 'bins' / b.name} 512 1024" for i, b in enumerate(bins)]


def test_infer_writes_the_ais_bench_layout(chain: dict) -> None:
    from intrada.runners.cpu import OnnxRuntimeRunner

    dumps = chain["work"] / "dumps"
    names = sorted(b.stem for b in (chain["work"] / "bins").glob("*.bin"))
    assert sorted(p.name for p in dumps.iterdir()) == sorted(f"{n}_{i}.bin" for n in names for i in (0, 1))
    assert all(p.stat().st_size == protocol.DUMP_BYTES for p in dumps.iterdir())
    # batch 2 on the CLI == batch 1 through the runner, per image, main head = output index 1
    x = np.fromfile(chain["work"] / "bins" / f"{names[1]}.bin", dtype="<f4").reshape(1, *protocol.INPUT_SHAPE_CHW)
    with OnnxRuntimeRunner(chain["onnx"]) as r:
        aux, main = r.infer(x)
    got = np.fromfile(dumps / f"{names[1]}_1.bin", dtype="<f4").reshape(protocol.OUTPUT_SHAPE_CHW)
    np.testing.assert_allclose(got, main[0], rtol=0, atol=1e-3 * float(np.abs(main).max()))


def test_postprocess_json_equals_the_seed_procedure(chain: dict, tree: Path) -> None:
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.dumps import DumpSet
    from intrada.evaluation.evaluate import evaluate_dumps_reference

    payload = json.loads((chain["work"] / "miou.json").read_text())
    assert payload["num_images"] == 2 and payload["dump_format"] == "ais_bench"
    assert len(payload["per_class_iou"]) == protocol.NUM_CLASSES
    assert all(v is None or 0.0 <= v <= 100.0 for v in payload["per_class_iou"])
    samples = list_samples(tree)
    reference = evaluate_dumps_reference(samples, DumpSet.open(chain["work"] / "dumps", samples))
    assert payload["miou"] == pytest.approx(reference.score.miou, abs=1e-9)
    stdout = chain["steps"]["postprocess"].stdout
    assert f"mIoU: {reference.score.miou_rounded:.2f}" in stdout
    assert all(name in stdout for name in ("road", "bicycle"))


def test_user_errors_are_one_line_with_exit_code_2(chain: dict, tree: Path, tmp_path: Path) -> None:
    cases = [
        ("postprocess", str(tree), str(tmp_path / "nope")),
        ("infer", "--onnx", str(tmp_path / "missing.onnx"), "--bins", str(chain["work"] / "bins"), "--out",
         str(tmp_path / "o")),
        ("preprocess", str(tmp_path / "no-root"), str(tmp_path / "bins")),
        ("gen-info", "bin", str(tmp_path / "empty"), str(tmp_path / "x.info"), "512", "1024"),
        ("demo", str(chain["work"])),  # not empty: refuses to overwrite
    ]
    (tmp_path / "empty").mkdir()
    for args in cases:
        proc = intrada(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"intrada {args[0]}: error: "), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.info").exists() and not (tmp_path / "o").exists()
