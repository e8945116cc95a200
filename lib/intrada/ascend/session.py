"""The om gate's session: the om per batch size (given with --om, or converted by atc and cached)
and one device-tool run of the split per batch size, each made on first use and remembered, so a
broken conversion or run is reported once per batch size instead of retried by every test.

Device outputs go to a temporary directory, not the artifact cache: they depend on the driver, the
firmware and the device itself, none of which a cache key can hold, and the gate judges what the
device does now. The om itself is cached (keyed by the ONNX hash, atc's flags, the CANN version and
atc's own hash): conversion takes minutes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import IntradaError
from ..runners.base import RunRecord
from .setup import AscendSetup


class OmMissing(IntradaError):
    """--om has no om for a batch size: that batch size is not judged (it was not given)."""


def atc_builder(cache: Any, setup: AscendSetup, onnx: Path, onnx_sha256: str) -> Callable[[int], Path]:
    """``build(batch_size) -> om path``: the seed's atc conversion, cached; the log kept on failure."""
    from ..cache.fingerprint import code_identity
    from . import atc as atc_mod

    tool, soc = setup.tools.atc, setup.soc_version
    if tool is None or soc is None:
        raise ValueError("atc_builder needs atc and a SoC version (resolve_setup reports their absence)")

    def build(batch_size: int) -> Path:
        parts = {"onnx_sha256": onnx_sha256, "flags": atc_mod.seed_flags(batch_size, soc),
                 "cann_version": tool.version, "atc_sha256": tool.sha256, **code_identity(atc_builder)}
        kept_log = cache.root / "logs" / f"atc_bs{batch_size}_{cache.key('om', parts)}.log"

        def convert(tmp: Path) -> dict[str, Any]:
            om = atc_mod.convert(tool.path, onnx, tmp, batch_size, soc, log_path=tmp / "atc.log",
                                 keep_failed_log=kept_log)
            return {"om": om.name, "soc_version": soc, "cann_version": tool.version, "onnx": str(onnx),
                    "command": atc_mod.atc_command(tool.path, onnx, tmp / atc_mod.om_stem(batch_size), batch_size, soc)}

        entry = cache.get_or_build("om", parts, convert, description=f"atc om bs{batch_size} ({soc})")
        return entry.file(entry.info["om"])  # type: ignore[no-any-return]

    return build


class _Memo:
    """Results and failures by batch size: a failure is raised again, never retried."""

    def __init__(self) -> None:
        self._done: dict[int, Any] = {}

    def get(self, batch_size: int, make: Callable[[], Any]) -> Any:
        if batch_size not in self._done:
            try:
                self._done[batch_size] = make()
            except BaseException as exc:
                self._done[batch_size] = exc
                raise
        done = self._done[batch_size]
        if isinstance(done, BaseException):
            raise done
        return done


@dataclass(frozen=True)
class OmOutputs:
    """Outputs of the om on the split, from a live run or from --dumps."""

    source: str  # "om" or "dumps"
    label: str  # what produced them, for reports and assertion messages
    dumps: Any  # intrada.dataset.dumps.DumpSet
    run: RunRecord | None = None  # the run of a live om
    fake_components: list[str] = field(default_factory=list)

    @property
    def contract_fake(self) -> bool:
        return bool(self.fake_components)

    def provenance(self) -> dict[str, Any]:
        """For the verdict's details: what ran, and whether it was a device at all."""
        return {"source": self.source, "label": self.label, "contract_fake": self.contract_fake,
                "fake_components": self.fake_components, "run": None if self.run is None else self.run.as_dict()}


class OmSession:
    """The oms (given or built) and their runs over the split, by batch size."""

    def __init__(self, setup: AscendSetup, build: Callable[[int], Path] | None, bins_dir: Path,
                 samples: Sequence[Any], out_root: Path) -> None:
        self.setup = setup
        self.given = setup.om_given
        self._build = build
        self.bins_dir = bins_dir
        self.samples = list(samples)
        self.out_root = out_root
        self._oms, self._runs, self._staged = _Memo(), _Memo(), _Memo()

    @property
    def parity_batch_size(self) -> int:
        """The om the split is judged with: bs1 as the seed's accuracy runs, else the smallest given."""
        if self.given is None or 1 in self.given:
            return 1
        return min(self.given)

    def om(self, batch_size: int) -> Path:
        if self.given is not None:
            if batch_size not in self.given:
                have = ", ".join(f"bs{b}" for b in self.given)
                raise OmMissing("--om", f"no om for bs{batch_size} ({have} given)",
                                f"convert one with atc --input_shape=image:{batch_size},3,512,1024 "
                                f"--output=<name>_bs{batch_size}")
            return self.given[batch_size]
        assert self._build is not None
        build = self._build
        return self._oms.get(batch_size, lambda: build(batch_size))  # type: ignore[no-any-return]

    def run(self, batch_size: int) -> RunRecord:
        """The device tool's run of the whole split with the om of ``batch_size``."""
        om = self.om(batch_size)  # OmMissing is not remembered: it is not a failure
        return self._runs.get(batch_size, lambda: self._run(om, batch_size))  # type: ignore[no-any-return]

    def staged_bins(self) -> Path:
        """The split's bins as real files in one folder of this session (:func:`stage_inputs`), made
        once: each directory tool's run then hard-links them into its own folder, so bins that had to
        be copied (another filesystem, a shared cache's modes) are copied once per session."""
        from .device import stage_inputs

        names = [s.name for s in self.samples]
        return self._staged.get(0, lambda: stage_inputs(self.bins_dir, names,  # type: ignore[no-any-return]
                                                        self.out_root / "inputs"))

    def _run(self, om: Path, batch_size: int) -> RunRecord:
        from .runners import AisBenchApiRunner, make_runner

        assert self.setup.runner is not None
        runner = make_runner(self.setup.runner, om, batch_size=batch_size, device_id=self.setup.device_id)
        bins = self.bins_dir if isinstance(runner, AisBenchApiRunner) else self.staged_bins()
        run = runner.run_split(bins, [s.name for s in self.samples], self.out_root / f"bs{batch_size}",
                               progress=True)
        if self.given is None and not run.batch_verified:  # converted here with --input_shape=image:N,...
            run = dataclasses.replace(run, batch_verified=True, batch_source=(
                f"atc --input_shape=image:{batch_size},3,512,1024 (converted by this gate)"))
        return run

    def outputs(self, run: RunRecord) -> OmOutputs:
        label = f"om bs{run.batch_size} ({run.om.name if run.om else '?'}) via {run.tool} on {self.setup.device_label()}"
        return OmOutputs("om", label, run.open(self.samples), run, self.setup.fake_components())
