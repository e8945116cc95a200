"""Stand-in for setuptools' ``pkg_resources``, which setuptools 82 removed, for hosts without it.

Not a fake of an Ascend tool: both ais_bench CLIs read aclruntime's version with
``pkg_resources.get_distribution("aclruntime").version`` (github.com/Ascend/tools 9d6da90
ais_bench/infer/miscellaneous.py:9-24; github.com/Ascend/msit 42a9c80
ait/components/benchmark/ais_bench/infer/miscellaneous.py:49-70), and the msit one fails without it.
The contract tests put this folder on PYTHONPATH only where ``pkg_resources`` does not import, so the
CLIs see what they see beside setuptools < 82; one test removes it on purpose. The answer comes
from ``importlib.metadata``: the installed distribution's version, or DistributionNotFound.
"""
import importlib.metadata


class DistributionNotFound(Exception):
    pass


class Distribution:
    def __init__(self, name: str, version: str) -> None:
        self.project_name = name
        self.version = version


def get_distribution(name: str) -> Distribution:
    try:
        return Distribution(name, importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        raise DistributionNotFound(f"The '{name}' distribution was not found") from None
