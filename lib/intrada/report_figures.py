"""PNG figures for the gate report, drawn with Pillow (no plotting dependency).

- overlays.png: one row per image: input | ground truth | prediction (palette colours, ignore black)
- throughput.png: fps per batch size for each backend, with its threshold
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import protocol
from .atomic import atomic_path

PANEL_W, PANEL_H = 512, 256


def colourize(train_ids: np.ndarray) -> Image.Image:
    """trainId map -> RGB image with the Cityscapes palette; 255 (ignore) is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: protocol.NUM_CLASSES] = np.array(protocol.PALETTE_RGB, dtype=np.uint8)
    return Image.fromarray(lut[train_ids.astype(np.uint8)], "RGB")


def overlay_rows(items: Sequence[Mapping[str, str]]) -> Image.Image:
    """``items``: dicts with image, label and logits (a main-head dump .bin) paths."""
    from .cityscapes import load_train_ids
    from .postprocess import upsample_argmax

    canvas = Image.new("RGB", (3 * PANEL_W, len(items) * (PANEL_H + 18)), "white")
    draw = ImageDraw.Draw(canvas)
    for row, item in enumerate(items):
        y = row * (PANEL_H + 18)
        with Image.open(item["image"]) as im:
            panels = [im.convert("RGB").resize((PANEL_W, PANEL_H), Image.Resampling.BILINEAR)]
        panels.append(colourize(load_train_ids(item["label"])).resize((PANEL_W, PANEL_H), Image.Resampling.NEAREST))
        logits = np.fromfile(item["logits"], dtype=protocol.BIN_DTYPE).reshape(protocol.OUTPUT_SHAPE_CHW)
        panels.append(colourize(upsample_argmax(logits)).resize((PANEL_W, PANEL_H), Image.Resampling.NEAREST))
        for col, (panel, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"))):
            canvas.paste(panel, (col * PANEL_W, y + 18))
            draw.text((col * PANEL_W + 4, y + 3), f"{item.get('name', '')} {title}", fill="black")
    return canvas


def throughput_plot(rows: Sequence[Mapping[str, Any]], size: tuple[int, int] = (720, 420)) -> Image.Image:
    """Line per backend/device: fps against batch size; dashed threshold marks."""
    w, h = size
    left, right, top, bottom = 60, 20, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    batches = sorted({int(r["batch_size"]) for r in rows})
    fmax = max([float(r["fps"]) for r in rows] + [float(r.get("min_fps") or 0) for r in rows] + [1e-9]) * 1.15
    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")

    def xy(bs: int, fps: float) -> tuple[float, float]:
        i = batches.index(bs)
        x = left + (i + 0.5) * (w - left - right) / len(batches)
        return x, h - bottom - fps / fmax * (h - top - bottom)

    for i in range(5):
        v = fmax * i / 4
        _, y = xy(batches[0], v)
        d.text((4, y - 6), f"{v:.2f}", fill="black", font=font)
    for bs in batches:
        x, _ = xy(bs, 0)
        d.text((x - 10, h - bottom + 6), f"bs{bs}", fill="black", font=font)
    d.text((left, 8), "throughput (images/s) per batch size", fill="black", font=font)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    series: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        series.setdefault(f"{r['backend']} ({r['device']})", []).append(r)
    for k, (label, pts) in enumerate(sorted(series.items())):
        colour = colours[k % len(colours)]
        pts = sorted(pts, key=lambda r: int(r["batch_size"]))
        coords = [xy(int(p["batch_size"]), float(p["fps"])) for p in pts]
        if len(coords) > 1:
            d.line(coords, fill=colour, width=2)
        for (x, y), p in zip(coords, pts):
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if p.get("min_fps"):
                _, ty = xy(int(p["batch_size"]), float(p["min_fps"]))
                for dx in range(-14, 14, 6):
                    d.line([(x + dx, ty), (x + dx + 3, ty)], fill=colour)
        d.text((w - right - 260, top + 14 * k), f"- {label}", fill=colour, font=font)
    d.text((left, h - 18), "dashes: threshold", fill="black", font=font)
    return img


def _save(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_figures(directory: Path, sections: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    written = []
    overlays = context.get("overlays")
    if overlays:
        _save(overlay_rows(overlays), directory / "overlays.png")
        written.append("overlays.png")
    perf = sections.get("perf")
    if perf:
        _save(throughput_plot(perf), directory / "throughput.png")
        written.append("throughput.png")
    return written
