"""Small helpers shared by the corpus loaders and the video index (no dependency beyond the standard library)."""

import os
from collections.abc import Iterator


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
