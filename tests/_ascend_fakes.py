"""Where the contract-test fakes of the Ascend tools are, and how a test selects an ais_bench generation.

An ais_bench generation is a frontend (the ``ais_bench`` package) on a binding (``aclruntime``):

* ``tests/fakes/ais_bench_<gen>``: the fake frontend of generation ``tools`` (github.com/Ascend/tools)
  or ``msit`` (github.com/Ascend/msit), or a real frontend extracted from its repository
  (tests/test_ascend_real_frontends.py);
* ``tests/fakes/aclruntime_<gen>``: the fake binding of that generation;
* ``tests/fakes/python``: what the fakes share (the om runtime, the ACL lifetime);
* ``tests/fakes/compat``: ``pkg_resources`` for hosts whose setuptools (82+) has none, put on the
  path only there (see its docstring).

Tests select a generation through PYTHONPATH (subprocesses) and sys.path (this process), as a host
selects one by what it installed.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

FAKES = Path(__file__).resolve().parent / "fakes"
FAKE_BIN = FAKES / "bin"
FAKE_ATC_BIN = FAKES / "ascend-toolkit" / "latest" / "bin"
FAKE_PYTHON = FAKES / "python"
COMPAT = FAKES / "compat"
GENERATIONS = ("tools", "msit")
DEFAULT_GENERATION = "msit"  # what `msit install benchmark` installs today
DECLARED = "atc,npu-smi,ais_bench,benchmark,om"
FAKE_ENV_VARS = ("INTRADA_CONTRACT_FAKES", "INTRADA_FAKE_NPU_CHIP", "INTRADA_FAKE_NPU_DEVICES", "INTRADA_FAKE_NPU_OUTPUTS",
                 "INTRADA_FAKE_NPU_NOISE", "INTRADA_FAKE_NPU_MS", "INTRADA_FAKE_NPU_FAIL", "INTRADA_FAKE_ATC_FAIL",
                 "INTRADA_FAKE_NPU_MEMO", "INTRADA_FAKE_ACL_LOG")
FAKE_MODULES = ("ais_bench", "aclruntime", "intrada_fake_npu", "intrada_fake_acl", "intrada_fake_aclruntime",
                "intrada_fake_aisbench", "pkg_resources")


def _host_pkg_resources() -> bool:
    spec = importlib.util.find_spec("pkg_resources")  # a top-level name: located, not imported
    return spec is not None and not str(spec.origin or "").startswith(str(COMPAT))


HOST_HAS_PKG_RESOURCES = _host_pkg_resources()  # decided before any test changes sys.path


def host_has_pkg_resources() -> bool:
    return HOST_HAS_PKG_RESOURCES


def _ours() -> bool:
    module = sys.modules.get("pkg_resources")
    return module is not None and str(COMPAT) in str(getattr(module, "__file__", ""))


def generation_path(generation: str, frontend: Path | None = None, *, compat: bool | None = None) -> list[Path]:
    """The import path of one generation: its frontend (the fake, or ``frontend``), its fake binding,
    the shared fake modules, and the pkg_resources stand-in where the host lacks pkg_resources."""
    if generation not in GENERATIONS:
        raise ValueError(f"unknown ais_bench generation {generation!r}")
    paths = [frontend or FAKES / f"ais_bench_{generation}", FAKES / f"aclruntime_{generation}", FAKE_PYTHON]
    if compat if compat is not None else not host_has_pkg_resources():
        paths.append(COMPAT)
    return paths


def base_path() -> str:
    """A PATH with this interpreter (the fakes' shebang is python3) and the system dirs only."""
    return os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])


def tool_path() -> str:
    return os.pathsep.join([str(FAKE_ATC_BIN), str(FAKE_BIN), base_path()])


def drop_fake_modules() -> None:
    """Forget the fake (or extracted) modules imported in this process, as a new process would."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in FAKE_MODULES):
            if name.split(".")[0] == "pkg_resources" and not _ours():
                continue  # the host's own pkg_resources stays
            del sys.modules[name]
    importlib.invalidate_caches()


def fake_env(generation: str = DEFAULT_GENERATION, frontend: Path | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with the fakes of ``generation`` as the only Ascend tools."""
    env = {k: v for k, v in os.environ.items() if k not in FAKE_ENV_VARS}
    env.update(PATH=tool_path(), PYTHONPATH=os.pathsep.join(map(str, generation_path(generation, frontend))),
               INTRADA_CONTRACT_FAKES=DECLARED, **extra)
    return env


def acl_events(log: Path) -> dict[int, list[str]]:
    """INTRADA_FAKE_ACL_LOG by process: ``{pid: ["aclInit", "aclFinalize", "refused aclmdlExecute", ...]}``."""
    out: dict[int, list[str]] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            pid, _, event = line.partition(" ")
            out.setdefault(int(pid), []).append(event)
    return out
