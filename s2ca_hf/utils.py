"""Small helpers shared by the corpus loaders and the video index (no dependency beyond the standard library)."""

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any


def walk_once(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(root, followlinks=True)` that enters every real folder once: symbolic links are followed (a video
    collection is often a tree of links), but a folder reached again through a link, or a link loop, is skipped, by
    its device and inode. Sub-folders are visited in sorted order; callers may prune `subdirs` in place, as with
    `os.walk`."""
    seen: set[tuple[int, int]] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        stat = os.stat(directory)
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            subdirs[:] = []
            continue
        seen.add(key)
        subdirs.sort()
        yield directory, subdirs, files


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks (weights and shards may be larger than memory allows at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of a JSON-able value with sorted keys: the same value always gives the same hash."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
