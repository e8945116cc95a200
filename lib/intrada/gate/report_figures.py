"""PNG figures for the gate report, drawn with Pillow (no plotting dependency).

- overlays.png: one row per image: input | ground truth | prediction (palette colours, ignore black)
- throughput.png: fps per batch size for each backend, with its threshold
- disagreement-<source>-<sample>.png: where two backends' main-head class maps differ, one per
  sample that has any difference: the image dimmed with the disagreeing pixels in magenta, and the
  two class maps side by side
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core import protocol
from ..core.atomic import atomic_path

PANEL_W, PANEL_H = 512, 256


def colourize(train_ids: np.ndarray) -> Image.Image:
    """trainId map -> RGB image with the Cityscapes palette; 255 (ignore) is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: protocol.NUM_CLASSES] = np.array(protocol.PALETTE_RGB, dtype=np.uint8)
    return Image.fromarray(lut[train_ids.astype(np.uint8)], "RGB")


def overlay_rows(items: Sequence[Mapping[str, str]]) -> Image.Image:
    """``items``: dicts with image, label and logits (a main-head dump .bin) paths."""
    from ..dataset.cityscapes import load_train_ids
    from ..evaluation.postprocess import upsample_argmax

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
    """Context key ``disagreements.<source>`` (one key per comparison, so xdist workers never
    overwrite each other's): the items of :func:`write_disagreement_figures` for that source."""
    written = []
    overlays = context.get("overlays")
    if overlays:
        _save(overlay_rows(overlays), directory / "overlays.png")
        written.append("overlays.png")
    perf = sections.get("perf")
    if perf:
        _save(throughput_plot(perf), directory / "throughput.png")
        written.append("throughput.png")
    for key in sorted(k for k in context if k.startswith("disagreements.")):
        source = key.split(".", 1)[1]
        written += write_disagreement_figures(directory, context[key] or [], prefix=f"disagreement-{source}")
    return written


# --- where two class maps differ --------------------------------------------------------------------
FIGURE_W = 1024
HIGHLIGHT_RGB = (255, 0, 255)  # magenta: a pixel the two maps classify differently
IGNORED_RGB = (0, 200, 255)  # cyan: the same, on a pixel the ground truth ignores (costs no IoU)
_DIM = 0.45  # brightness of the greyed image under the highlight
_TITLE_H = 18


