"""What the om gate can do here, decided from facts: absence skips, a tool that fails fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from intrada.ascend.setup import resolve_setup
from intrada.ascend.parsers import NpuChip, NpuSmiInfo
from intrada.ascend.tools import AscendTools, AtcTool
from intrada.core.errors import ToolError

ATC = AtcTool(Path("/usr/local/Ascend/bin/atc"), "7.0.0", "install.info", "0" * 64)
ONE_310P3 = NpuSmiInfo("23.0.0", (NpuChip(0, "310P3", 0, 0),))


def tools(*, atc: bool = False, api: bool = False, cli: bool = False, npu_smi: bool = False) -> AscendTools:
    return AscendTools(ATC if atc else None, Path("/usr/bin/npu-smi") if npu_smi else None, api,
                       None if api else "ais_bench is not installed", cli, None)


def setup(found: AscendTools, *, om: Path | None = None, soc: str | None = None, device_id: int = 0,
          runner: str = "auto", dumps: bool = False, npu=None):
    return resolve_setup(found, om_option=om, soc_option=soc, device_id=device_id, runner_option=runner,
                         dumps_given=dumps, npu=npu, fakes=())


def test_nothing_installed_nothing_given() -> None:
    s = setup(tools())
    assert s.nothing and s.problem is not None and not s.problem.broken


def test_a_device_host_resolves_soc_from_npu_smi() -> None:
    s = setup(tools(atc=True, api=True, npu_smi=True), npu=ONE_310P3)
    assert s.problem is None and s.soc_version == "Ascend310P3" and s.soc_source == "npu-smi info"
    assert s.runner == "ais_bench-api"


def test_a_bad_device_id_is_a_failure_with_npu_smis_line() -> None:
    s = setup(tools(atc=True, api=True, npu_smi=True), device_id=1, npu=ONE_310P3)
    assert s.problem is not None and s.problem.broken
    assert s.problem.message == "npu-smi info: no device 1 (devices: 0). Hint: pass --device-id with one of them"


def test_a_failing_npu_smi_is_a_failure_even_with_soc_version() -> None:
    err = ToolError("npu-smi info", "exited with code 255: dcmi module initialize failed")
    s = setup(tools(atc=True, cli=True, npu_smi=True), soc="Ascend310P3", npu=err)
    assert s.problem is not None and s.problem.broken and "dcmi module initialize failed" in s.problem.message
    assert s.soc_version == "Ascend310P3"


def test_a_requested_runner_that_is_missing_is_a_failure() -> None:
    s = setup(tools(atc=True, api=True), soc="Ascend310P3", runner="ais_bench-cli")
    assert s.problem is not None and s.problem.broken
    assert s.problem.message == "--om-runner ais_bench-cli: ais_bench is not installed for this Python"


def test_atc_and_a_runner_without_any_soc_is_a_failure() -> None:
    s = setup(tools(atc=True, cli=True))
    assert s.problem is not None and s.problem.broken and s.problem.message.startswith("atc needs --soc_version")


@pytest.mark.parametrize("found, om, message", [
    (tools(), "given", "--om was given but nothing can run it"),
    (tools(atc=True), None, "atc can build the om but nothing can run it"),
    (tools(cli=True), None, "ais_bench-cli can run an om but there is none"),
])
def test_absences_are_skips_with_the_reason(tmp_path: Path, found: AscendTools, om: str | None, message: str) -> None:
    om_path = None
    if om:
        om_path = tmp_path / "m_bs1.om"
        om_path.write_bytes(b"om")
    s = setup(found, om=om_path)
    assert s.problem is not None and not s.problem.broken and s.problem.message.startswith(message)
    assert not s.nothing or om is None


def test_dumps_only_says_so() -> None:
    s = setup(tools(), dumps=True)
    assert not s.nothing and s.problem is not None and s.problem.message.startswith("judging --dumps only: ")


def test_a_bad_om_option_is_a_failure(tmp_path: Path) -> None:
    bad = tmp_path / "model.om"
    bad.write_bytes(b"om")
    s = setup(tools(cli=True), om=bad)
    assert s.problem is not None and s.problem.broken and "cannot tell the om's static batch size" in s.problem.message


def test_provenance_is_what_the_environment_declares() -> None:
    s = resolve_setup(tools(atc=True, api=True, npu_smi=True), om_option=None, soc_option=None, device_id=0,
                      runner_option="auto", dumps_given=False, npu=ONE_310P3, fakes=("ais_bench", "npu-smi"))
    assert s.fake_components() == ["ais_bench", "npu-smi"]
    assert s.device_label() == ("Ascend310P3 (device 0) [FAKE: contract-test ais_bench, npu-smi; not a device "
                                "result]")
    real = resolve_setup(tools(atc=True, api=True, npu_smi=True), om_option=None, soc_option=None, device_id=0,
                         runner_option="auto", dumps_given=False, npu=ONE_310P3, fakes=())
    assert real.device_label() == "Ascend310P3 (device 0)"


def test_the_setup_says_which_ais_bench_was_found_and_why_a_runner_is_not_offered() -> None:
    from intrada.ascend.aisbench import AisBenchPackage

    llm = AisBenchPackage(Path("/site/ais_bench"), False, "is not the inference tool: it has no infer/interface.py")
    found = AscendTools(ATC, None, False, llm.label(), False, None, llm)
    assert found.runner_lines()[0] == ("ais_bench at /site/ais_bench: is not the inference tool: it has no "
                                       "infer/interface.py; no ais_bench-api / ais_bench-cli runner")
    s = setup(found, soc="Ascend310P3", runner="ais_bench-cli")
    assert s.problem is not None and s.problem.broken
    assert s.problem.message == ("--om-runner ais_bench-cli: ais_bench at /site/ais_bench: is not the inference tool: "
                                 "it has no infer/interface.py")
    tool = AisBenchPackage(Path("/site/ais_bench"), True, None, "ais_bench", "0.0.2", "msit", True)
    broken = AscendTools(ATC, None, False, "ModuleNotFoundError: No module named 'aclruntime'", False, None, tool)
    assert broken.runner_lines()[0] == (
        "ais_bench at /site/ais_bench (ais_bench 0.0.2; msit generation files: github.com/Ascend/msit "
        "ait/components/benchmark (msit install benchmark)): no ais_bench-api (ModuleNotFoundError: No module named "
        "'aclruntime'), no ais_bench-cli; its CLI checks paths (inputs are staged as real 0o640 files)")
    s = setup(broken, soc="Ascend310P3", runner="ais_bench-cli")
    assert s.problem is not None and s.problem.message == (
        "--om-runner ais_bench-cli: the ais_bench inference tool does not import in this Python "
        "(ModuleNotFoundError: No module named 'aclruntime')")
    ok = AscendTools(ATC, None, True, None, True, None, tool)
    assert setup(ok, soc="Ascend310P3").runner == "ais_bench-api"
    assert ok.as_dict()["ais_bench"]["cli_generation"] == "msit" and ok.as_dict()["runners"] == ok.runner_lines()
