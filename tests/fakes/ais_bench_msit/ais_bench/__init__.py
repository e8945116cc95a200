"""Contract-test fake of the msit-generation ``ais_bench`` package (github.com/Ascend/msit 42a9c80,
ait/components/benchmark/ais_bench), the one ``msit install benchmark`` installs as the ais_bench 0.0.2
wheel: the Python API (infer/interface.py) and the CLI ``python3 -m ais_bench`` (infer/__main__.py,
infer/benchmark_process.py, infer/path_security_check.py), on the fake aclruntime binding
(tests/fakes/aclruntime_msit). Select it with PYTHONPATH=tests/fakes/ais_bench_msit:
tests/fakes/aclruntime_msit:tests/fakes/python."""
