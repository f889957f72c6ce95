"""Which videos an index holds: the files of a folder (links followed, each real folder once) or a corpus split."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from ..utils import walk_once
from ..video_io import VIDEO_EXTENSIONS
from .errors import EmptyCollectionError, VideoIndexError


@dataclasses.dataclass(frozen=True)
class VideoItem:
    """One video to encode. `id` is unique in the index and stable across runs: for a folder, the file's path
    relative to the folder; for a corpus, its `video_id` (with the time window when the corpus gives one)."""

    id: str
    path: str
    start: float | None = None
    end: float | None = None


def folder_videos(root: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[VideoItem]:
    """Every video file under `root`, recursively, sorted by relative path. Hidden files and folders are skipped."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise VideoIndexError(f"Video folder not found: {root}")
    wanted = tuple(ext.lower() for ext in extensions)
    items = []
    for directory, subdirs, files in walk_once(root):  # links followed, each real folder once (no link loops)
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.lower().endswith(wanted):
                continue
            path = os.path.join(directory, name)
            items.append(VideoItem(id=os.path.relpath(path, root).replace(os.sep, "/"), path=path))
    items.sort(key=lambda item: item.id)
    if not items:
        raise EmptyCollectionError(
            f"No video file found in {root} (searched recursively for {', '.join(wanted)}); nothing to index."
        )
    return items


def corpus_videos(
    name: str, data_dir: str, split: str, video_dir: str | None = None
) -> tuple[list[VideoItem], dict[str, Any]]:
    """The unique videos of one split of a corpus from `s2ca_hf.data.load_corpus`, and the source description.

    `s2ca_hf.data` is imported here, lazily, so that indexing a folder never needs it.
    """
    try:
        from s2ca_hf.data import load_corpus
    except ImportError as error:
        raise VideoIndexError(
            f"Indexing a corpus needs `s2ca_hf.data.load_corpus`, which is not available in this installation "
            f"({error}). Index the folder of its video files instead: --videos DIR."
        ) from error
    dataset = load_corpus(name, data_dir, split, video_dir=video_dir, allow_missing=True)
    columns = ("video_id", "video_path", "start", "end")
    rows = dataset.select_columns([c for c in columns if c in dataset.column_names]).to_list()
    items: dict[str, VideoItem] = {}
    for row in rows:
        start, end = row.get("start"), row.get("end")
        video_id = str(row["video_id"])
        # A corpus may cut several windows from one file: the window is then part of the identity.
        item_id = video_id if start is None and end is None else f"{video_id}@{start}-{end}"
        items.setdefault(item_id, VideoItem(item_id, os.path.abspath(row["video_path"]), start, end))
    source = {
        "kind": "corpus",
        "name": name,
        "data_dir": os.path.abspath(data_dir),
        "split": split,
        "video_dir": None if video_dir is None else os.path.abspath(video_dir),
    }
    if not items:
        raise EmptyCollectionError(f"Corpus {name!r} split {split!r} in {data_dir} has no video; nothing to index.")
    return sorted(items.values(), key=lambda item: item.id), source


def resolve_videos(spec: str | os.PathLike, video_dir: str | None = None) -> tuple[list[VideoItem], dict[str, Any]]:
    """The videos named by `--videos`: a folder (searched recursively) or `corpus:NAME:DATA_DIR:SPLIT`."""
    spec = os.fspath(spec)
    if spec.startswith("corpus:"):
        parts = spec[len("corpus:") :].split(":")
        if len(parts) < 3 or not parts[0] or not parts[-1]:
            raise VideoIndexError(
                f"A corpus is named corpus:NAME:DATA_DIR:SPLIT, e.g. corpus:msrvtt:data:test; got {spec!r}."
            )
        name, split, data_dir = parts[0], parts[-1], ":".join(parts[1:-1])
        return corpus_videos(name, data_dir, split, video_dir)
    items = folder_videos(spec)
    return items, {"kind": "folder", "root": os.path.abspath(spec)}


__all__ = ["VIDEO_EXTENSIONS", "VideoItem", "corpus_videos", "folder_videos", "resolve_videos"]
