"""The benchmarks' shared recorder (benchmarks/results.py): ``bench_record(...)`` in a benchmark,
``--bench-results FILE`` on the command line."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROWS_KEY = pytest.StashKey[list[dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-results", metavar="FILE", default=None,
                     help="write the benchmarks' figures (same-run ratios, the machine) to FILE as JSON; "
                          "`python benchmarks/results.py FILE` renders the table docs/performance.md carries")


@pytest.fixture
def bench_record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``bench_record(figure, measured, reference=..., required=None, direction=">=", unit="x")``:
    one same-run figure of this benchmark (``required`` None: reported, not asserted)."""
    rows = request.config.stash.setdefault(ROWS_KEY, [])

    def record(figure: str, measured: float, *, reference: str, required: float | None = None,
               direction: str = ">=", unit: str = "x") -> None:
        holds = None if required is None else (measured >= required if direction == ">=" else measured <= required)
        rows.append({"benchmark": request.node.name, "figure": figure, "reference": reference,
                     "measured": measured, "required": required, "direction": direction, "unit": unit,
                     "holds": holds})

    return record


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--bench-results")
    rows = session.config.stash.get(ROWS_KEY, [])
    if path and rows:
        from results import write

        write(Path(path), rows)
