"""intrada.gate.artifacts: runner outputs are reused per image across entries (same runner, model and bin
bytes), so a --max-images run or a sample after a full run does not run the network again."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from intrada.core import protocol
from intrada.gate.artifacts import Bins, inputs_key, outputs_entry
from intrada.cache.store import ArtifactCache
from intrada.cache.events import read_events
from intrada.dataset.cityscapes import Sample


@dataclass
class _Record:
    throughput: float
    throughput_field: str


class CountingRunner:
    """A runner whose outputs are a function of the input bytes (as a real one's are); it records
    which images it ran on."""

    def __init__(self, backend: str = "counting") -> None:
        self.backend, self.ran = backend, []

    def describe(self) -> dict[str, str]:
        return {"backend": self.backend, "threads": "2"}

    def run_split(self, directory: Path, names: list[str], out: Path, **_: object) -> _Record:
        self.ran.append(list(names))
        for name in names:
            x = np.fromfile(directory / f"{name}.bin", dtype=np.float32)
            for head in (0, 1):
                np.full(protocol.OUTPUT_SHAPE_CHW, float(x[0] + head), np.float32).tofile(out / f"{name}_{head}.bin")
        return _Record(float(len(names)), "counted")


def _bins(root: Path, values: dict[str, float]) -> tuple[Bins, list[Sample]]:
    """One tiny .bin per name (the runner above only reads its first value)."""
    root.mkdir(parents=True)
    for name, v in values.items():
        np.full(8, v, np.float32).tofile(root / f"{name}.bin")
    names = tuple(values)
    samples = [Sample(n, "city", root / f"{n}.png", None) for n in names]
    return Bins(root, f"key-{root.name}", names), samples


def test_outputs_of_images_seen_before_are_linked_not_recomputed(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    full, full_samples = _bins(tmp_path / "full", {"a": 1.0, "b": 2.0, "c": 3.0})
    runner = CountingRunner()
    first = outputs_entry(cache, runner, {"onnx": "m"}, full, full_samples, "outputs")
    assert runner.ran == [["a", "b", "c"]]

    # other bins (another entry, another directory) of two of the same images, and one new image
    subset, subset_samples = _bins(tmp_path / "subset", {"c": 3.0, "a": 1.0, "d": 4.0})
    again = outputs_entry(cache, runner, {"onnx": "m"}, subset, subset_samples, "outputs")
    assert runner.ran[1:] == [["d"]], "only the image no entry holds runs"
    for name in ("a", "c"):
        assert np.array_equal(again.read(name, "main"), first.read(name, "main"))
        assert np.array_equal(again.read(name, "aux"), first.read(name, "aux"))
    assert float(again.read("d", "main").flat[0]) == 5.0
    builds = [e for e in read_events(cache.root) if e["event"] == "build"]
    assert len(builds) == 2  # two entries, each complete on its own

    # same names, other bytes: not the same image, so it runs
    moved, moved_samples = _bins(tmp_path / "moved", {"a": 9.0})
    outputs_entry(cache, runner, {"onnx": "m"}, moved, moved_samples, "outputs")
    assert runner.ran[2:] == [["a"]]
    # another model or another runner never lends its outputs
    outputs_entry(cache, runner, {"onnx": "other"}, full, full_samples[:1], "outputs")
    assert runner.ran[3:] == [["a"]]
    other = CountingRunner("other-backend")
    outputs_entry(cache, other, {"onnx": "m"}, full, full_samples[:1], "outputs")
    assert other.ran == [["a"]]


def test_few_images_are_keyed_by_their_bytes_many_by_the_bins_entry(tmp_path: Path) -> None:
    few, few_samples = _bins(tmp_path / "few", {"a": 1.0, "b": 2.0})
    assert set(inputs_key(few, ["a", "b"])) == {"bins_sha256"}
    many = Bins(tmp_path / "many", "bins-key", tuple(f"n{i}" for i in range(9)))
    assert inputs_key(many, list(many.names)) == {"bins": "bins-key"}
