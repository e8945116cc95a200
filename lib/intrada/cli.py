"""`intrada`: the seed's four scripts as one command, with the seed's positional arguments.

    intrada pth2onnx CHECKPOINT OUT.onnx            (intrada_pth2onnx.py)
    intrada preprocess CITYSCAPES_ROOT OUT_DIR      (intrada_preprocess.py)
    intrada gen-info bin BIN_DIR INFO_FILE W H      (gen_dataset_info.py, bin mode)
    intrada infer --onnx M --bins DIR --out DIR     (the device tool, on ONNX Runtime)
    intrada postprocess CITYSCAPES_ROOT DUMP_DIR    (intrada_postprocess.py)
    intrada demo OUT_DIR                            (the embedded demo submission)
    intrada inspect MODEL.onnx
    intrada diff-layers CHECKPOINT MODEL.onnx       (first layer where the ONNX departs from PyTorch)

User errors print one line on stderr and exit with code 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from .core import protocol
from .core.errors import IntradaError, os_error_line
from .model.network import network_from_env

if TYPE_CHECKING:
    import numpy as np

EXIT_USAGE = 2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_pth2onnx(args: argparse.Namespace) -> int:
    from .model.checkpoint import load_model
    from .model.onnx_export import export_onnx, inspect_onnx

    model, ckpt = load_model(args.checkpoint, network=network_from_env())
    if ckpt.remap:
        print(f"{ckpt.path}: {ckpt.remap}", file=sys.stderr)
    out = export_onnx(model, args.output, opset=args.opset)
    info = inspect_onnx(out, require_dynamic_batch=True)
    aux, main = protocol.AUX_OUTPUT_INDEX, protocol.MAIN_OUTPUT_INDEX
    chw_in, chw_out = (",".join(map(str, s)) for s in (protocol.INPUT_SHAPE_CHW, protocol.OUTPUT_SHAPE_CHW))
    print(f"wrote {out} (opset {info.opset}; input {info.input_name} [{info.batch_dim},{chw_in}]; outputs "
          f"{aux} {info.output_names[aux]} (aux), {main} {info.output_names[main]} (main) "
          f"[{info.batch_dim},{chw_out}])")
    if args.verify:
        import numpy as np

        from .parity.compare import Limits, compare_outputs
        from .runners.cpu import OnnxRuntimeRunner, TorchRunner
        from .gate.thresholds import load as load_thresholds

        # The gate's [parity] limits; argmax agreement is judged by the gate on real images (one
        # random input has near-ties).
        parity = load_thresholds().section("parity")
        limits = Limits(max_abs_over_scale=parity["max_abs_over_scale"], min_cosine=parity["min_cosine"])
        x = np.random.default_rng(0).normal(0.0, 50.0, (1, *protocol.INPUT_SHAPE_CHW)).astype(np.float32)
        with TorchRunner(model=model) as t, OnnxRuntimeRunner(out) as o:
            result = compare_outputs("pytorch", "onnxruntime", [(t.infer(x), o.infer(x))], limits)
        print(result.report())
        if not result:
            return 1
    return 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .dataset.cityscapes import list_samples
    from .dataset.preprocess import preprocess_split

    samples = list_samples(args.root, args.split, require_labels=False, max_images=args.max_images)
    out = Path(args.out_dir)
    paths = preprocess_split(samples, out, workers=args.workers, progress=not args.quiet)
    print(f"wrote {len(paths)} bins ({protocol.BIN_BYTES} bytes each) to {out}")
    return 0


def cmd_gen_info(args: argparse.Namespace) -> int:
    from .dataset.info import write_info

    if args.file_type != "bin":
        raise IntradaError("gen-info", f"file type {args.file_type!r} is not supported",
                           "only 'bin' is used by the IntraDA chain (the seed's png mode listed the train split)")
    n = write_info(args.bin_dir, args.info_file, args.width, args.height)
    print(f"wrote {args.info_file} ({n} lines)")
    return 0


def _bin_names(bins_dir: Path) -> list[str]:
    from .core.errors import BinsError

    if not bins_dir.is_dir():
        raise BinsError(bins_dir, "bins directory not found", "run `intrada preprocess` first")
    names = sorted(p.name[:-4] for p in bins_dir.iterdir() if p.suffix == ".bin")
    if not names:
        raise BinsError(bins_dir, "no .bin files", "run `intrada preprocess CITYSCAPES_ROOT DIR` first")
    return names


def cmd_infer(args: argparse.Namespace) -> int:
    from .model.onnx_export import inspect_onnx
    from .runners.base import Runner
    from .runners.cpu import OnnxRuntimeRunner

    inspect_onnx(args.onnx, require_dynamic_batch=args.batch_size > 1)
    names = _bin_names(Path(args.bins))
    if args.backend == "openvino":
        from .runners.openvino import OpenVinoRunner

        runner: Runner = OpenVinoRunner(args.onnx)
    else:
        runner = OnnxRuntimeRunner(args.onnx)
    record = runner.run_split(args.bins, names, args.out, batch_size=args.batch_size, progress=not args.quiet)
    print(f"wrote {2 * len(names)} dumps (<name>_0.bin aux, <name>_1.bin main; ais_bench layout) to {args.out}; "
          f"{record.throughput:.3f} images/s ({record.throughput_field})")
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    from .dataset.cityscapes import list_samples
    from .dataset.dumps import DumpSet
    from .evaluation.evaluate import evaluate_dumps

    samples = list_samples(args.root, args.split, max_images=args.max_images)
    dumps = DumpSet.open(args.dump_dir, samples, convention=None if args.dump_format == "auto" else args.dump_format)
    result = evaluate_dumps(samples, dumps, workers=args.workers, progress=not args.quiet,
                            label_cache_dir=args.label_cache)
    score = result.score
    print(score.table())
    print(f"mIoU: {score.miou_rounded:.2f} ({score.num_images} images, {dumps.convention} dumps)")
    if args.json:
        payload = {**score.to_json(), "dump_format": dumps.convention, "dump_dir": str(Path(args.dump_dir).resolve()),
                   "cityscapes": str(Path(args.root).resolve()), "split": args.split}
        from .core.atomic import write_text

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(payload, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .gate.submission import write_demo

    out = write_demo(args.out_dir, n_images=args.images, network=network_from_env())
    print(f"wrote the demo submission to {out}: checkpoint.pth, cityscapes/, thresholds.toml\n"
          f"judge it: pytest acceptance --weights {out}/checkpoint.pth --cityscapes {out}/cityscapes "
          f"--thresholds {out}/thresholds.toml")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .model.onnx_export import inspect_onnx

    info = inspect_onnx(args.onnx)
    print(json.dumps({"path": str(info.path), "opset": info.opset, "input": info.input_name,
                      "batch_dim": info.batch_dim, "outputs": list(info.output_names),
                      "output_shapes": [list(s) for s in info.output_shapes], "ops": list(info.op_types)}, indent=1))
    return 0


def _diff_image(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """The image to diff on: a preprocessed bin, or the demo split's first image."""
    import numpy as np

    from .core.errors import BinsError
    from .dataset.preprocess import read_bin

    if args.bins is None:
        from PIL import Image

        from .demo import demo_sample
        from .dataset.preprocess import to_network_input

        sample = demo_sample(0)
        rgb = Image.fromarray(sample.rgb).resize((protocol.INPUT_W, protocol.INPUT_H), Image.Resampling.BICUBIC)
        return to_network_input(np.asarray(rgb, dtype=np.uint8)), f"demo image {sample.name}"
    names = _bin_names(Path(args.bins))
    name = args.image if args.image is not None else names[0]
    if name.endswith(".bin"):
        name = name[:-4]
    if name not in names:
        raise BinsError(Path(args.bins) / f"{name}.bin", "no such bin", f"pick one of {', '.join(names[:3])} ...")
    return read_bin(Path(args.bins) / f"{name}.bin"), name


