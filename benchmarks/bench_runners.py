"""Issue 5 target 4: CPU inference. The ONNX Runtime runner must be within 10% of a bare
``onnxruntime.InferenceSession.run`` loop; OpenVINO (optional runner) is timed against ONNX Runtime
and its main-head class map must agree with ONNX Runtime's.

Two measurements, both interleaved in one run so load from elsewhere on the machine hits every side:

1. ``test_onnxruntime_runner_overhead`` (asserted): ``OnnxRuntimeRunner.infer`` against a bare
   session (ORT's default options, ``intra_op_num_threads`` = the cores this process may use) on a
   reduced DeepLabv2 with the exact IntraDA interface: the real stem, caffe bottlenecks of
   ``intrada.model.deeplab``, output stride 8, the two dilated ASPP-sum heads, input [N,3,512,1024] and
   outputs 2 x [N,19,65,129] (~0.06-0.12 s per call here instead of ~2-5 s per image). Blocks of one call
   per side, the sides' order alternating between blocks, each timed call preceded by an untimed
   call of the same side (see ``interleaved``); the claim is the median over blocks of runner
   time / bare time, at the perf gate's batch sizes. Outputs must be bit-identical.
   Why the ratio carries over to the full ResNet-101: what the runner adds (input validation,
   ``ascontiguousarray``, output shape checks) is a per-call cost set by the I/O sizes, which are
   identical, and both sessions run the same graph with the same threads; a per-call overhead is
   divided by ~0.1 s here and by ~2-5 s at full size, so the full-size ratio is closer to 1 than
   this one. Session options that change the compute show up here too, because this net has the
   same op mix (7x7 stem, Conv+BN+ReLU, dilated 3x3, sums): measured, a runner with 1 thread gives
   1.93 and one without graph optimisation 1.88 on this net. Test 2 prints the full-size ratio.
2. ``test_full_model_runners`` (agreement asserted, speeds reported): the full DeepLabv2 (the
   embedded demo submission's checkpoint exported to ONNX, from the repository's artifact cache)
   on preprocessed demo images, one image per round (2 rounds), the four runners in rotated order per round:
   ORT runner, bare ORT session, OpenVINO f32, OpenVINO bf16. Prints runner/bare at full size (not
   asserted: a few 2-5 s rounds on a shared machine are too noisy for a 10% bound) and OpenVINO's
   speed ratios (not asserted: they depend on the CPU, e.g. bf16 is fast only with AMX /
   AVX512-BF16). Asserts OpenVINO's argmax agreement with ORT on the main head: f32 with the
   [openvino] fp32 limits, bf16 with [openvino].bf16_min_argmax_agreement (lib/intrada/data/thresholds.toml).

Run: ``python -m pytest benchmarks/bench_runners.py -m bench -s``. Needs the demo submission and its
ONNX in the artifact cache ($INTRADA_CACHE_DIR or .cache/intrada; built on first use, which takes
minutes: the CI's main run builds them before the benchmarks).
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from intrada.core import protocol
from intrada.parity.compare import Limits, compare_outputs
from intrada.model.deeplab import ASPP_DILATIONS, Bottleneck, ClassifierModule
from intrada.model.onnx_export import export_onnx
from intrada.runners.cpu import OnnxRuntimeRunner
from intrada.gate.thresholds import load as load_thresholds

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("INTRADA_CACHE_DIR") or REPO / ".cache" / "intrada")
MAX_RUNNER_OVER_BARE = 1.10  # issue 5 target 4
OVERHEAD_BLOCKS = 20  # interleaved blocks per batch size on the reduced net (4 calls of 0.03-0.2 s each)
FULL_ROUNDS = 2  # rounds on the full model: each runs ORT runner, bare ORT, OpenVINO f32 and bf16 once
# (2, not 4: the speeds of test 2 are reported, not asserted, and its agreement check is the gate's
# OpenVINO parity, which the README's run judges on the demo; 8 full-size forwards less in CI, ~30 s)

Batch = np.ndarray
Outputs = tuple[np.ndarray, np.ndarray]


# -- the machine ---------------------------------------------------------------------------------
def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {cores()} cores, load average {load}"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bare_session(onnx_path: Path) -> Any:
    """What a user would write: ORT's defaults, with the thread count pinned to the usable cores
    (ORT's own default counts the host's cores, which a container may not own)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cores()
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def bare_infer(session: Any) -> Callable[[Batch], Outputs]:
    name = session.get_inputs()[0].name

    def infer(batch: Batch) -> Outputs:
        aux, main = session.run(None, {name: batch})[:2]
        return aux, main

    return infer


