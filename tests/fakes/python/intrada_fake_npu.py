"""Shared core of the contract-test fakes of the Ascend tools (atc, npu-smi, ais_bench, benchmark).

The fakes follow the documented command lines and file layouts (../shared/spec/modelzoo-and-ascend-tools.md)
so the gate's Ascend code can be exercised without hardware. They are deliberately independent of
the ``intrada`` package: a fake that reused the gate's own readers and writers would only prove
that the gate agrees with itself.

A fake om is ``FAKE_OM_MAGIC`` + one JSON header line + the ONNX bytes. The header pins what atc
pinned: the static input shape, the SoC version, the precision mode. Running it means ONNX Runtime
on the CPU, with what a device would do to the numbers:

Environment (read by every fake at run time):

``INTRADA_FAKE_NPU_CHIP``     chip name npu-smi reports and the runtime accepts (default ``310P3``)
``INTRADA_FAKE_NPU_DEVICES``  number of devices (default 1)
``INTRADA_FAKE_NPU_OUTPUTS``  ``fp16`` (default: what force_fp16 - atc's default on 310/310P - computes
                              in a faithful om: float16 weights and results, float32 accumulation,
                              saturation; intrada_fake_fp16), ``exact`` (fp32),
                              ``swap`` (outputs in the wrong order), ``noise`` (fp16-like relative
                              noise far beyond rounding, see ``INTRADA_FAKE_NPU_NOISE``), ``perturb``
                              (a class-channel offset that moves the argmax)
``INTRADA_FAKE_NPU_NOISE``    relative sigma of ``noise`` (default 0.1, i.e. ~3 mantissa bits left)
``INTRADA_FAKE_NPU_MS``       NPU compute time per batch in ms to report (default: the measured CPU time)
``INTRADA_FAKE_NPU_FAIL``     when set, the runtime tools print this as an error and exit 1
``INTRADA_FAKE_ATC_FAIL``     when set, atc prints this as an ATC error and exits 1
``INTRADA_FAKE_NPU_MEMO``     a directory where the runtime keeps what it computed (ONNX Runtime's outputs
                              and their CPU time, keyed by the om's ONNX bytes, the precision and the
                              input bytes), so a test that runs the same om on the same inputs in
                              several misbehaviour modes computes the network once. Test speed only:
                              every mode is applied to the outputs after the lookup.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MARKER = "intrada-contract-fake"
FAKE_OM_MAGIC = b"INTRADA-FAKE-OM\n"
FORMAT = 1
FP16_PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "allow_mix_precision")
OUTPUT_MODES = ("fp16", "exact", "swap", "noise", "perturb")


class FakeNpuError(Exception):
    """A failure a real tool would report; the fakes print it and exit non-zero."""


DECLARATION = "INTRADA_CONTRACT_FAKES"  # intrada.ascend.provenance.ENV


def require_declared(component: str) -> None:
    """A fake runs only where the environment declares it (intrada.ascend.provenance): a contract
    test can then never be reported as a device result."""
    declared = {c.strip() for c in os.environ.get(DECLARATION, "").split(",")}
    if component not in declared:
        sys.stderr.write(f"{component}: contract-test fake refused to run: the environment does not declare it in "
                         f"{DECLARATION} (a fake must never pass for a device)\n")
        raise SystemExit(3)


def chip_name() -> str:
    return os.environ.get("INTRADA_FAKE_NPU_CHIP", "310P3")


def device_count() -> int:
    return int(os.environ.get("INTRADA_FAKE_NPU_DEVICES", "1"))


def check_device(device_id: int) -> None:
    if not 0 <= device_id < device_count():
        raise FakeNpuError(f"aclrtSetDevice failed, device id {device_id} is invalid (devices: {device_count()}), "
                           f"error code 107001")


def injected_failure() -> None:
    message = os.environ.get("INTRADA_FAKE_NPU_FAIL")
    if message:
        raise FakeNpuError(f"{message} (injected by INTRADA_FAKE_NPU_FAIL)")


# ---------------------------------------------------------------------------------------------
# the om file

def write_om(path: Path, header: dict[str, Any], onnx_bytes: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(FAKE_OM_MAGIC)
        f.write(json.dumps({"marker": MARKER, "format": FORMAT, **header}, sort_keys=True).encode() + b"\n")
        f.write(onnx_bytes)
    os.replace(tmp, path)


def read_om(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FakeNpuError(f"model file {path} does not exist") from None
    if not data.startswith(FAKE_OM_MAGIC):
        raise FakeNpuError(f"{path} is not an offline model this (fake) runtime can load: "
                           f"aclmdlLoadFromFile failed, error code 500002")
    rest = data[len(FAKE_OM_MAGIC):]
    line, _, onnx_bytes = rest.partition(b"\n")
    header = json.loads(line)
    if header.get("format") != FORMAT:
        raise FakeNpuError(f"{path}: fake om format {header.get('format')} is not supported")
    return header, onnx_bytes


# ---------------------------------------------------------------------------------------------
# running it

class TensorDesc:
    """What aclruntime's descriptors expose: name, shape, datatype, realsize (bytes), size."""

    def __init__(self, name: str, shape: list[int], datatype: str = "FLOAT32") -> None:
        self.name = name
        self.shape = list(shape)
        self.datatype = datatype
        self.realsize = int(np.prod(shape)) * 4
        self.size = self.realsize

    def __repr__(self) -> str:
        return f"<TensorDesc {self.name} {self.shape} {self.datatype} realsize={self.realsize}>"


