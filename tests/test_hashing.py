"""intrada.core.hashing: streamed sha256 and its in-process memo."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import intrada.core.hashing as hashing_mod
from intrada.core.hashing import cached_file_sha256, file_sha256


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 70, 71])
def test_file_sha256_streams_across_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    p = tmp_path / "f"
    p.write_bytes(data)
    assert file_sha256(p, chunk=7) == hashlib.sha256(data).hexdigest()
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()


def test_cached_file_sha256_is_memoised_by_size_mtime_and_inode(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]) * 1000)
        paths.append(p)
    reads: list[str] = []
    real = hashing_mod.file_sha256

    def counting(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
        reads.append(os.fspath(path))
        return real(path, chunk)

    monkeypatch.setattr(hashing_mod, "file_sha256", counting)
    first = [cached_file_sha256(p) for p in paths]
    assert first == [hashlib.sha256(bytes([i]) * 1000).hexdigest() for i in range(5)] and len(reads) == 5
    assert [cached_file_sha256(p) for p in paths] == first and len(reads) == 5, "warm call re-read files"

    # same size, new content and mtime: must be re-read, and only that file
    st = paths[2].stat()
    paths[2].write_bytes(b"\xff" * 1000)
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cached_file_sha256(paths[2]) == hashlib.sha256(b"\xff" * 1000).hexdigest()
    assert [cached_file_sha256(p) for p in paths][3:] == first[3:] and reads[5:] == [os.path.abspath(paths[2])]

    # same size and mtime, but a different file renamed into place (cp -p, rsync -t): a new inode
    other = tmp_path / "other"
    other.write_bytes(b"\xee" * 1000)
    st = paths[3].stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, paths[3])
    assert cached_file_sha256(paths[3]) == hashlib.sha256(b"\xee" * 1000).hexdigest()