def _crop(text: str) -> tuple[int, int] | None:
    if text == "full":
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 128x256) or 'full', got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected a positive HxW, got {text!r}")
    return h, w


def cmd_diff_layers(args: argparse.Namespace) -> int:
    from .model.checkpoint import load_model
    from .diagnosis.layerdiff import diff_layers, load_onnx, write_report
    from .parity.noise import measure_noise_floor
    from .gate.thresholds import load as load_thresholds

    thresholds = load_thresholds(args.thresholds)
    image, name = _diff_image(args)  # the cheap checks first
    onnx_model = load_onnx(args.onnx)
    model, ckpt = load_model(args.checkpoint, network=network_from_env())
    if ckpt.remap:
        print(f"{ckpt.path}: {ckpt.remap}", file=sys.stderr)
    floor = measure_noise_floor(model, [image], crop=args.floor_crop)
    derived = thresholds.derived_limits(floor.max_abs_over_scale)
    result = diff_layers(model, onnx_model, image, derived.limits, image_name=name, candidate=str(args.onnx),
                         limit_source=derived.report(), details={"noise_floor": floor.as_dict(),
                                                                 "derived_limits": derived.as_dict()})
    print(result.markdown())
    print(floor.report())
    print(result.report())
    write_report(result, args.json, args.markdown)
    return 0 if result else 1


