"""Finding the Ascend tools and asking them what they are: atc + CANN version, npu-smi's chip name,
ais_bench (Python API or CLI), the legacy benchmark.<arch>; plus running a tool with its log kept.

Discovery only looks (PATH, ``importlib.util.find_spec``, a few files): ais_bench counts when its files
are the inference tool's (``infer/interface.py`` defining InferSession, :mod:`intrada.ascend.aisbench`),
not whenever some ``ais_bench`` package exists. The ais_bench API is the one thing that must be
imported to know whether it works (it loads aclruntime and the ACL libraries), and that happens only
when :func:`discover` is asked for it.
"""
from __future__ import annotations

import importlib
import inspect
import os
import platform
import re
import shutil
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ToolError
from ..core.hashing import file_sha256
from .aisbench import AisBenchPackage, find_package
from .parsers import NpuSmiInfo, parse_npu_smi_info

LOG_TAIL_LINES = 12

# the seed names each om <stem>_bs<N>.om (atc --output=intraDA_deeplabv2_bs{bs})
_BS_RE = re.compile(r"_bs(\d+)(?:_[A-Za-z0-9]+)*$")


# --------------------------------------------------------------------------------------------
# running a tool

def log_tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-empty lines of a log, joined with ' | ' so they fit the one-line ToolError."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def run_logged(cmd: Sequence[str | os.PathLike[str]], *, what: str, log_path: Path, cwd: Path | None = None,
               env: Mapping[str, str] | None = None, timeout: float | None = None,
               hint: str | None = None) -> str:
    """Run ``cmd`` with stdout and stderr interleaved into ``log_path``; return the output.

    A non-zero exit, a timeout or a missing executable raises :class:`ToolError` naming ``what``,
    quoting the log's tail and saying where the full log is.
    """
    argv = [os.fspath(c) for c in cmd]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    header = "$ " + " ".join(argv) + (f"\n# cwd: {cwd}" if cwd else "") + "\n"
    try:
        proc = subprocess.run(argv, cwd=cwd, env=dict(env) if env is not None else None, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise ToolError(what, f"executable not found: {argv[0]}", hint or "check PATH") from None
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        log_path.write_text(header + out)
        raise ToolError(what, f"timed out after {timeout:.0f} s; last output: {log_tail(out)}",
                        f"full log: {log_path}") from None
    log_path.write_text(header + proc.stdout)
    if proc.returncode != 0:
        raise ToolError(what, f"exited with code {proc.returncode}; last output: {log_tail(proc.stdout)}",
                        (hint + "; " if hint else "") + f"full log: {log_path}")
    return proc.stdout


# --------------------------------------------------------------------------------------------
# npu-smi

def query_npu_smi(executable: str | None = None, timeout: float = 60.0) -> NpuSmiInfo | None:
    """``npu-smi info`` parsed, or None when npu-smi is not on PATH."""
    exe = executable or shutil.which("npu-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "info"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError("npu-smi info", f"could not run ({exc})", "check the driver installation") from None
    if proc.returncode != 0:
        raise ToolError("npu-smi info", f"exited with code {proc.returncode}: {log_tail(proc.stdout)}",
                        "check the driver (npu-smi comes with it) or pass --soc-version")
    info = parse_npu_smi_info(proc.stdout)
    if not info.chips:
        raise ToolError("npu-smi info", f"no chip name found in its output: {log_tail(proc.stdout, 6)}",
                        "pass --soc-version, e.g. Ascend310P3")
    return info


def soc_version_of(name: str) -> str:
    """atc's --soc_version for a chip name: ``310P3`` -> ``Ascend310P3``.

    The seed's bs16 line passed the bare name (``--soc_version=${chip_name}``), which atc rejects;
    both spellings are accepted here and the prefix is always written.
    """
    name = name.strip()
    if not name:
        raise ToolError("--soc-version", "empty SoC version", "pass e.g. Ascend310P3 (see `npu-smi info`)")
    return name if name.lower().startswith("ascend") else f"Ascend{name}"


# --------------------------------------------------------------------------------------------
# atc and the CANN version

@dataclass(frozen=True)
class AtcTool:
    path: Path
    version: str  # CANN toolkit version, e.g. "6.0.RC1", or "unknown"
    version_source: str  # the file it was read from, or why it is unknown
    sha256: str  # of the resolved atc file: part of the om cache key even when the version is unknown


_INSTALL_INFO = "ascend_toolkit_install.info"


def _version_from_info(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^\s*version\s*=\s*(\S+)", text, re.MULTILINE)
    return m.group(1) if m else None


def cann_version(atc_path: Path) -> tuple[str, str]:
    """(version, where it was read). CANN records its version in
    ``<toolkit>/latest/<arch>-linux/ascend_toolkit_install.info`` (``version=6.0.RC1``); the toolkit
    root is $ASCEND_TOOLKIT_HOME / $ASCEND_HOME_PATH (set by set_env.sh) or an ancestor of atc."""
    roots: list[Path] = []
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]))
    for p in (atc_path, atc_path.resolve()):
        roots.extend(p.parents)
    seen: set[Path] = set()
    for root in roots:
        if root in seen or root == Path(root.anchor):
            continue
        seen.add(root)
        for info in [root / _INSTALL_INFO, *sorted(root.glob(f"*-linux/{_INSTALL_INFO}"))]:
            version = _version_from_info(info)
            if version:
                return version, str(info)
    return "unknown", f"no {_INSTALL_INFO} found above {atc_path}"


