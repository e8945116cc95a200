"""Contract-test fake of the ``ais_bench`` package (Ascend/tools ais-bench_workload/tool/ais_bench).

``python3 -m ais_bench`` is the CLI (__main__.py) and ``ais_bench.infer.interface.InferSession``
the Python API; both run fake oms (tests/fakes/python/intrada_fake_npu.py) with ONNX Runtime.
"""
# Read by the gate to label results of this package as contract tests; real ais_bench has no such name.
INTRADA_CONTRACT_FAKE = "intrada-contract-fake"