def build_parser() -> argparse.ArgumentParser:
    from .dataset.dumps import DUMP_FORMATS

    p = argparse.ArgumentParser(prog="intrada", description="IntraDA DeepLabv2 model-zoo pipeline (pth -> ONNX -> "
                                "bins -> device outputs -> mIoU).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    sp = add("pth2onnx", cmd_pth2onnx, "export a checkpoint to ONNX like intrada_pth2onnx.py")
    sp.add_argument("checkpoint", help="the .pth (a state_dict)")
    sp.add_argument("output", help="the .onnx to write")
    sp.add_argument("--opset", type=_positive, default=protocol.DEFAULT_OPSET,
                    help=f"ONNX opset. Default: {protocol.DEFAULT_OPSET} (the seed's)")
    sp.add_argument("--verify", action="store_true", help="compare ONNX Runtime with PyTorch after export")

    sp = add("preprocess", cmd_preprocess, "Cityscapes images -> float32 .bin files like intrada_preprocess.py")
    sp.add_argument("root", help="Cityscapes root (contains leftImg8bit/)")
    sp.add_argument("out_dir", help="output directory for <name>.bin")
    sp.add_argument("--split", default="val", help="Default: val")
    sp.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1), help="Default: 2")
    sp.add_argument("--max-images", type=_positive, default=None, help="Default: all")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = add("gen-info", cmd_gen_info, "write the legacy benchmark tool's .info list like gen_dataset_info.py")
    sp.add_argument("file_type", help="bin")
    sp.add_argument("bin_dir")
    sp.add_argument("info_file")
    sp.add_argument("width", help="written verbatim (the seed passes 512 1024, i.e. swapped)")
    sp.add_argument("height", help="written verbatim")

    sp = add("infer", cmd_infer, "run ONNX Runtime over .bin files and write dumps in the ais_bench layout")
    sp.add_argument("--onnx", required=True, help="the .onnx")
    sp.add_argument("--bins", required=True, help="directory of <name>.bin")
    sp.add_argument("--out", required=True, help="output directory for <name>_0.bin / <name>_1.bin")
    sp.add_argument("--batch-size", type=_positive, default=1, help="Default: 1")
    sp.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime",
                    help="Default: onnxruntime")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = add("postprocess", cmd_postprocess, "device outputs -> per-class IoU and mIoU like intrada_postprocess.py")
    sp.add_argument("root", help="Cityscapes root (contains gtFine/)")
    sp.add_argument("dump_dir", help="directory of device outputs")
    sp.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    sp.add_argument("--dump-format", choices=DUMP_FORMATS, default="auto",
                    help="naming convention of the dumps. Default: auto (refuses to guess when ambiguous)")
    sp.add_argument("--split", default="val", help="Default: val")
    sp.add_argument("--max-images", type=_positive, default=None, help="Default: all")
    sp.add_argument("--workers", type=_positive, default=min(2, os.cpu_count() or 1), help="Default: 2")
    sp.add_argument("--label-cache", metavar="DIR", default=None,
                    help="keep decoded trainId maps here so later runs skip PNG decoding. Default: none")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")

    sp = add("demo", cmd_demo, "write the embedded demo submission (checkpoint, Cityscapes-format split, thresholds)")
    sp.add_argument("out_dir")
    sp.add_argument("--images", type=_positive, default=None, help="Default: the gate's demo size (8)")

    sp = add("diff-layers", cmd_diff_layers, "run the checkpoint (PyTorch) and the ONNX (ONNX Runtime) side by side on "
             "one image and name the first layer whose output differs beyond the float32 noise")
    sp.add_argument("checkpoint", help="the .pth (a state_dict)")
    sp.add_argument("onnx", help="the .onnx exported from it")
    sp.add_argument("--bins", metavar="DIR", default=None,
                    help="preprocessed images (intrada preprocess); the first one is used. Default: the demo's first image")
    sp.add_argument("--image", metavar="NAME", default=None, help="which bin of --bins. Default: the first by name")
    sp.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    sp.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    sp.add_argument("--thresholds", metavar="FILE", default=None,
                    help="[parity] limits and noise factor. Default: lib/intrada/data/thresholds.toml")
    sp.add_argument("--floor-crop", type=_crop, default=(128, 256), metavar="HxW",
                    help="measure the float64 noise floor on the centre HxW of the image, or 'full'. Default: 128x256 "
                         "(a float64 forward of the full image costs 2-8 float32 ones)")

    sp = add("inspect", cmd_inspect, "check an ONNX file against the IntraDA interface and print its summary")
    sp.add_argument("onnx")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IntradaError as exc:
        print(f"intrada {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the machine's state (a full or read-only disk, permissions), not a bug: one line
        print(f"intrada {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"intrada {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