def find_atc() -> AtcTool | None:
    exe = shutil.which("atc")
    if exe is None:
        return None
    path = Path(exe)
    version, source = cann_version(path)
    return AtcTool(path, version, source, file_sha256(path.resolve()))


# --------------------------------------------------------------------------------------------
# runtimes

def ais_bench_api_error(package: AisBenchPackage | None = None) -> str | None:
    """None when ``ais_bench.infer.interface`` imports and has InferSession, else why not (one line).
    Only an ``ais_bench`` whose files are the inference tool is imported at all (``package``,
    :func:`intrada.ascend.aisbench.find_package`): an unrelated top-level ``ais_bench`` (the AISBench
    LLM evaluation tool) is reported, not run."""
    package = package or find_package()
    if not package.inference_tool:
        return package.label()
    try:
        with warnings.catch_warnings():
            # the gate runs with filterwarnings=error; a deprecation inside ais_bench is not our verdict
            warnings.simplefilter("ignore")
            module = importlib.import_module("ais_bench.infer.interface")
    except Exception as exc:  # aclruntime missing, ACL libraries not on LD_LIBRARY_PATH, ...
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    if not inspect.isclass(getattr(module, "InferSession", None)):
        return f"{getattr(module, '__file__', 'ais_bench.infer.interface')} defines no InferSession"
    return None


def ais_bench_cli_available(package: AisBenchPackage | None = None) -> bool:
    """``python3 -m ais_bench`` is the inference tool's CLI when the package this interpreter finds is
    the inference tool (the CLI is started with sys.executable, so it sees the same environment)."""
    return (package or find_package()).inference_tool


def benchmark_name() -> str:
    """``benchmark.x86_64`` or ``benchmark.aarch64``: the legacy tool ships one binary per host arch."""
    machine = platform.machine().lower()
    return f"benchmark.{'aarch64' if machine in ('aarch64', 'arm64') else machine}"


def find_benchmark() -> Path | None:
    """On PATH, or in the current directory where the seed's scripts call ``./benchmark.<arch>``."""
    exe = shutil.which(benchmark_name())
    if exe is not None:
        return Path(exe)
    local = Path.cwd() / benchmark_name()
    return local if local.is_file() and os.access(local, os.X_OK) else None


# --------------------------------------------------------------------------------------------
# om files

def om_batch_size_from_name(path: Path) -> int | None:
    """``intraDA_deeplabv2_bs16.om`` -> 16 (newer atc may append ``_linux_x86_64``)."""
    m = _BS_RE.search(path.stem)
    return int(m.group(1)) if m else None


