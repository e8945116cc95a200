"""Checkpoint loading: safe (weights_only), strict, with one small remapping step.

Upstream saves ``torch.save(model.state_dict())`` (a plain dict, no ``module.`` prefix) and loads it
with a strict ``load_state_dict``. We accept two common wrappers on top (a DataParallel ``module.``
prefix and a ``{"state_dict": ...}`` dict), say which remap was applied, and otherwise refuse with
one message listing missing / unexpected / wrongly shaped keys.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.checks import count_nonfinite
from ..core.errors import CheckpointError
from .network import DEEPLABV2, Network

_SHOW = 3  # keys quoted per category in a mismatch message
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state_dict: "OrderedDict[str, torch.Tensor]"
    remap: str | None  # human-readable description of the remapping applied, None if none

    def describe(self) -> str:
        return f"{self.path} ({len(self.state_dict)} tensors{'; ' + self.remap if self.remap else ''})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    first = text[0]
    # torch appends paragraphs of advice after its first sentence; keep the sentence.
    end = first.find(". ")
    return (first[: end + 1] if end > 0 else first)[:200]


def _unpickler_reason(exc: BaseException) -> str:
    """The one informative line of torch's long weights_only error (e.g. "Unsupported operand 149" or
    "Trying to load unsupported GLOBAL posix.system ...")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln or "reduce" in ln.lower() or "global" in ln.lower():
            return ln[:160]
    for i, ln in enumerate(lines):
        if ln.startswith("WeightsUnpickler error") and i + 1 < len(lines):
            return lines[i + 1][:160]
    return _first_line(exc)


def _is_code(reason: str) -> bool:
    # A GLOBAL / REDUCE of something outside the allow-list is code the file wants to run or objects
    # it wants to build; an unsupported *operand* only means the bytes are not a torch pickle.
    low = reason.lower()
    return "global" in low or "reduce" in low or "build" in low or "unsupported class" in low


def read_state_dict(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a .pth without executing pickled code, unwrap it, and return the raw state_dict."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "checkpoint not found", "check the path to the IntraDA .pth")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file", "pass the .pth file itself")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "checkpoint is empty (0 bytes)", "re-download or re-save the .pth")
    try:
        # weights_only=True: a checkpoint is data; unpickling arbitrary objects would run their code.
        with warnings.catch_warnings():
            # torch warns about pickle protocols it may not support before failing on them; the
            # failure below is the message the user gets.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if _is_code(reason):
            glob = re.search(r"GLOBAL ([\w.]+)", reason)
            raise CheckpointError(path, "refused to unpickle: the file holds Python objects or code, not only tensors "
                                  f"(weights_only loading): it asks for {glob.group(1) if glob else reason}; nothing "
                                  "in it was executed", "save with torch.save(model.state_dict()); "
                                  "never load untrusted pickles with weights_only=False") from None
        raise CheckpointError(path, f"not a PyTorch checkpoint (the weights-only unpickler stopped at: {reason})",
                              "pass a .pth written by torch.save(model.state_dict())") from None
    except KeyError:
        # torch's legacy reader indexes a magic-number table with the first bytes of arbitrary data.
        raise CheckpointError(path, "not a PyTorch checkpoint (unknown file format)",
                              "pass a .pth written by torch.save(model.state_dict())") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError,
            AttributeError, TypeError) as exc:
        msg = _first_line(exc)
        corrupt = isinstance(exc, EOFError) or any(s in msg for s in ("central directory", "EOF", "truncat",
                                                                         "failed reading", "Ran out of input"))
        if corrupt:
            raise CheckpointError(path, f"truncated or corrupt PyTorch checkpoint ({msg or type(exc).__name__})",
                                  "re-download or re-save the .pth") from None
        raise CheckpointError(path, f"not a PyTorch checkpoint ({msg})",
                              "pass a .pth written by torch.save(model.state_dict())") from None
    state, remaps = _unwrap(path, obj)
    return Checkpoint(path, state, "; ".join(remaps) or None)


def _unwrap(path: Path, obj: Any) -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    remaps: list[str] = []
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping) and not isinstance(obj[key], torch.Tensor):
                obj = obj[key]
                remaps.append(f"unwrapped the {key!r} entry")
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(path, f"expected a state_dict (a mapping of names to tensors), got "
                              f"{type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}",
                              "save with torch.save(model.state_dict())")
    non_tensor = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise CheckpointError(path, f"{len(non_tensor)} entries are not tensors (first: {non_tensor[:_SHOW]})",
                              "save with torch.save(model.state_dict())")
    keys = list(obj)
    if all(isinstance(k, str) and k.startswith("module.") for k in keys):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
        remaps.append("stripped the DataParallel 'module.' prefix")
    return OrderedDict(obj), remaps


def check_keys(ckpt: Checkpoint, model: Any, network: Network = DEEPLABV2) -> None:
    """Strict comparison with the model's keys and shapes; one error naming every kind of mismatch."""
    expected = model.state_dict()
    # BatchNorm tolerates a missing num_batches_tracked (old state-dict metadata); so do we.
    required = {k for k in expected if not k.endswith("num_batches_tracked")}
    got = ckpt.state_dict
    missing = sorted(required - set(got), key=list(expected).index)
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {list(got[k].shape)} != {list(expected[k].shape)}"
             for k in got if k in expected and got[k].shape != expected[k].shape]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:_SHOW])}{more}")
    hint = network.hint
    if network is DEEPLABV2 and missing and all(k.startswith("layer5.") for k in missing):
        hint = ("this is a single-level (multi_level=False) checkpoint without the aux head layer5; the IntraDA "
                "release and the seed export both need multi_level=True")
    elif network is DEEPLABV2 and got and all(k.startswith(("Scale.", "layer5.")) or k.startswith("Scale")
                                              for k in list(got)[:5]):
        hint = "this looks like the ImageNet init file (keys 'Scale.*'), not a trained IntraDA checkpoint"
    raise CheckpointError(ckpt.path, f"state_dict does not match {network.title}: " + "; ".join(parts), hint)


def load_model(path: str | os.PathLike[str], *, network: Network = DEEPLABV2,
               ceil_mode: bool = True) -> tuple[Any, Checkpoint]:
    """Build ``network`` (the upstream model unless a test network is asked for), strictly load the
    checkpoint, switch to eval (BN uses running stats).

    The layers are built on the meta device (no memory, and no random init that the load would
    overwrite, which is most of a build's time), and the checkpoint's tensors are assigned to them as copies in the architecture's dtypes (float32; int64
    for num_batches_tracked), so the model owns its weights exactly as a copying load gives."""
    ckpt = read_state_dict(path)
    with torch.device("meta"):
        model = network.build(ceil_mode=ceil_mode)
    check_keys(ckpt, model, network)
    expected = model.state_dict()
    state = OrderedDict((k, v.detach().to(dtype=expected[k].dtype, copy=True).contiguous())
                        for k, v in ckpt.state_dict.items())
    for k, v in expected.items():  # tolerated by check_keys; what BatchNorm's own load fills in
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.tensor(0, dtype=v.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    bad = [k for k, v in model.state_dict().items()
           if v.is_floating_point() and count_nonfinite(v.detach().float().numpy())]
    if bad:
        raise CheckpointError(ckpt.path, f"{len(bad)} tensors hold NaN or Inf (first: {bad[0]})",
                              "the checkpoint is corrupt or the training diverged")
    model.eval()
    return model, ckpt


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """torch.save to a temporary name, then rename: a killed run never leaves a partial .pth."""
    from ..core.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(OrderedDict(state_dict), tmp)
