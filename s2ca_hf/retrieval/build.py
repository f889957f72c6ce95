"""Building an index: decode every pending video, encode psi, write shards, commit the manifest; resumable.

A new run lists the videos, drops rows whose file changed or disappeared, and encodes only the videos no shard
holds, so an interrupted run loses at most the chunk it was writing.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .errors import VideoIndexError
from .evaluation import encode_videos
from .fingerprints import frame_policy, model_fingerprint, text_settings
from .sources import VideoItem, check_windows, resolve_videos, window_items
from .store import (
    MANIFEST_FILE,
    SHARDS_DIR,
    IndexLock,
    clear_index,
    commit_index,
    load_shard_vectors,
    read_manifest,
    remove_stale_temporary_files,
    scan_shards,
    settings_differences,
    write_shard,
)


logger = logging.getLogger(__name__)


def load_model_and_processor(name_or_path: str, revision: str | None = None, dtype: str | None = None):
    """`S2CAModel` and `S2CAProcessor` from a Hub id or a folder saved with both, in eval mode, on the CPU, with
    the fingerprint of the weights as loaded (before any dtype cast, so the checkpoint is what is identified)."""
    from s2ca_hf import S2CAModel, S2CAProcessor

    try:
        model = S2CAModel.from_pretrained(name_or_path, revision=revision).eval()
        processor = S2CAProcessor.from_pretrained(name_or_path, revision=revision)
    except OSError as error:
        raise VideoIndexError(
            f"Could not load an S2CA model and processor from {name_or_path!r}: {error}. A model folder needs "
            "both `model.save_pretrained(folder)` and `processor.save_pretrained(folder)`."
        ) from error
    fingerprint = model_fingerprint(model, name_or_path, revision)
    if dtype is not None:
        model = model.to(ENCODING_DTYPES[dtype])
    return model, processor, fingerprint


ENCODING_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------------------------
# Decoding: one item to model inputs, in DataLoader workers when asked
# --------------------------------------------------------------------------------------------------------------


def decode_for_index(processor, path: str, start: float | None = None, end: float | None = None):
    """Model inputs for one video file, `(1, F, 3, H, W)` pixels and `(1, F)` frame mask, and its metadata.

    The frames are those of the processor's frame policy (with a time window, the same policy cut to the window),
    decoded by `read_frames` and passed to the processor as frames that are already sampled, so the pixels are
    exactly those of `processor(videos=[path])` and of the frame cache. Raises `FileNotFoundError`/`ValueError`
    naming the file.
    """
    from s2ca_hf.video_io import read_frames

    video_processor = processor.video_processor
    clip = read_frames(path, video_processor.frame_policy, start, end)
    try:
        inputs = processor(videos=[clip.real_frames], return_tensors="pt")
    except Exception as error:  # a frame size or layout the image pipeline rejects: skip this video, name it
        raise ValueError(f"Could not process the frames of {path}: {error}") from error
    height, width = clip.frames.shape[1:3]
    info = {
        "duration": clip.num_video_frames / clip.fps,
        "num_frames": int(clip.num_video_frames),
        "fps": float(clip.fps),
        "width": int(width),
        "height": int(height),
        "sampled_frames": int(inputs["frame_mask"].sum()),
    }
    return inputs["pixel_values_videos"], inputs["frame_mask"], info


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes one pending video per item; an unreadable one becomes an error record instead of an exception, so
    that a corrupt file costs its own slot and not the run."""

    def __init__(self, items: Sequence[VideoItem], processor):
        self.items = items
        self.processor = processor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            pixels, frame_mask, info = decode_for_index(self.processor, item.path, item.start, item.end)
        except (OSError, ValueError) as error:
            return {"index": index, "error": f"{type(error).__name__}: {error}"}
        return {"index": index, "pixel_values_videos": pixels, "frame_mask": frame_mask, "info": info}


def _keep_list(batch: list) -> list:
    return batch