def resolve_om_option(path: Path) -> dict[int, Path]:
    """--om: one .om or a directory of ``*_bs<N>.om``; batch size -> file."""
    files = sorted(path.glob("*.om")) if path.is_dir() else [path]
    if not files:
        raise ToolError(f"--om {path}", "directory holds no .om file",
                        "pass an .om or a directory of <name>_bs<N>.om files (atc --output=<name>_bs<N>)")
    out: dict[int, Path] = {}
    for f in files:
        if f.suffix != ".om":
            raise ToolError(f"--om {f}", "not an .om file", "pass the offline model atc wrote (<name>.om)")
        bs = om_batch_size_from_name(f)
        if bs is None:
            raise ToolError(f"--om {f}", "cannot tell the om's static batch size from its name",
                            "name it <stem>_bs<N>.om, as the seed's atc --output=intraDA_deeplabv2_bs<N> does")
        if bs in out:
            raise ToolError(f"--om {path}", f"two oms for batch size {bs}: {out[bs].name}, {f.name}",
                            "keep one om per batch size in the directory")
        out[bs] = f
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# everything at once

@dataclass(frozen=True)
class AscendTools:
    atc: AtcTool | None
    npu_smi: Path | None
    ais_bench_api: bool
    ais_bench_api_error: str | None
    ais_bench_cli: bool
    benchmark: Path | None
    ais_bench: AisBenchPackage | None = None  # what is installed as ais_bench, from its files

    @property
    def runtimes(self) -> list[str]:
        """Runner kinds that can run an om here, best first."""
        kinds = []
        if self.ais_bench_api:
            kinds.append("ais_bench-api")
        if self.ais_bench_cli:
            kinds.append("ais_bench-cli")
        if self.benchmark is not None:
            kinds.append("benchmark")
        return kinds

    @property
    def anything(self) -> bool:
        return self.atc is not None or bool(self.runtimes)

    def runner_lines(self) -> list[str]:
        """What can run an om here and why the others cannot: for the pytest header and om.setup."""
        package = self.ais_bench
        lines = []
        if package is None or package.location is None:
            lines.append("ais_bench: not installed (no ais_bench-api / ais_bench-cli runner)")
        elif not package.inference_tool:
            lines.append(f"{package.label()}; no ais_bench-api / ais_bench-cli runner")
        else:
            api = ("ais_bench-api" if self.ais_bench_api else
                   "ais_bench-api import not checked yet" if self.ais_bench_api_error == "not probed" else
                   f"no ais_bench-api ({self.ais_bench_api_error})")
            lines.append(f"{package.label()}: {api}, {'ais_bench-cli' if self.ais_bench_cli else 'no ais_bench-cli'}"
                         + ("; its CLI checks paths (inputs are staged as real 0o640 files)" if package.checks_paths
                            else ""))
        lines.append(f"{benchmark_name()}: {self.benchmark if self.benchmark is not None else 'not found'}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "atc": None if self.atc is None else {"path": str(self.atc.path), "cann_version": self.atc.version,
                                                  "version_source": self.atc.version_source},
            "npu_smi": None if self.npu_smi is None else str(self.npu_smi),
            "ais_bench_api": self.ais_bench_api, "ais_bench_api_error": self.ais_bench_api_error,
            "ais_bench_cli": self.ais_bench_cli,
            "ais_bench": None if self.ais_bench is None else self.ais_bench.as_dict(),
            "benchmark": None if self.benchmark is None else str(self.benchmark),
            "runners": self.runner_lines(),
        }


def discover(*, probe_api: bool = True) -> AscendTools:
    package = find_package()
    api_error = ais_bench_api_error(package) if probe_api else (
        "not probed" if package.inference_tool else package.label())
    npu_smi = shutil.which("npu-smi")
    return AscendTools(atc=find_atc(), npu_smi=Path(npu_smi) if npu_smi else None,
                       ais_bench_api=probe_api and api_error is None, ais_bench_api_error=api_error,
                       # probed: the CLI runs this interpreter, so it imports what this process imports
                       ais_bench_cli=ais_bench_cli_available(package) and (api_error is None or not probe_api),
                       benchmark=find_benchmark(), ais_bench=package)
