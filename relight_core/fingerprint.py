"""Content fingerprints of input files: what identifies footage, light and camera files, so that a cached
analysis or a finished frame is reused only for the same bytes (not the same path or modification time:
a file replaced by another of the same size and mtime, or a frame overwritten inside a sequence folder,
is a change).

A file's fingerprint is its size plus a BLAKE2b hash of its bytes; files above `FULL_HASH_BYTES` (long
movies) hash `SAMPLES` evenly spaced blocks of `BLOCK` bytes plus the first and last block, which is
~8 MB read per file however long the movie (any re-encode or edit changes the sampled bytes or the size).
An image-sequence folder hashes the name and fingerprint of every image in it. Hashing runs at the disk's
speed: a 1,000-frame sequence of 1 MB PNGs takes about a second.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_HASH_BYTES = 64 << 20
BLOCK = 128 << 10
SAMPLES = 62


def file_fingerprint(path: str | os.PathLike) -> str:
    """'<size>:<blake2b hex>' of one file (sampled blocks above `FULL_HASH_BYTES`)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            step = (size - BLOCK) / float(SAMPLES + 1)
            for i in range(SAMPLES + 2):
                f.seek(int(round(i * step)))
                h.update(f.read(BLOCK))
    return f"{size}:{h.hexdigest()}"


def files_fingerprint(paths: list[Path]) -> str:
    """One fingerprint of several files (e.g. every image of a sequence): their names and fingerprints."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        h.update(f"{Path(p).name}\0{file_fingerprint(p)}\n".encode("utf-8", "surrogateescape"))
    return f"{len(paths)}:{h.hexdigest()}"


def footage_fingerprint(footage) -> str:
    """The fingerprint of an `io.Footage`'s source: its movie or image file, or every image of its
    sequence folder (all of them, not only the selected range: frames are numbered by position)."""
    cached = getattr(footage, "_fingerprint", None)
    if cached is not None:
        return cached
    files = list(getattr(footage, "_files", []) or [])
    fp = files_fingerprint(files) if footage.kind == "sequence" and files else file_fingerprint(footage.path)
    footage._fingerprint = fp  # hashed once per opened footage
    return fp


def spec_fingerprint(value: str) -> str | None:
    """A light or camera spec that names a file -> that file's fingerprint; None when it is not a file
    (a preset name, "input")."""
    p = Path(str(value)).expanduser()
    return file_fingerprint(p) if p.is_file() else None