class _ChunkBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset positions that never cross a chunk boundary, so every shard is one chunk of videos."""

    def __init__(self, chunk_lengths: Sequence[int], batch_size: int):
        self.chunk_lengths = chunk_lengths
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        offset = 0
        for length in self.chunk_lengths:
            for start in range(0, length, self.batch_size):
                yield list(range(offset + start, offset + min(start + self.batch_size, length)))
            offset += length

    def __len__(self) -> int:
        return sum(math.ceil(length / self.batch_size) for length in self.chunk_lengths)


# --------------------------------------------------------------------------------------------------------------
# Building an index
# --------------------------------------------------------------------------------------------------------------


def _file_state(path: str) -> tuple[int | None, int | None]:
    try:
        stat = os.stat(path)
    except OSError:
        return None, None
    return int(stat.st_size), int(stat.st_mtime_ns)


def _prune_shards(
    shard_dir: str, headers: dict[str, dict], current: dict[str, dict]
) -> tuple[dict[str, dict], int, set[str]]:
    """Drops from the shards the rows and skipped entries whose video is gone from the source or whose file changed
    since (size or modification time), and duplicates. Affected shards are rewritten under their new content name.
    Returns the new headers, the number of dropped entries, and the shards they replace ("retired"): those stay on
    disk, for the searches that read the committed manifest, until the run commits the new one."""
    seen: set[str] = set()
    new_headers, dropped, retired = {}, 0, set()
    for name, header in headers.items():

        def keep(entry: dict) -> bool:
            state = current.get(entry["id"])
            fresh = state is not None and (state["size_bytes"], state["mtime_ns"]) == (
                entry.get("size_bytes"),
                entry.get("mtime_ns"),
            )
            if fresh and entry["id"] not in seen:
                seen.add(entry["id"])
                return True
            return False

        kept_rows = [i for i, row in enumerate(header["rows"]) if keep(row)]
        kept_skipped = [entry for entry in header["skipped"] if keep(entry)]
        if len(kept_rows) == len(header["rows"]) and len(kept_skipped) == len(header["skipped"]):
            new_headers[name] = header
            continue
        dropped += len(header["rows"]) - len(kept_rows) + len(header["skipped"]) - len(kept_skipped)
        new_name = None
        if kept_rows or kept_skipped:
            vectors = load_shard_vectors(os.path.join(shard_dir, name))[kept_rows]
            rows = [header["rows"][i] for i in kept_rows]
            new_name = write_shard(shard_dir, vectors, rows, kept_skipped, header["settings"])
            new_headers[new_name] = {**header, "rows": rows, "skipped": kept_skipped, "shape": tuple(vectors.shape)}
        if new_name != name:
            retired.add(name)
    # A rewrite can give a shard the name of one already there (the same content, left by an interrupted run): that
    # name is the new shard's, not retired.
    return new_headers, dropped, retired - set(new_headers)


def software_versions() -> dict[str, str]:
    import transformers

    from s2ca_hf import __version__

    return {"s2ca_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def build_index(
    model,
    processor,
    videos: str | os.PathLike | tuple[list[VideoItem], dict],
    out: str | os.PathLike,
    *,
    fingerprint: dict[str, Any] | None = None,
    batch_size: int = 16,
    shard_size: int = 1024,
    num_workers: int = 0,
    accelerator=None,
    overwrite: bool = False,
    progress: bool = True,
    lock_timeout: float = 0.0,
    window: float | None = None,
    stride: float | None = None,
) -> dict[str, Any]:
    """Encodes the videos' psi into the index folder `out`, or completes it; returns the manifest.

    Args:
        model: an `S2CAModel` (eval mode is set); on `accelerator.device` when an accelerator is given.
        processor: its `S2CAProcessor`; its frame policy is recorded and must stay the same across runs.
        videos: a folder, `"corpus:NAME:DATA_DIR:SPLIT"`, or `(items, source)` from `resolve_videos`.
        out: the index folder (created). If it holds shards, only the missing videos are encoded.
        fingerprint: `model_fingerprint(...)` of the weights as loaded; computed from `model` when not given.
        batch_size: videos per forward pass.
        shard_size: videos per shard: the unit of work that an interruption can lose.
        num_workers: DataLoader processes decoding videos (0 decodes in this process).
        accelerator: an `accelerate.Accelerator`; every process encodes every `num_processes`-th chunk and the
            main process merges the shards into the manifest. None for a single process.
        overwrite: delete an existing index in `out` first (otherwise it is completed, or refused if it was built
            with another model, frame policy, source or window settings).
        lock_timeout: seconds to wait for another run that is writing `out` (`IndexLock`); 0 stops at once.
        window, stride: index moments: every video is cut into windows of `window` seconds, one every `stride`
            seconds (default: `window`), each an item of its own with id `"<video id>@<start>-<end>"` and its
            frames sampled inside the window by the processor's frame policy (`sources.window_spans`). Recorded in
            the manifest; resuming with other values is refused. None indexes whole videos.

    Raises:
        EmptyCollectionError: the source holds no video.
        VideoIndexError: `out` holds an index built with other settings (and `overwrite` is False), or another run
            holds its lock.
        ValueError: a `stride` without a `window`, or a length that is not a positive number of seconds.
    """
    windows = check_windows(window, stride)
    out = os.path.abspath(os.fspath(out))
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = rank == 0

    def barrier():
        if accelerator is not None:
            accelerator.wait_for_everyone()

    items, source = videos if isinstance(videos, tuple) else resolve_videos(videos)
    fingerprint = fingerprint or model_fingerprint(model)
    dtype = next(model.parameters()).dtype
    settings = {
        "model": fingerprint,
        "encoding_dtype": str(dtype).replace("torch.", ""),
        "frame_policy": frame_policy(processor),
        "source": source,
        "windows": windows,
    }
    shard_dir = os.path.join(out, SHARDS_DIR)

    # One writer at a time: the main process locks the folder for the whole run and tells the others whether it
    # could, so that a refusal stops every process instead of leaving them at a barrier.
    lock, refusal = None, None
    if is_main:
        os.makedirs(out, exist_ok=True)
        try:
            lock = IndexLock(out, lock_timeout).acquire()
        except VideoIndexError as error:
            refusal = str(error)
    refusal = _from_main_process(accelerator, refusal)
    if refusal is not None:
        raise VideoIndexError(refusal)
    try:
        # The main process repairs the folder while the others wait; the checks run on every process (they only read,
        # so all raise alike), because an error on the main process alone would leave the others at a barrier.
        if overwrite:
            if is_main and os.path.isdir(out):
                clear_index(out)
            barrier()
        if is_main:
            os.makedirs(shard_dir, exist_ok=True)
            removed = remove_stale_temporary_files(out)  # stale by construction: this run holds the lock
            if removed:
                logger.info("Removed %d temporary files of an interrupted run.", removed)
        barrier()
        _check_resumable(out, shard_dir, settings)
        if windows is not None:
            items = window_items(items, windows["window"], windows["stride"], *_known_files(shard_dir))

        current = {}
        for item in items:
            size, mtime = _file_state(item.path)
            current[item.id] = {"size_bytes": size, "mtime_ns": mtime}
        headers = scan_shards(shard_dir)
        barrier()
        retired = None
        if is_main:
            headers, dropped, retired = _prune_shards(shard_dir, headers, current)
            if dropped:
                logger.info(
                    "%d indexed videos were removed or changed since the last run; they are re-encoded.", dropped
                )
        retired = _from_main_process(accelerator, retired)
        headers = scan_shards(shard_dir, exclude=retired)
        kept = set(headers)  # every other shard at the commit is this run's own work
        done = {row["id"] for header in headers.values() for row in header["rows"]}
        done |= {entry["id"] for header in headers.values() for entry in header["skipped"]}
        pending = [item for item in items if item.id not in done]
        chunks = [pending[start : start + shard_size] for start in range(0, len(pending), shard_size)]
        mine = chunks[rank::world]
        if is_main:
            logger.info(
                "%s: %d %s, %d already indexed, %d to encode in %d shards over %d process(es).",
                out,
                len(items),
                "videos" if windows is None else "moments (video windows)",
                len(items) - len(pending),
                len(pending),
                len(chunks),
                world,
            )

        if mine:
            _encode_chunks(
                model, processor, mine, current, shard_dir, settings, batch_size, num_workers, progress, rank
            )
        barrier()

        manifest = None
        if is_main:
            headers = scan_shards(shard_dir, exclude=retired)
            extra = {
                "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "software": software_versions(),
                "text": text_settings(processor),
            }
            manifest = commit_index(out, headers, settings, extra, written=set(headers) - kept)
            for name in retired:  # searches now read the new manifest: the shards it replaced can go
                if os.path.isfile(os.path.join(shard_dir, name)):
                    os.remove(os.path.join(shard_dir, name))
            if manifest["count"] == 0:
                logger.warning(
                    "No video of %s could be decoded: the index is empty (see `skipped` in the manifest).", out
                )
        barrier()
    finally:
        if lock is not None:
            lock.release()
    if manifest is None:
        manifest = read_manifest(out)
    return manifest


_WINDOW_ID = re.compile(r"@\d+(?:\.\d+)?-\d+(?:\.\d+)?$")  # the tail of a moment's id (`sources.window_items`)


def _known_files(shard_dir: str) -> tuple[dict[str, float], set[str]]:
    """What the shards know of the files that have not changed since (size and modification time): path ->
    duration of those they hold, and the paths of those they skipped whole; so that resuming a windowed build does
    not read every file again to cut it into windows."""
    durations, unreadable = {}, set()

    def unchanged(entry: dict) -> bool:
        return _file_state(entry["path"]) == (entry.get("size_bytes"), entry.get("mtime_ns"))

    for header in scan_shards(shard_dir).values():
        for row in header["rows"]:
            if row.get("duration") is not None and unchanged(row):
                durations[row["path"]] = row["duration"]
        for entry in header["skipped"]:
            if not _WINDOW_ID.search(entry["id"]) and unchanged(entry):  # skipped whole, not one window of it
                unreadable.add(entry["path"])
    return durations, unreadable


def _from_main_process(accelerator, value):
    """`value` as the main process has it, on every process."""
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def _check_resumable(out: str, shard_dir: str, settings: dict) -> None:
    """Refuses to add to an index built with another model, frame policy, dtype, source or window settings."""
    previous = []
    manifest_path = os.path.join(out, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        manifest = read_manifest(out)
        previous.append(("the manifest", {key: manifest.get(key) for key in settings}))
    for name, header in scan_shards(shard_dir).items():
        previous.append((f"shard {name}", header["settings"]))
        break  # every shard of a valid index has the same settings; the first one stands for the rest
    for where, old in previous:
        if old.get("windows") != settings["windows"]:
            raise VideoIndexError(
                f"{out} already holds an index built with {_describe_windows(old.get('windows'))}, not "
                f"{_describe_windows(settings['windows'])} (according to {where}): its items would not be the same "
                "moments. Build with the same --window/--stride, use another --out, or --overwrite to rebuild it."
            )
        differences = settings_differences(_comparable(old), _comparable(settings))
        if differences:
            raise VideoIndexError(
                f"{out} already holds an index built with other settings ({', '.join(differences)} differ, "
                f"according to {where}). Use another --out, or --overwrite to rebuild it."
            )


def _describe_windows(windows: dict | None) -> str:
    if windows is None:
        return "whole videos (no --window)"
    return f"--window {windows['window']:g} --stride {windows['stride']:g}"


def _comparable(settings: dict) -> dict:
    # The model's name may change (a moved folder, a Hub id for a local copy); its hashes identify it (and
    # projection_dim, recorded since the two-stage search, follows from the config hash).
    ignored = ("name_or_path", "revision", "projection_dim")
    model = {k: v for k, v in (settings.get("model") or {}).items() if k not in ignored}
    return {**settings, "model": model}


def _encode_chunks(model, processor, chunks, current, shard_dir, settings, batch_size, num_workers, progress, rank):
    from tqdm.auto import tqdm

    flat = [item for chunk in chunks for item in chunk]
    loader = torch.utils.data.DataLoader(
        _DecodeDataset(flat, processor),
        batch_sampler=_ChunkBatchSampler([len(chunk) for chunk in chunks], batch_size),
        num_workers=num_workers,
        collate_fn=_keep_list,
    )
    chunk_ends = list(itertools.accumulate(len(chunk) for chunk in chunks))
    vectors, rows, skipped = [], [], []
    chunk_index = 0
    with tqdm(total=len(flat), desc=f"index videos (process {rank})", unit="video", disable=not progress) as bar:
        for batch in loader:
            good = [record for record in batch if "error" not in record]
            for record in batch:
                item = flat[record["index"]]
                entry = {"id": item.id, "path": item.path, **current[item.id]}
                if "error" in record:
                    logger.warning("Skipping %s: %s", item.path, record["error"])
                    skipped.append({**entry, "reason": record["error"]})
            if good:
                inputs = {
                    "pixel_values_videos": torch.cat([r["pixel_values_videos"] for r in good]),
                    "frame_mask": torch.cat([r["frame_mask"] for r in good]),
                }
                vectors.append(encode_videos(model, [inputs], progress=False))
                for record in good:
                    item = flat[record["index"]]
                    rows.append(
                        {
                            "id": item.id,
                            "path": item.path,
                            "start": item.start,
                            "end": item.end,
                            **current[item.id],
                            **record["info"],
                        }
                    )
            bar.update(len(batch))
            if batch[-1]["index"] + 1 == chunk_ends[chunk_index]:
                dimension = settings["model"]["dimension"]
                stacked = torch.cat(vectors) if vectors else torch.empty(0, dimension)
                write_shard(shard_dir, stacked, rows, skipped, settings)
                vectors, rows, skipped = [], [], []
                chunk_index += 1


__all__ = ["build_index", "decode_for_index", "load_model_and_processor"]
