"""Loads the gate's fixture plugins for `pytest acceptance` and for the suite's own tests."""
pytest_plugins = [
    "fixtures.options",
    "fixtures.artifacts",
    "fixtures.report",
    "fixtures.perf",
    "fixtures.ascend",
    "fixtures.fp16",
    # the suite's own tests run the gate in subprocesses through pytester
    "pytester",
]
