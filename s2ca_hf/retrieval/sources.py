"""Which videos an index holds: the files of a folder (links followed, each real folder once) or a corpus split,
optionally cut into fixed time windows ("moments") that are indexed as items of their own."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Collection, Sequence
from typing import Any

from ..utils import walk_once
from ..video_io import VIDEO_EXTENSIONS, open_video
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
    """The videos named by `--videos`: a folder (searched recursively), one video file, or
    `corpus:NAME:DATA_DIR:SPLIT`."""
    spec = os.fspath(spec)
    if spec.startswith("corpus:"):
        parts = spec[len("corpus:") :].split(":")
        if len(parts) < 3 or not parts[0] or not parts[-1]:
            raise VideoIndexError(
                f"A corpus is named corpus:NAME:DATA_DIR:SPLIT, e.g. corpus:msrvtt:data:test; got {spec!r}."
            )
        name, split, data_dir = parts[0], parts[-1], ":".join(parts[1:-1])
        return corpus_videos(name, data_dir, split, video_dir)
    if os.path.isfile(spec):  # one video file: an index of one (grown later from its folder, or kept as it is)
        path = os.path.abspath(spec)
        if not path.lower().endswith(tuple(ext.lower() for ext in VIDEO_EXTENSIONS)):
            raise VideoIndexError(f"{path} is not a video file ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of them.")
        return [VideoItem(id=os.path.basename(path), path=path)], {"kind": "file", "root": os.path.dirname(path)}
    items = folder_videos(spec)
    return items, {"kind": "folder", "root": os.path.abspath(spec)}


# --------------------------------------------------------------------------------------------------------------
# Moments: fixed windows of each video as items of their own
# --------------------------------------------------------------------------------------------------------------


# The most windows one video may give: a 14-hour video at --stride 1. Past it, a stride or a video is a mistake.
MAX_WINDOWS_PER_VIDEO = 50_000


def check_windows(window: float | None, stride: float | None) -> dict[str, float] | None:
    """The window settings an index records, `{"window": seconds, "stride": seconds}`, or None for whole videos.
    `stride` defaults to `window` (windows side by side). Both are whole seconds: the frame policy reads frames per
    whole second of a window (CLIP4Clip's sampling), so a window starting inside a second would take a frame from
    before its start. Raises `ValueError` for a stride without a window or a length that is not a whole number of
    seconds >= 1."""
    if window is None:
        if stride is not None:
            raise ValueError("--stride needs --window: the stride is the step between windows of --window seconds.")
        return None
    stride = window if stride is None else stride
    for name, value in (("--window", window), ("--stride", stride)):
        number = isinstance(value, (int, float)) and math.isfinite(value)
        if not (number and value >= 1 and float(value).is_integer()):
            raise ValueError(f"{name} must be a whole number of seconds >= 1 (frames are read per second): {value!r}")
    return {"window": float(window), "stride": float(stride)}


def _seconds(value: float) -> str:
    """A time in an id: milliseconds at most, no trailing zeros (`12`, `2.5`, `0.125`)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def window_spans(duration: float, window: float, stride: float) -> list[tuple[float, float]]:
    """The `(start, end)` windows of a video of `duration` seconds (`window`, `stride`: whole seconds, as
    `check_windows` gives them): `[k * stride, k * stride + window]` for every k whose window fits in the video,
    then, when those stop short of the end, one last window ending at the end of the video and starting at the
    whole second at least `window` before it, so that the tail is covered and every start is a whole second; a video
    no longer than one window gives one item, `(0, duration)`. The duration is rounded to milliseconds."""
    duration = round(float(duration), 3)
    if duration <= window:
        return [(0.0, duration)]
    spans = []
    k = 0
    while k * stride + window <= duration:
        spans.append((float(k * stride), float(k * stride + window)))
        k += 1
    if spans[-1][1] < duration:
        spans.append((float(math.floor(duration - window)), duration))
    return spans


def window_count(duration: float, window: float, stride: float) -> int:
    """How many windows `window_spans` gives, without listing them."""
    if duration <= window:
        return 1
    fitting = math.floor((duration - window) / stride) + 1
    return fitting + int((fitting - 1) * stride + window < duration)  # and the tail window


def video_duration(path: str) -> float:
    """A video file's duration in seconds, as the index records it (frames / frame rate, from the packet index:
    demuxing without decoding). Raises `ValueError` or `OSError` for a file that cannot be read."""
    import av

    try:
        with open_video(path) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            count = sum(1 for packet in container.demux(stream) if packet.size)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
    except av.FFmpegError as error:
        raise ValueError(f"{type(error).__name__}: {error}") from error
    if count == 0 or fps <= 0:
        raise ValueError(f"the video stream has {count} frames at {fps} frames per second")
    return count / fps


def window_items(
    items: Sequence[VideoItem],
    window: float,
    stride: float,
    durations: dict[str, float] | None = None,
    unreadable: Collection[str] = (),
) -> list[VideoItem]:
    """Every video of `items` cut into the windows of `window_spans`, each an item with id
    `"<video id>@<start>-<end>"` (seconds). `durations` maps paths to known durations (from a previous run over the
    unchanged file); the others are read from the file. A file whose duration cannot be read, or one of the paths
    `unreadable` (skipped by a previous run, unchanged since), stays one item without a window, so that decoding it
    fails and it is listed as skipped with the reason."""
    durations = durations or {}
    out = []
    for item in items:
        if item.start is not None or item.end is not None:
            raise VideoIndexError(
                f"{item.id} is already a clip ({item.start}-{item.end} s) of its source: --window cuts whole videos "
                "into windows; index this source without --window."
            )
        duration = durations.get(item.path)
        if item.path in unreadable:
            out.append(item)
            continue
        if duration is None:
            try:
                duration = video_duration(item.path)
            except (OSError, ValueError, ImportError):
                out.append(item)
                continue
        count = window_count(duration, window, stride)
        if count > MAX_WINDOWS_PER_VIDEO:
            raise VideoIndexError(
                f"{item.path} ({duration:.0f} s) would give {count} windows of {window:g} s every {stride:g} s, more "
                f"than the {MAX_WINDOWS_PER_VIDEO} one video may give: use a larger --stride."
            )
        for start, end in window_spans(duration, window, stride):
            out.append(VideoItem(f"{item.id}@{_seconds(start)}-{_seconds(end)}", item.path, start, end))
    return out


__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoItem",
    "check_windows",
    "corpus_videos",
    "folder_videos",
    "resolve_videos",
    "video_duration",
    "window_count",
    "window_items",
    "window_spans",
]