class FakeModel:
    """A loaded fake om on a device."""

    def __init__(self, om_path: str | os.PathLike[str], device_id: int) -> None:
        injected_failure()
        check_device(device_id)
        self.path = Path(om_path)
        self.header, self._onnx = read_om(self.path)
        device_soc = f"Ascend{chip_name()}"
        if self.header["soc_version"] != device_soc:
            raise FakeNpuError(f"{self.path.name} was built for {self.header['soc_version']} but device {device_id} "
                               f"is {device_soc}: aclmdlLoadFromFile failed, error code 500002")
        self.device_id = device_id
        self.inputs = [TensorDesc(i["name"], i["shape"]) for i in self.header["inputs"]]
        self.outputs = [TensorDesc(o["name"], o["shape"]) for o in self.header["outputs"]]
        self.batch_size = self.inputs[0].shape[0]
        mode = os.environ.get("INTRADA_FAKE_NPU_OUTPUTS", "fp16")
        if mode not in OUTPUT_MODES:
            raise FakeNpuError(f"INTRADA_FAKE_NPU_OUTPUTS={mode!r}: expected one of {', '.join(OUTPUT_MODES)}")
        self.mode = mode
        self.fp16 = self.header.get("precision_mode", "force_fp16") in FP16_PRECISION_MODES and mode != "exact"
        self._session: Any = None

    def _ort(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if self.fp16:  # the om's arithmetic under force_fp16 (see intrada_fake_fp16)
                from intrada_fake_fp16 import force_fp16

                graph = force_fp16(self._onnx)
            else:
                graph = self._onnx
            self._session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
        return self._session

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], float]:
        """One static-shape execution: (outputs in om order, NPU compute time in ms)."""
        expected = tuple(self.inputs[0].shape)
        if batch.dtype != np.float32 or tuple(batch.shape) != expected:
            raise FakeNpuError(f"input is {batch.dtype} {list(batch.shape)}, the model takes float32 {list(expected)} "
                               f"({self.inputs[0].realsize} bytes): aclmdlExecute failed, error code 100000")
        x = batch.astype(np.float16).astype(np.float32) if self.fp16 else batch
        # Padding repeats a sample; compute each distinct sample once (the outputs are identical anyway).
        unique: list[int] = []
        index = []
        for i in range(x.shape[0]):
            for j, u in enumerate(unique):
                if np.array_equal(x[i], x[u]):
                    index.append(j)
                    break
            else:
                index.append(len(unique))
                unique.append(i)
        raw, compute_ms = self._compute(np.ascontiguousarray(x[unique]))
        elapsed_ms = compute_ms * x.shape[0] / len(unique)
        outputs = [np.asarray(o, dtype=np.float32)[index] for o in raw]
        outputs = self._misbehave(outputs)
        simulated = os.environ.get("INTRADA_FAKE_NPU_MS")
        return outputs, float(simulated) if simulated else elapsed_ms

    def _compute(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        """ONNX Runtime's outputs for ``x`` and their CPU time in ms, from INTRADA_FAKE_NPU_MEMO when it
        holds them (see the module docstring)."""
        memo = os.environ.get("INTRADA_FAKE_NPU_MEMO")
        path = None
        if memo:
            key = hashlib.sha256()
            for part in (sha256(self._onnx).encode(), str(self.fp16).encode(), str(x.shape).encode(), x.tobytes()):
                key.update(part)
            path = Path(memo) / f"{key.hexdigest()}.npz"
            if path.is_file():
                with np.load(path) as data:
                    n = int(data["n_outputs"])
                    return [data[f"out{i}"] for i in range(n)], float(data["ms"])
        session = self._ort()
        t0 = time.perf_counter()
        raw = [np.asarray(o) for o in session.run(None, {session.get_inputs()[0].name: x})]
        ms = (time.perf_counter() - t0) * 1000.0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, n_outputs=len(raw), ms=ms, **{f"out{i}": o for i, o in enumerate(raw)})
            os.replace(tmp, path)
        return raw, ms

    def _misbehave(self, outputs: list[np.ndarray]) -> list[np.ndarray]:
        if self.mode == "noise":
            sigma = float(os.environ.get("INTRADA_FAKE_NPU_NOISE", "0.1"))
            rng = np.random.default_rng(0)
            outputs = [o * (1.0 + sigma * rng.standard_normal(o.shape)).astype(np.float32) for o in outputs]
        elif self.mode == "perturb":
            # lift class 0 by a quarter of each sample's logit range: it wins many pixels it should not
            perturbed = []
            for o in outputs:
                o = o.copy()
                span = o.reshape(o.shape[0], -1).max(axis=1) - o.reshape(o.shape[0], -1).min(axis=1)
                o[:, 0] += (0.25 * span)[:, None, None]
                perturbed.append(o)
            outputs = perturbed
        elif self.mode == "swap":
            outputs = outputs[::-1]
        if self.fp16:
            outputs = [o.astype(np.float16).astype(np.float32) for o in outputs]
        return outputs


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fail(tool: str, exc: BaseException, code: int = 1) -> None:
    print(f"[ERROR] {tool}: {exc}", file=sys.stderr, flush=True)
    sys.exit(code)