# -- inputs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    """The embedded demo submission and its ONNX export, from the repository's artifact cache."""
    from intrada.gate.artifacts import demo_entry, onnx_export_entry
    from intrada.cache.store import ArtifactCache
    from intrada.dataset.cityscapes import list_samples
    from intrada.dataset.preprocess import preprocess_image

    cache = ArtifactCache(CACHE)
    root = demo_entry(cache)
    onnx_path = onnx_export_entry(cache, root / "checkpoint.pth")
    samples = list_samples(root / "cityscapes")
    images = [preprocess_image(s.image) for s in samples[:FULL_ROUNDS]]
    return {"onnx": onnx_path, "images": images, "names": [s.name for s in samples[:FULL_ROUNDS]]}


def _downsample(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class ReducedDeepLabV2(nn.Module):
    """DeepLabv2's structure at a fraction of its width and depth: the 7x7/2 stem with the ceil-mode
    max-pool, one caffe bottleneck per stage (stride 2 in layer2, dilation 2 and 4 in layers 3 and 4),
    the ASPP-sum aux head on layer3 and main head on layer4. Same input and output shapes as the
    real model; 9.4 of its 759 convolution GFLOP per image (1.2%)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = Bottleneck(64, 16)
        self.layer2 = Bottleneck(64, 32, stride=2, downsample=_downsample(64, 128, 2))
        self.layer3 = Bottleneck(128, 32, dilation=2)
        self.layer4 = Bottleneck(128, 64, dilation=4, downsample=_downsample(128, 256, 1))
        self.layer5 = ClassifierModule(128, ASPP_DILATIONS, ASPP_DILATIONS, protocol.NUM_CLASSES)
        self.layer6 = ClassifierModule(256, ASPP_DILATIONS, ASPP_DILATIONS, protocol.NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer3(self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))))
        return self.layer5(x), self.layer6(self.layer4(x))


@pytest.fixture(scope="module")
def reduced_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_onnx(ReducedDeepLabV2().eval(), tmp_path_factory.mktemp("reduced") / "reduced_deeplabv2.onnx")


# -- 1. runner overhead (asserted) -----------------------------------------------------------------
def interleaved(first: Callable[[], Any], second: Callable[[], Any], blocks: int) -> list[tuple[float, float]]:
    """(first's seconds, second's seconds) per block, the two sides' order alternating between blocks.

    Each timed call follows an untimed call of the same side: ORT's intra-op threads spin for a
    while after a run, so a call right after the *other* session's call shares the 2 cores with
    that session's spinning threads (measured on the reduced net: 56 ms instead of 32 ms per call,
    and no difference with session.intra_op.allow_spinning=0). One session alone, as in the gate,
    never pays that, so neither side may.
    """
    out = []
    for b in range(blocks):
        seconds = {}
        for side in ((first, second) if b % 2 == 0 else (second, first)):
            side()
            seconds[side] = timed(side)[0]
        out.append((seconds[first], seconds[second]))
    return out


# batch_size: parametrized by the gate's plugin (fixtures/perf.py) with the perf gate's sizes,
# --batch-sizes (default 1,2)
def test_onnxruntime_runner_overhead(reduced_onnx: Path, demo: dict[str, Any], batch_size: int,
                                     bench_record: Any) -> None:
    batch = np.stack([demo["images"][i % len(demo["images"])] for i in range(batch_size)])
    runner = OnnxRuntimeRunner(reduced_onnx)
    bare = bare_infer(bare_session(reduced_onnx))
    with runner:
        for _ in range(3):  # warm-up: arenas, thread pool, kernel selection
            runner.infer(batch)
            bare(batch)
        r_out, b_out = runner.infer(batch), bare(batch)
        blocks = interleaved(lambda: runner.infer(batch), lambda: bare(batch), OVERHEAD_BLOCKS)
    ratios = [r / b for r, b in blocks]
    ratio = statistics.median(ratios)
    runner_s, bare_s = [r for r, _ in blocks], [b for _, b in blocks]
    best_r, best_b, med_r, med_b = min(runner_s), min(bare_s), statistics.median(runner_s), statistics.median(bare_s)
    print(f"\nORT runner vs bare InferenceSession.run: reduced DeepLabv2 (real I/O, 1.2% of the FLOPs), batch "
          f"{batch_size}, runner threads {runner.threads}, bare threads {cores()}, {OVERHEAD_BLOCKS} interleaved blocks; "
          f"{machine()}")
    print(f"  runner {1000 * best_r:.1f} / {1000 * med_r:.1f} ms/call, bare {1000 * best_b:.1f} / {1000 * med_b:.1f} "
          f"ms/call (best / median: both drift with the machine's load, hence per-block ratios "
          f"{', '.join(f'{x:.3f}' for x in ratios)})")
    print(f"  runner/bare median {ratio:.3f} (required <= {MAX_RUNNER_OVER_BARE}); outputs identical: "
          f"{all(np.array_equal(a, b) for a, b in zip(r_out, b_out))}")
    bench_record(f"ONNX Runtime runner's time per call, reduced DeepLabv2, batch {batch_size}", ratio,
                 reference="a bare InferenceSession.run loop, interleaved", required=MAX_RUNNER_OVER_BARE,
                 direction="<=")
    for a, b, head in zip(r_out, b_out, ("aux", "main")):  # same graph, same threads: same bits
        assert np.array_equal(a, b), f"{head}: the runner's outputs differ from the bare session's"
    assert ratio <= MAX_RUNNER_OVER_BARE, (
        f"OnnxRuntimeRunner is {ratio:.3f}x a bare InferenceSession.run at batch {batch_size} (median of "
        f"{OVERHEAD_BLOCKS} interleaved blocks: {', '.join(f'{x:.3f}' for x in ratios)}); expected <= "
        f"{MAX_RUNNER_OVER_BARE} ({machine()})")


# -- 2. full model: OpenVINO vs ONNX Runtime -------------------------------------------------------
def test_full_model_runners(demo: dict[str, Any], bench_record: Any) -> None:
    from intrada.runners.openvino import OpenVinoRunner, openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is not installed (optional CPU runner): pip install openvino")
    onnx_path = demo["onnx"]
    lim = load_thresholds().section("openvino")
    runners: dict[str, Any] = {"ort-runner": OnnxRuntimeRunner(onnx_path),
                               "openvino-f32": OpenVinoRunner(onnx_path, precision="f32"),
                               "openvino-bf16": OpenVinoRunner(onnx_path, precision="bf16")}
    setup: dict[str, float] = {}
    for name, r in runners.items():
        setup[name] = timed(r.activate)[0]
    try:
        setup["ort-bare"], session = timed(lambda: bare_session(onnx_path))
        infer: dict[str, Callable[[Batch], Outputs]] = {
            "ort-runner": runners["ort-runner"].infer, "ort-bare": bare_infer(session),
            "openvino-f32": runners["openvino-f32"].infer, "openvino-bf16": runners["openvino-bf16"].infer}
        order = list(infer)
        warm = demo["images"][0][None]
        for name in order:
            infer[name](warm)
        seconds: dict[str, list[float]] = {k: [] for k in order}
        outputs: dict[str, list[Outputs]] = {k: [] for k in order}
        for i, image in enumerate(demo["images"]):
            batch = image[None]
            step = i * len(order) // FULL_ROUNDS  # rotated: with 2 rounds each runner is once early, once late
            for name in order[step:] + order[:step]:
                t, (aux, main) = timed(lambda: infer[name](batch))
                seconds[name].append(t)
                outputs[name].append((aux[0], main[0]))
    finally:
        for r in runners.values():
            r.deactivate()

    def per_round(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(seconds[a], seconds[b])]

    rounds = len(demo["images"])
    print(f"\nfull DeepLabv2 (demo checkpoint -> ONNX, {onnx_path.stat().st_size / 1e6:.0f} MB), batch 1, "
          f"{rounds} rounds on demo images {', '.join(demo['names'])}, threads {runners['ort-runner'].threads}; "
          f"{machine()}")
    for name in order:
        s = seconds[name]
        print(f"  {name:14s} median {statistics.median(s):6.3f} s/img  rounds {', '.join(f'{x:.3f}' for x in s)}  "
              f"(session set-up {setup[name]:.2f} s)")
    ratio_bare = statistics.median(per_round("ort-runner", "ort-bare"))
    print(f"  ORT runner/bare median per round {ratio_bare:.3f} (reported; asserted on the reduced net)")
    bench_record("ONNX Runtime runner's time per image, full DeepLabv2, batch 1", ratio_bare,
                 reference="a bare InferenceSession.run", unit="x (time)")
    for name in ("openvino-f32", "openvino-bf16"):
        speed = statistics.median(per_round('ort-runner', name))
        print(f"  {name} speed vs ORT runner: {speed:.2f}x (median per round)")
        bench_record(f"{name} speed, full DeepLabv2, batch 1", speed, reference="the ONNX Runtime runner")

    def pairs(name: str) -> Any:
        return zip(outputs["ort-runner"], outputs[name])

    same = compare_outputs("ort-runner", "ort-bare", pairs("ort-bare"), Limits(max_abs_over_scale=0.0))
    f32 = compare_outputs("onnxruntime", "openvino-f32", pairs("openvino-f32"),
                          Limits(max_abs_over_scale=lim["max_abs_over_scale"], min_cosine=lim["min_cosine"],
                                 min_argmax_agreement=lim["min_argmax_agreement"]))
    bf16 = compare_outputs("onnxruntime", "openvino-bf16", pairs("openvino-bf16"),
                           Limits(min_argmax_agreement=lim["bf16_min_argmax_agreement"]))
    for result in (same, f32, bf16):
        print(f"  {result.report()}")
    assert same, same.report()
    assert f32, f32.report()
    assert bf16, bf16.report()
