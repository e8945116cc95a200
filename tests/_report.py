"""Reading the gate's report.json in the suite's own tests."""
from __future__ import annotations

from typing import Any


def results(data: dict, **match: str) -> list[dict]:
    """The verdicts recorded in report.json whose fields equal ``match`` (gate, kind, subject, state)."""
    return [r for r in data["results"] if all(r[k] == v for k, v in match.items())]


def accuracy(data: dict, subject: str) -> dict[str, Any]:
    """The details (mIoU, per-class IoU, certification) of the one accuracy verdict of ``subject``."""
    (found,) = results(data, kind="accuracy", subject=subject)
    return found["details"]
