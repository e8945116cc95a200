"""This machine's fp32 matrix-multiply rate, measured in the run: the CPU perf gate's reference (a
fixed fps cannot hold across CPUs; a fraction of what this CPU can do can) and the run plan's
estimate of what ONNX Runtime will cost."""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..core import protocol


@dataclass(frozen=True)
class CpuRoofline:
    gflops: float
    threads: int

    @property
    def fps(self) -> float:
        """Images per second at this rate (protocol.GFLOP_PER_IMAGE per image)."""
        return self.gflops / protocol.GFLOP_PER_IMAGE


def measure_matmul_gflops(n: int = 2048, repeats: int = 5) -> CpuRoofline:
    """Best of ``repeats`` n x n fp32 matmuls with torch's default threads, after one warm-up."""
    import torch

    a = torch.rand(n, n, dtype=torch.float32)
    b = torch.rand(n, n, dtype=torch.float32)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return CpuRoofline(2 * n**3 / best / 1e9, torch.get_num_threads())
