"""Contract-test fake of the tools-generation ``ais_bench`` package (github.com/Ascend/tools 9d6da90,
ais-bench_workload/tool/ais_bench/ais_bench): the Python API (infer/interface.py) and the CLI
``python3 -m ais_bench`` (infer/__main__.py), on the fake aclruntime binding
(tests/fakes/aclruntime_tools). Select it with PYTHONPATH=tests/fakes/ais_bench_tools:
tests/fakes/aclruntime_tools:tests/fakes/python."""