def _downscale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool mask -> bool at ``size`` (W, H), True where *any* source pixel in the box is True, then
    grown by one pixel, so an isolated flipped pixel or a one-pixel border stays visible."""
    box = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(size, Image.Resampling.BOX)) > 0
    grown = np.pad(box, 1)
    h, w = box.shape
    return np.logical_or.reduce([grown[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])


def disagreement_figure(image_path: str | Path, ref_map: np.ndarray, cand_map: np.ndarray, *,
                        ignored: np.ndarray | None = None, title: str = "",
                        labels: tuple[str, str] = ("reference", "candidate"), width: int = FIGURE_W) -> Image.Image:
    """The image greyed and dimmed with the pixels whose classes differ in magenta (cyan where the
    ground truth ignores the pixel, given ``ignored``: bool [H, W]), full width; below it the two
    class maps side by side at half width. ``ref_map`` / ``cand_map``: uint8 [H, W] trainIds."""
    if ref_map.shape != cand_map.shape or ref_map.ndim != 2:
        raise ValueError(f"class maps must be two [H, W] arrays of one shape, got {ref_map.shape} and {cand_map.shape}")
    if ignored is not None and ignored.shape != ref_map.shape:
        raise ValueError(f"ignore mask {ignored.shape} and class maps {ref_map.shape} differ in shape")
    h_full, w_full = ref_map.shape
    big = (width, max(1, round(width * h_full / w_full)))
    small = (width // 2, max(1, round(width // 2 * h_full / w_full)))
    with Image.open(image_path) as im:
        grey = np.asarray(im.convert("L").resize(big, Image.Resampling.BILINEAR), dtype=np.float32)
    base = np.repeat((grey * _DIM).astype(np.uint8)[:, :, None], 3, axis=2)
    differ = ref_map != cand_map
    if ignored is not None:
        base[_downscale_mask(differ & ignored, big)] = IGNORED_RGB
        differ &= ~ignored
    base[_downscale_mask(differ, big)] = HIGHLIGHT_RGB  # drawn last: a counted difference wins

    legend = "magenta: pixels the two maps classify differently"
    if ignored is not None:
        legend += "; cyan: the same on pixels the ground truth ignores (no IoU cost)"
    top = 2 * _TITLE_H - 4
    canvas = Image.new("RGB", (width, top + _TITLE_H + big[1] + small[1]), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill="black")
    draw.text((4, _TITLE_H), legend, fill=(120, 0, 120))
    canvas.paste(Image.fromarray(base, "RGB"), (0, top))
    y = top + big[1]
    for col, (m, label) in enumerate(zip((ref_map, cand_map), labels)):
        draw.text((col * small[0] + 4, y + 3), f"{label} class map", fill="black")
        canvas.paste(colourize(m).resize(small, Image.Resampling.NEAREST), (col * small[0], y + _TITLE_H))
    return canvas


def _main_logits(value: Any, what: str) -> np.ndarray:
    """An array as given, or a main-head dump .bin path read as float32 [19, 65, 129]."""
    if isinstance(value, np.ndarray):
        return value
    path = Path(value)
    data = np.fromfile(path, dtype=protocol.BIN_DTYPE)
    if data.size != int(np.prod(protocol.OUTPUT_SHAPE_CHW)):
        from ..core.errors import DumpsError

        raise DumpsError(path, f"{what}: {data.size * data.itemsize:,} bytes, expected {protocol.DUMP_BYTES:,} "
                         f"(float32 {'x'.join(map(str, protocol.OUTPUT_SHAPE_CHW))})", "pass a main-head dump")
    return data.reshape(protocol.OUTPUT_SHAPE_CHW)


def _file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def write_disagreement_figures(directory: str | Path, items: Sequence[Mapping[str, Any]], *,
                               prefix: str = "disagreement", only_disagreeing: bool = True) -> list[str]:
    """One PNG per sample whose two main-head class maps differ; returns the file names written.

    ``items``: mappings with ``name`` (sample), ``image`` (its leftImg8bit path), ``reference`` and
    ``candidate`` (main-head dump .bin paths, or arrays: logits [19, 65, 129] or class maps
    [1024, 2048]), optional ``reference_label`` / ``candidate_label`` for the captions and
    ``label`` (the gtFine labelIds path: differences on ignored pixels are drawn in cyan). Files are
    ``<prefix>-<name>.png``, written atomically. A sample whose maps agree everywhere gets no
    picture unless ``only_disagreeing`` is False.
    """
    from ..parity.classdiff import class_map, disagreement
    from ..core.errors import DumpsError

    directory = Path(directory)
    written = []
    for item in items:
        name = str(item["name"])
        labels = (str(item.get("reference_label", "reference")), str(item.get("candidate_label", "candidate")))
        maps = []
        for key, label in zip(("reference", "candidate"), labels):
            try:
                maps.append(class_map(_main_logits(item[key], label)))
            except ValueError as exc:  # NaN logits or a malformed array: a one-line error naming the input
                where = item[key] if not isinstance(item[key], np.ndarray) else f"{name} ({label})"
                raise DumpsError(where, f"cannot draw the class map: {exc}", "check the dump") from None
        _mask, stats = disagreement(maps[0], maps[1])
        if only_disagreeing and stats.disagreeing == 0:
            continue
        ignored = None
        title = f"{name}: {labels[1]} vs {labels[0]}: {stats.report()}"
        if item.get("label"):
            from ..dataset.cityscapes import load_train_ids

            ignored = load_train_ids(item["label"]) == protocol.IGNORE_INDEX
        fig = disagreement_figure(item["image"], maps[0], maps[1], ignored=ignored, title=title, labels=labels)
        file_name = f"{_file_part(prefix)}-{_file_part(name)}.png"
        _save(fig, directory / file_name)
        written.append(file_name)
    return written
