"""intrada.core.errors: one-line messages, and errors that survive pickling, so a worker process's
IntradaError reaches the parent as itself (preprocess_split and evaluate_dumps rely on it)."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import pickle
from pathlib import Path

import pytest

from intrada.core import errors
from intrada.core.errors import BinsError, IntradaError
from intrada.dataset.preprocess import read_bin

ERRORS = sorted((v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, IntradaError)),
                key=lambda c: c.__name__)


def test_message_is_one_line_with_where_problem_and_hint() -> None:
    e = IntradaError(Path("/x/y.bin"), "truncated:\nread 3 bytes", "regenerate it")
    assert str(e) == "/x/y.bin: truncated: read 3 bytes. Hint: regenerate it"
    assert str(IntradaError("--onnx", "not found")) == "--onnx: not found"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_pickles_with_all_its_fields(cls: type[IntradaError]) -> None:
    e = cls("where", "problem", "hint")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and (back.where, back.problem, back.hint) == ("where", "problem", "hint")
    assert str(back) == str(e)


def test_an_error_raised_in_a_worker_process_reaches_the_parent_as_itself(tmp_path: Path) -> None:
    missing = tmp_path / "gone.bin"
    # spawn: a fresh interpreter, so nothing is shared with this process but the pickled exception
    with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        exc = pool.submit(read_bin, missing).exception(timeout=120)
    assert type(exc) is BinsError
    assert (exc.where, exc.problem, exc.hint) == (str(missing), "bin file not found",
                                                  "run `intrada preprocess` for this split")
    assert str(exc) == f"{missing}: bin file not found. Hint: run `intrada preprocess` for this split"
