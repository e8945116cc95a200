"""The seed's postprocess procedure, as the seed runs it: the reference of bench_dumps_judgement.py.

Re-implemented (not copied) from the model-zoo submission's ``intrada_postprocess.py``, repository
Ascend/ModelZoo-PyTorch at commit f26eaf4d9801892cd68557c6ff3cfaf11b91e86b, path
ACL_PyTorch/contrib/cv/segmentation/IntraDA/intrada_postprocess.py (the HEAD version: two
arguments, the main head read from ``<stem>_1.bin``). Every step the seed takes is taken here, with
the library defaults it runs under (torch's default thread count, numpy's defaults):

* sample list (lines 123-149): ``os.walk`` over ``leftImg8bit/val``, each ``*.png`` paired with
  ``gtFine/val/<city>/<name with leftImg8bit -> gtFine_labelIds>`` when both files exist;
* per image (eval, lines 44-78): the label first (``Image.open``, NEAREST resize to 2048x1024,
  ``np.array(...).astype('int32')``, ``np.unique`` and a membership assert per value,
  ``np.digitize`` into the 35-entry key, lines 80-99, then ``torch.LongTensor``); the dump (file2tensor,
  lines 101-120: 4 bytes at a time with ``struct.unpack('f')`` into a list, ``np.array`` (float64),
  ``torch.tensor(float32)``, a new ``nn.Upsample(1024x2048, bilinear, align_corners=True)``, and a
  print); then ``.numpy().squeeze().transpose(1, 2, 0)``, ``np.argmax(axis=2)``, ``fast_hist``
  (lines 24-26) into a float64 ``hist``, per-class IoU and ``np.nanmean`` after every image, and a
  print per image.

Run it as the seed is run: ``python benchmarks/seed_postprocess.py CITYSCAPES_ROOT DUMPS_DIR``.
``--json OUT`` (ours, not the seed's) also writes the final confusion matrix and the seconds each
stage took, so the benchmark can check the gate's numbers against it and show where its time goes;
the stage clocks are a few ``perf_counter`` calls per image.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

# labelId + 1 -> trainId (-1 = ignored), the seed's 35-entry key (lines 87-92)
_KEY = np.array([-1, -1, -1, -1, -1, -1, -1, -1, 0, 1, -1, -1, 2, 3, 4, -1, -1, -1, 5, -1, 6, 7, 8, 9, 10, 11,
                 12, 13, 14, 15, -1, -1, 16, 17, 18])
_MAPPING = np.array(range(-1, len(_KEY) - 1)).astype("int32")
assert len(_KEY) == 35 and _KEY[7 + 1] == 0 and _KEY[33 + 1] == 18


def city_pairs(root: str) -> tuple[list[str], list[str]]:
    images, masks = [], []
    image_dir, mask_dir = os.path.join(root, "leftImg8bit/val"), os.path.join(root, "gtFine/val")
    for dirpath, _, files in os.walk(image_dir):
        for name in files:
            if not name.endswith(".png"):
                continue
            image = os.path.join(dirpath, name)
            mask = os.path.join(mask_dir, os.path.basename(os.path.dirname(image)),
                                name.replace("leftImg8bit", "gtFine_labelIds"))
            if os.path.isfile(image) and os.path.isfile(mask):
                images.append(image)
                masks.append(mask)
            else:
                print("cannot find the mask or image:", image, mask)
    print(f"Found {len(images)} images in the folder {image_dir}")
    return images, masks


def _label(path: str) -> torch.Tensor:
    mask = np.array(Image.open(path).resize((2048, 1024), Image.NEAREST)).astype("int32")  # type: ignore[attr-defined]
    for value in np.unique(mask):
        assert value in _MAPPING
    index = np.digitize(mask.ravel(), _MAPPING, right=True)
    return torch.LongTensor(np.array(_KEY[index].reshape(mask.shape)).astype("int32"))


def _read_dump(path: str) -> np.ndarray:
    values = []
    with open(path, "rb") as f:
        for _ in range(os.path.getsize(path) // 4):
            values.append(struct.unpack("f", f.read(4))[0])
    return np.array(values).reshape(1, 19, 65, 129)


def _fast_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    k = (a >= 0) & (a < n)
    return np.bincount(n * a[k].astype(int) + b[k], minlength=n ** 2).reshape(n, n)


def evaluate(root: str, dumps: str) -> dict:
    stages = dict.fromkeys(("labels", "read", "upsample", "argmax", "histogram"), 0.0)
    clock = time.perf_counter
    print("===device===:", torch.device("cpu"))
    images, masks = city_pairs(root)
    print(f"Start validation, Total sample: {len(images)}")
    hist, times, miou = np.zeros((19, 19)), [], float("nan")
    for i, (image, mask_path) in enumerate(zip(images, masks)):
        t0 = clock()
        mask = _label(mask_path)
        t1 = clock()
        with torch.no_grad():
            start = time.time()
            path = os.path.join(dumps, os.path.basename(image).split(".")[0]) + "_1.bin"
            data = _read_dump(path)
            t2 = clock()
            tensor = nn.Upsample(size=(1024, 2048), mode="bilinear", align_corners=True)(
                torch.tensor(data, dtype=torch.float32))
            print(path, tensor.dtype, tensor.shape)
            end = time.time()
            t3 = clock()
            pred = np.argmax(tensor.numpy().squeeze().transpose(1, 2, 0), axis=2)
            t4 = clock()
            hist += _fast_hist(mask.cpu().numpy().flatten(), pred.flatten(), 19)
            miou = np.nanmean(np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist)))
            t5 = clock()
        times.append(end - start)
        print(f"Sample: {i + 1}, mIoU: {miou * 100:.3f}, time: {end - start:.3f}s")
        for stage, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            stages[stage] += seconds
    print(f"Evaluate: Average mIoU: {miou * 100:.3f}, Average time: {sum(times) / len(times):.3f}")
    return {"images": len(images), "miou": float(miou), "confusion_matrix": hist.astype(np.int64).tolist(),
            "stages": stages, "torch_threads": torch.get_num_threads()}


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if "--json" in args:
        i = args.index("--json")
        out = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2:
        print("Stopped!")
        sys.exit(1)
    result = evaluate(args[0], args[1])
    if out is not None:
        with open(out, "w") as f:
            json.dump(result, f)
