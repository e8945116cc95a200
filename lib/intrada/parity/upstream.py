"""Cross-check against the real upstream ADVENT model code, when it is importable.

intrada.model.deeplab is written from the specification, not imported: PyPI's ``advent`` is an unrelated
placeholder ("reserved namespace", version 0.0.0) with no ``advent.model``. Where the real code is
on the path (valeoai/ADVENT, or IntraDA's vendored ``ADVENT/`` folder, put on PYTHONPATH), the gate
builds upstream's ``get_deeplab_v2(num_classes=19, multi_level=True)``, loads the same weights
strictly into both models and compares their outputs on the same input. Nothing is ever installed.

:func:`find_upstream` says what ``advent`` is (absent, the placeholder, broken, usable);
:func:`compare_with_upstream` runs the check and returns a truthy-when-passing result.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import protocol
from .compare import Limits, ParityResult, compare_outputs

PACKAGE = "advent"
CONSTRUCTOR = "get_deeplab_v2"
_HINT = ("to cross-check, put valeoai/ADVENT (or IntraDA's ADVENT/ folder) on PYTHONPATH; "
         "PyPI's 'advent' is an unrelated placeholder")


@dataclass(frozen=True)
class UpstreamStatus:
    """What ``import advent`` finds. ``kind``: upstream | absent | placeholder | broken | unusable."""

    kind: str
    reason: str
    location: str | None = None
    constructor: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @property
    def available(self) -> bool:
        return self.kind == "upstream"

    def __bool__(self) -> bool:
        return self.available

    def report(self) -> str:
        if self.available:
            return f"upstream ADVENT available: {self.reason}"
        return f"upstream ADVENT not available: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"available": self.available, "kind": self.kind, "reason": self.reason, "location": self.location}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _distribution(package: str) -> str:
    """' (installed distribution advent 0.0.0)' when pip installed the top-level package, else ''."""
    from importlib import metadata

    try:
        dists = metadata.packages_distributions().get(package, [])
        return "".join(f" (installed distribution {d} {metadata.version(d)})" for d in dists[:1])
    except Exception:  # metadata of unrelated broken installs must not break the check
        return ""


def _accepts(fn: Callable[..., Any], *names: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True  # a builtin or C callable: let the call itself decide
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return all(n in params and params[n].kind is not inspect.Parameter.POSITIONAL_ONLY for n in names)


def find_upstream(package: str = PACKAGE) -> UpstreamStatus:
    """Locate ``<package>.model.deeplabv2.get_deeplab_v2`` without installing anything.

    Importing runs the package's code (as upstream's own scripts do); a failure is reported, not raised.
    """
    module = f"{package}.model.deeplabv2"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        return UpstreamStatus("broken", f"looking up '{package}' failed ({_first_line(exc)}); {_HINT}")
    if spec is None:
        return UpstreamStatus("absent", f"no module named '{package}'; {_HINT}")
    location = spec.origin if spec.origin not in (None, "namespace") else \
        ", ".join(spec.submodule_search_locations or []) or None
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name in (package, f"{package}.model", module):
            return UpstreamStatus("placeholder", f"'{package}' at {location}{_distribution(package)} is not ADVENT's "
                                  f"code: it has no {module}; {_HINT}", location)
        return UpstreamStatus("broken", f"importing {module} from {location} failed: {_first_line(exc)}", location)
    except Exception as exc:  # anything the package's import-time code raises
        return UpstreamStatus("broken", f"importing {module} from {location} failed: {_first_line(exc)}", location)
    location = getattr(mod, "__file__", None) or location
    fn = getattr(mod, CONSTRUCTOR, None)
    if not callable(fn):
        return UpstreamStatus("unusable", f"{module} at {location} has no callable {CONSTRUCTOR}; {_HINT}", location)
    if not _accepts(fn, "num_classes", "multi_level"):
        return UpstreamStatus("unusable", f"{module}.{CONSTRUCTOR}{inspect.signature(fn)} at {location} does not take "
                              f"num_classes and multi_level as upstream's does", location)
    return UpstreamStatus("upstream", f"{module}.{CONSTRUCTOR} from {location}", location, fn)


@dataclass(frozen=True)
class UpstreamCheck:
    """Upstream ADVENT (reference) vs intrada.model.deeplab (candidate) on the same weights and input."""

    status: UpstreamStatus
    parity: ParityResult | None = None
    error: str | None = None  # the check ran and could not compare (weights refused, wrong outputs)

    @property
    def available(self) -> bool:
        return self.status.available

    @property
    def passed(self) -> bool:
        return self.available and self.error is None and self.parity is not None and self.parity.passed

    def __bool__(self) -> bool:
        return self.passed

    @property
    def identical(self) -> bool:
        return self.parity is not None and all(s.max_abs == 0.0 for s in self.parity.outputs)

    def report(self) -> str:
        if not self.available:
            return f"upstream ADVENT cross-check not available: {self.status.reason}"
        if self.error is not None:
            return f"upstream ADVENT cross-check FAIL ({self.status.location}): {self.error}"
        assert self.parity is not None
        same = " (bit-identical outputs)" if self.identical else ""
        return f"upstream ADVENT cross-check{same}: {self.parity.report()} [upstream: {self.status.location}]"

    def as_dict(self) -> dict[str, Any]:
        return {"available": self.available, "passed": self.passed, "status": self.status.as_dict(),
                "error": self.error, "identical": self.identical,
                "parity": None if self.parity is None else self.parity.as_dict()}


def _outputs(model: Any, x: Any, who: str) -> tuple[Any, Any]:
    out = model(x)
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(hasattr(o, "shape") for o in out)):
        raise _Mismatch(f"{who} returned {type(out).__name__}, expected the tuple (aux, main) of tensors")
    return out[0], out[1]


class _Mismatch(Exception):
    pass


def compare_with_upstream(state_dict: Mapping[str, Any], image: np.ndarray, limits: Limits, *,
                          status: UpstreamStatus | None = None, model: Any = None) -> UpstreamCheck:
    """Build upstream's model, load ``state_dict`` strictly, run it and ours on ``image``
    (preprocessed float32 [N, 3, H, W] or [3, H, W]; any H, W the network accepts, e.g. 32x48 in
    tests) and compare both heads with ``limits``. ``status`` defaults to :func:`find_upstream`;
    ``model`` is our model with the same weights loaded (default: intrada.model.deeplab.get_deeplab_v2()
    with ``state_dict`` loaded strictly). Costs a model build or two and two forward passes."""
    import torch

    from ..model.deeplab import get_deeplab_v2

    status = find_upstream() if status is None else status
    if not status.available or status.constructor is None:
        return UpstreamCheck(status)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != protocol.INPUT_C:
        raise ValueError(f"image must be float32 [N, 3, H, W] or [3, H, W], got {list(np.shape(image))}")
    call = f"{CONSTRUCTOR}(num_classes={protocol.NUM_CLASSES}, multi_level=True)"
    try:
        upstream = status.constructor(num_classes=protocol.NUM_CLASSES, multi_level=True)
    except Exception as exc:
        return UpstreamCheck(status, error=f"upstream {call} raised {_first_line(exc)}")
    try:
        upstream.load_state_dict(state_dict, strict=True)
    except Exception as exc:  # missing / unexpected keys, shape mismatch
        return UpstreamCheck(status, error=f"upstream's model refused the weights (strict load): {_first_line(exc)}")
    ours = model
    if ours is None:
        ours = get_deeplab_v2()
        ours.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))
        try:
            ua, um = _outputs(upstream.eval(), t, f"upstream's {call}(image)")
        except _Mismatch as exc:
            return UpstreamCheck(status, error=str(exc))
        except Exception as exc:
            return UpstreamCheck(status, error=f"upstream forward raised {_first_line(exc)}")
        oa, om = ours.eval()(t)
    assert oa is not None
    for head, u, o in (("aux", ua, oa), ("main", um, om)):
        if tuple(u.shape) != tuple(o.shape):
            return UpstreamCheck(status, error=f"{head} output shape {list(u.shape)} upstream vs {list(o.shape)} ours "
                                 f"for input {list(x.shape)}")
    u_aux, u_main, o_aux, o_main = (v.numpy() for v in (ua, um, oa, om))
    pairs = (((u_aux[i], u_main[i]), (o_aux[i], o_main[i])) for i in range(x.shape[0]))
    return UpstreamCheck(status, compare_outputs("upstream ADVENT", "intrada.model.deeplab", pairs, limits))
