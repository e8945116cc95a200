"""The gate's report on disk: report.json (plain data), report.md (rendered by result kind) and
PNG figures. Pure functions of the run's data; the pytest plugin (fixtures/report.py) only
collects that data and calls :func:`write_report`."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.atomic import write_text
from ..core.errors import IntradaError
from .requirements import GateVerdict
from .verdict import Verdict


def environment() -> dict[str, Any]:
    import numpy
    import onnx
    import onnxruntime
    import PIL
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__}


def report_data(gates: Mapping[str, GateVerdict], verdicts: Sequence[Verdict], sections: Mapping[str, Any],
                context: Mapping[str, Any], options: Mapping[str, Any], duration_s: float) -> dict[str, Any]:
    """Everything report.json holds."""
    return {"verdicts": {g: v.as_dict() for g, v in gates.items()},
            "exit_ok": not any(v.breaks_run or v.state == "FAIL" or v.prediction_failed for v in gates.values()),
            "results": [v.as_dict() for v in verdicts], "sections": dict(sections), "environment": environment(),
            "options": dict(options), "duration_s": round(duration_s, 1), **context}


def write_report(directory: Path, data: dict[str, Any], context: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_text(directory / "report.json", json.dumps(data, indent=1, default=str))
    figures: list[str] = []
    try:
        from . import report_figures

        perf = [r["details"] for r in data["results"] if r["kind"] == "throughput" and "fps" in r["details"]]
        figures = report_figures.write_figures(directory, {"perf": perf}, context)
    except (IntradaError, OSError, ImportError) as exc:  # figures are a courtesy; the verdict is not
        data.setdefault("warnings", []).append(f"figures not written: {exc}")
    write_text(directory / "report.md", render_markdown(data, figures))


_FAKE = " **[contract fake, not a device result]**"


def _state(r: dict[str, Any]) -> str:
    return {"passed": "PASS", "failed": "FAIL", "not judged": "NOT JUDGED"}[r["state"]]


def _md_structure(r: dict[str, Any]) -> list[str]:
    return ["", f"## ONNX interface: {_state(r)}", "", r["summary"]]


def _md_parity(r: dict[str, Any]) -> list[str]:
    d = r["details"]
    fake = _FAKE if d.get("contract_fake") else ""
    out = ["", f"## {r['gate']} [{r['subject']}]: {d['candidate']} vs {d['reference']}{fake}: **{_state(r)}** on "
           f"{d['images']} images", ""]
    if r["failures"]:
        out += [f"- {f}" for f in r["failures"]] + [""]
    if r.get("where"):
        out += [f"Where: {r['where']}", ""]
    if d.get("limit_source"):
        out += [f"Limits: {d['limit_source']}", ""]
    if d.get("layer_diff"):
        out += [d["layer_diff"]["markdown"], ""]
    if d.get("fp16_prediction"):
        out += [r["summary"].rsplit(" | ", 1)[-1], ""]
    out += ["| output | max abs | mean abs | p99 abs | logit scale | cosine | rel. euclidean | KL | argmax agreement |",
            "|---|---|---|---|---|---|---|---|---|"]
    for o in d["outputs"]:
        out.append(f"| {o['output']} | {o['max_abs']:.3g} | {o['mean_abs']:.3g} | {o['p99_abs']:.3g} | "
                   f"{o['reference_absmax']:.3g} | {o['cosine']:.6f} | {o['rel_euclidean']:.3g} | {o['kl']:.3g} | "
                   f"{o['argmax_agreement']:.4%} |")
    return out


def _md_accuracy(r: dict[str, Any]) -> list[str]:
    from intrada.core.protocol import CLASS_NAMES

    a = r["details"]
    title = r["subject"]
    if a.get("device"):
        title += f" on {a['device']}" + (_FAKE if a.get("contract_fake") else "")
    out = ["", f"## Accuracy ({title}): **{_state(r)}**", "",
           f"mIoU **{a['miou']:.2f}** on {a['images']} images (threshold {a['min_miou']:.2f}; reference "
           f"{a['reference_miou']:.2f}, within {a['relative_tolerance']:.0%}: "
           f"{'yes' if a['within_relative_tolerance'] else 'no'})"
           + ("" if a["certified"] else f" — **not certified: subset** of {a['full_split_images']}"), "",
           "| class | IoU |", "|---|---|"]
    for name, iou in zip(CLASS_NAMES, a["per_class_iou"]):
        out.append(f"| {name} | {'n/a' if iou is None else f'{iou:.2f}'} |")
    return out


def _md_miou_delta(r: dict[str, Any]) -> list[str]:
    out = ["", f"## om [{r['subject']}] mIoU delta: **{_state(r)}**", "", r["summary"]]
    classes = r["details"].get("class_delta")
    if classes:
        out += ["", f"Per class: {r['where']}", "", classes["markdown"]]
    return out


def _md_throughput(rows: list[dict[str, Any]]) -> list[str]:
    out = ["", "## Performance", "", "| backend | device | batch (read from) | fps | threshold | verdict | basis / source |",
           "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["details"]["backend"], r["details"]["batch_size"])):
        d = r["details"]
        fake = _FAKE if d.get("contract_fake") else ""
        threshold = "-" if d.get("min_fps") is None else f"{d['min_fps']:.3f}"
        out.append(f"| {d['backend']} | {d['device']}{fake} | {d['batch_size']} ({d['batch_source']}) | {d['fps']:.3f} "
                   f"| {threshold} | {_state(r)} | {d['fps_basis']}; {d.get('threshold_source') or r['reason']} |")
    return out


def _md_prediction(r: dict[str, Any]) -> list[str]:
    """The om pre-flight (intrada.preflight): predicted statistics, never a verdict on an om."""
    d = r["details"]
    out = ["", f"## om pre-flight, predicted for force_fp16: **{_state(r)}**", "", r["summary"], ""]
    if r["failures"]:
        out += [f"- {f}" for f in r["failures"]] + [""]
    if r.get("where"):
        out += [f"Where: {r['where']}", ""]
    parity = d.get("parity") or {}
    if parity.get("outputs"):
        out += ["| output | max abs / scale | cosine | rel. euclidean | KL | argmax agreement |", "|---|---|---|---|---|---|"]
        out += [f"| {o['output']} | {o['max_abs_over_scale']:.3g} | {o['cosine']:.7f} | {o['rel_euclidean']:.3g} | "
                f"{o['kl']:.3g} | {o['argmax_agreement']:.4%} |" for o in parity["outputs"]]
    if (d.get("diagnosis") or {}).get("markdown"):
        out += ["", d["diagnosis"]["markdown"]]
    return out


_RENDER = {"structure": _md_structure, "parity": _md_parity, "accuracy": _md_accuracy, "miou_delta": _md_miou_delta,
           "prediction": _md_prediction}


def render_markdown(data: dict[str, Any], figures: list[str]) -> str:
    s = data["sections"]
    out = ["# IntraDA DeepLabv2 acceptance report", "",
           "**Exit status: " + ("PASS" if data["exit_ok"] else "FAIL") + "**", "",
           "| gate | verdict | required by | not judged because |", "|---|---|---|---|"]
    for gate, v in data["verdicts"].items():
        state = "NOT JUDGED (required)" if v["breaks_run"] else v["verdict"]
        out.append(f"| {gate} | **{state}** | {', '.join(v['required_by']) or '-'} | "
                   f"{(v['reason'] or '') if v['verdict'] != 'PASS' or v['breaks_run'] else ''} |")
    out.append("")
    # One line per distinct message (a test with two gate markers, or 7 om tests sharing one skip
    # reason, must not repeat it).
    seen: dict[tuple[str, str], list[str]] = {}
    for v in data["verdicts"].values():
        for t in v["tests"]:
            if t["outcome"] != "passed" and t["message"]:
                tests = seen.setdefault((t["outcome"], t["message"].removeprefix("Skipped: ")), [])
                if t["test"] not in tests:
                    tests.append(t["test"])
    for (outcome, message), tests in seen.items():
        names = ", ".join(f"`{n.split('::', 1)[-1]}`" for n in tests)
        out.append(f"- {outcome} ({len(tests)}): {names}: {message}")
    if "plan" in s:
        out += ["", "## Run plan", ""] + [f"- {line}" for line in s["plan"]["lines"]]
    if "noise_floor" in s:
        out += ["", "## Noise floor", "", s["noise_floor"].get("report", "")]
    out += ["", "## Model and artifacts", ""]
    for key, label in (("artifacts.checkpoint", "checkpoint"), ("artifacts.onnx", "ONNX"),
                       ("artifacts.bins", "preprocessed bins"), ("om.setup", "Ascend setup")):
        if key in s:
            out += [f"- {label}: `{json.dumps(s[key], default=str)}`"]
    for r in data["results"]:
        render = _RENDER.get(r["kind"])
        if render is not None and (r["state"] != "not judged" or r["kind"] == "structure"):
            out += render(r)
    throughput = [r for r in data["results"] if r["kind"] == "throughput" and "fps" in r["details"]]
    if throughput:
        out += _md_throughput(throughput)
    for fig in figures:
        out += ["", f"![{fig}]({fig})"]
    env = data["environment"]
    out += ["", "## Environment", "", ", ".join(f"{k} {v}" for k, v in env.items()),
            "", f"duration {data['duration_s']} s", ""]
    return "\n".join(out)
