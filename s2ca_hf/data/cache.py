"""The frame cache: decode every video of a corpus split once, then train and evaluate at the speed of reading arrays.

`build_frame_cache(corpus, processor)` decodes the split's unique videos with `read_frames` (the processor's frame
policy and the rows' windows), resizes and crops them exactly as the processor does, and writes the uint8 frames
(`(max_frames, 3, H, W)`, zero-padded) and `frame_mask` into an on-disk `datasets` cache, in parallel over the cores
(`Dataset.map(num_proc=...)`), a few videos in memory at a time. The frames of a video are one binary value (its
C-order bytes; the shape is in the cache's metadata): reading a batch is then one Arrow `take` and one
`np.frombuffer`, where a nested `Array4D` column costs several times more to gather.

The cache folder is keyed by the corpus, the split, the frame policy, the processor's resolution and the video files
(path, window, size, modification time), so a changed policy or a regenerated corpus builds a new cache instead of
reading a stale one.

`FrameCache.video_inputs(video_ids)` turns cached rows into `pixel_values_videos` / `frame_mask` tensors, normalised
as the processor normalises: the same tensors as `processor(videos=[path])` (`collator.py` batches them).
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset, Features, Sequence, Value, concatenate_datasets

from ..frame_policy import FramePolicy
from ..video_io import VideoDecodeError, read_frames
from .corpora import corpus_info, corpus_videos, reindex_videos


logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
META_FILE = "frame_cache.json"


def default_cache_dir() -> str:
    """`$S2CA_HF_CACHE/frames`, by default `~/.cache/s2ca_hf/frames`."""
    root = os.environ.get("S2CA_HF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "s2ca_hf"))
    return os.path.join(root, "frames")


ON_ERROR = ("raise", "skip")


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")


def _video_processor(processor):
    return getattr(processor, "video_processor", processor)


def _resolution(processor) -> dict:
    """The processor fields that decide the cached pixels (everything before rescaling and normalisation)."""
    return _video_processor(processor).pixel_settings(scaling=False)


def _frame_shape(processor, max_frames: int) -> tuple[int, int, int, int]:
    video_processor = _video_processor(processor)
    if not video_processor.do_center_crop:
        raise ValueError("The frame cache stores fixed-size frames: the processor must centre-crop (do_center_crop).")
    crop = video_processor.crop_size
    return (max_frames, 3, int(crop["height"]), int(crop["width"]))


def cache_key(videos: Dataset, processor, corpus: str, split: str) -> tuple[str, dict]:
    """The cache folder's name and the description it is keyed on."""
    policy = _video_processor(processor).frame_policy
    files = []
    for video_id, path, start, end in zip(videos["video_id"], videos["video_path"], videos["start"], videos["end"]):
        try:
            stat = os.stat(path)
            signature = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            signature = None  # a missing file is an error (or a skip) at build time
        files.append([video_id, os.path.abspath(path), start, end, signature])
    description = {
        "format_version": CACHE_FORMAT_VERSION,
        "corpus": corpus,
        "split": split,
        "policy": policy.to_dict(),
        "resolution": _resolution(processor),
    }
    digest = hashlib.sha256(json.dumps({**description, "videos": files}, sort_keys=True).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{corpus}-{split}")
    return f"{safe}-{digest}", description


def _decode_video(row: dict, policy: dict, processor_dict: dict, on_error: str, in_worker: bool = False) -> dict:
    """The `map` function: one video to its processor-resolution uint8 frames (module level, so workers can run
    it)."""
    if in_worker and torch.get_num_threads() != 1:
        # A forked worker inherits the parent's OpenMP state but not its thread team: the first parallel torch
        # kernel would wait forever for threads that do not exist in this process (it hung train.py after it had
        # pretrained the small CLIP). One thread per worker is also the right split of the cores.
        torch.set_num_threads(1)
    processor = _worker_processor(processor_dict)
    max_frames = policy["max_frames"]
    shape = _frame_shape(processor, max_frames)
    try:
        clip = read_frames(row["video_path"], FramePolicy(**policy), row["start"], row["end"])
    except VideoDecodeError as error:
        if on_error == "raise":
            raise
        logger.warning("Skipping video %s: %s", row["video_id"], error)
        return {"frames": b"", "frame_mask": [0] * max_frames, "error": str(error)}
    # The processor's own resize and crop (rescaling and normalisation are left to the reader), so that cached
    # pixels are exactly those the processor would compute from the same frames.
    out = processor(
        videos=[clip.real_frames],
        do_sample_frames=False,
        do_rescale=False,
        do_normalize=False,
        max_frames=max_frames,
        return_tensors="pt",
    )
    frames = out["pixel_values_videos"][0]
    if frames.dtype != torch.uint8 or tuple(frames.shape) != shape:
        raise RuntimeError(f"The processor returned {tuple(frames.shape)} {frames.dtype}, expected {shape} uint8.")
    return {"frames": frames.numpy().tobytes(), "frame_mask": out["frame_mask"][0].tolist(), "error": None}


_WORKER_PROCESSOR: tuple[str, object] | None = None


def _worker_processor(processor_dict: dict):
    # Rebuilt once per worker process from its dict: cheaper to send, and independent of how processors pickle.
    global _WORKER_PROCESSOR
    key = json.dumps(processor_dict, sort_keys=True, default=str)
    if _WORKER_PROCESSOR is None or _WORKER_PROCESSOR[0] != key:
        from ..video_processing_s2ca import S2CAVideoProcessor

        fields = {k: v for k, v in processor_dict.items() if k not in ("video_processor_type", "processor_class")}
        _WORKER_PROCESSOR = (key, S2CAVideoProcessor(**fields))
    return _WORKER_PROCESSOR[1]


class FrameCache:
    """A built frame cache. `dataset` has one row per video: `video_id`, `frames` (the bytes of a uint8 array of
    shape `frame_shape`, `(max_frames, 3, H, W)`; empty for a skipped video), `frame_mask` `(max_frames,)` and
    `error` (null, or why the video was skipped). Open an existing one with `FrameCache(path)`."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        meta_path = os.path.join(self.path, META_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{self.path} is not a frame cache ({META_FILE} is missing).")
        with open(meta_path, encoding="utf-8") as f:
            self.meta = json.load(f)
        if self.meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise ValueError(f"{self.path}: frame cache format {self.meta.get('format_version')}, expected "
                             f"{CACHE_FORMAT_VERSION}; rebuild it.")  # fmt: skip
        shards = [Dataset.from_file(os.path.join(self.path, name)) for name in self.meta["shards"]]
        # One memory-mapped Arrow table over the shards (no copy); `dataset` is the `datasets` view of it.
        self._table = pa.concat_tables([shard.data.table for shard in shards])
        self.dataset = concatenate_datasets(shards) if len(shards) > 1 else shards[0]
        self.frame_shape = tuple(self.meta["frame_shape"])
        self.policy = FramePolicy(**self.meta["policy"])
        self.failed: dict[str, str] = self.meta["failed"]
        self._rows = {video_id: row for row, video_id in enumerate(self._table.column("video_id").to_pylist())}
        # Where each row's frames are: its chunk (one per write batch) and its place there, and the chunks' offsets
        # and data as numpy views of the memory map.
        self._chunks, self._chunk_of_row, self._row_in_chunk = [], [], []
        for index, chunk in enumerate(self._table.column("frames").chunks):
            _, offsets, data = chunk.buffers()
            offsets = np.frombuffer(offsets, dtype=np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
            self._chunks.append((offsets, np.frombuffer(data, dtype=np.uint8) if data is not None else None))
            self._chunk_of_row += [index] * len(chunk)
            self._row_in_chunk += list(range(len(chunk)))
        masks = self._table.column("frame_mask").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        self._masks = masks.reshape(len(self._rows), -1).astype(np.int64)

    def __len__(self) -> int:
        return self._table.num_rows

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._rows and video_id not in self.failed

    def __repr__(self) -> str:
        return f"FrameCache({self.path!r}, videos={len(self)}, failed={len(self.failed)}, policy={self.policy})"

    def frames(self, video_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached uint8 frames `(V, max_frames, 3, H, W)` and `frame_mask` `(V, max_frames)` of some videos."""
        out = np.empty((len(video_ids), *self.frame_shape), dtype=np.uint8)
        rows = []
        for i, video_id in enumerate(video_ids):
            if video_id in self.failed:
                raise KeyError(f"Video {video_id} was skipped when the cache was built: {self.failed[video_id]}")
            if video_id not in self._rows:
                raise KeyError(f"Video {video_id} is not in the frame cache {self.path}.")
            row = self._rows[video_id]
            # One copy straight out of the memory-mapped chunk: an Arrow `take` over a chunked column would first
            # concatenate every chunk.
            offsets, data = self._chunks[self._chunk_of_row[row]]
            start, end = offsets[self._row_in_chunk[row]], offsets[self._row_in_chunk[row] + 1]
            out[i] = data[start:end].reshape(self.frame_shape)
            rows.append(row)
        return torch.from_numpy(out), torch.from_numpy(self._masks[rows])

    def video_inputs(self, video_ids: list[str], processor) -> dict[str, torch.Tensor]:
        """Model-ready `pixel_values_videos` `(V, max_frames, 3, H, W)` float32 and `frame_mask` `(V, max_frames)`:
        the processor's rescaling and normalisation (the processor's policy and resolution must be the cache's),
        padding zeroed as the processor pads. Equal, bit for bit, to `processor(videos=paths)`."""
        video_processor = _video_processor(processor)
        if video_processor.frame_policy != self.policy or _resolution(processor) != self.meta["resolution"]:
            raise ValueError(f"The processor's frame policy or resolution differs from the cache {self.path}'s.")
        frames, frame_mask = self.frames(video_ids)
        if video_processor.do_rescale and video_processor.do_normalize:
            # The processor's fused constants and operations, (x - mean / r) / (std / r) in float32, computed in
            # numpy: IEEE float32 arithmetic gives the same values, and numpy's large allocations (transparent huge
            # pages) cost a fraction of the page faults of a fresh torch tensor, the bulk of the time here.
            mean = torch.tensor(video_processor.image_mean) * (1.0 / video_processor.rescale_factor)
            std = torch.tensor(video_processor.image_std) * (1.0 / video_processor.rescale_factor)
            array = frames.numpy().astype(np.float32)
            array -= mean.numpy()[:, None, None]
            array /= std.numpy()[:, None, None]
            pixel_values = torch.from_numpy(array)
        else:
            pixel_values = video_processor.rescale_and_normalize(
                frames.flatten(0, 1),
                video_processor.do_rescale,
                video_processor.rescale_factor,
                video_processor.do_normalize,
                video_processor.image_mean,
                video_processor.image_std,
            )
            pixel_values = pixel_values.float().view(frames.shape)
        if not frame_mask.all():
            pixel_values[frame_mask == 0] = 0  # padding is zero in normalised space, as the processor pads
        return {"pixel_values_videos": pixel_values, "frame_mask": frame_mask}

    def filter_corpus(self, dataset: Dataset) -> Dataset:
        """The corpus rows whose video was cached, `video_index` renumbered (after a build with
        `on_error="skip"`)."""
        if not self.failed:
            return dataset
        failed = set(self.failed)
        kept = dataset.filter(lambda video_id: video_id not in failed, input_columns="video_id", desc="Dropping")
        return reindex_videos(kept)


def build_frame_cache(
    dataset: Dataset,
    processor,
    *,
    cache_dir: str | os.PathLike | None = None,
    corpus: str | None = None,
    split: str | None = None,
    num_proc: int | None = None,
    on_error: str = "raise",
    writer_batch_size: int | None = None,
    rebuild: bool = False,
) -> FrameCache:
    """Decodes every video of a corpus split once into an on-disk frame cache, or opens the cache if it exists.

    Args:
        dataset: a split from `load_corpus` (or its `corpus_videos`).
        processor: the `S2CAVideoProcessor` (or `S2CAProcessor`) whose frame policy and resolution to cache.
        cache_dir: where caches live (default `default_cache_dir()`); each gets a folder named by its key.
        corpus, split: default to what `load_corpus` recorded in the dataset.
        num_proc: decoding processes (default: every core).
        on_error: `"raise"` stops at the first undecodable video (the error names the file); `"skip"` logs each
            one, caches it as failed, and logs the count; `FrameCache.filter_corpus` then drops its texts.
        writer_batch_size: videos per write (default: about 64 MB of frames), which bounds each process's memory.
        rebuild: decode again even if a cache with this key exists.
    """
    check_on_error(on_error)
    info = corpus_info(dataset)
    corpus = corpus or info.get("corpus") or "corpus"
    split = split or info.get("split") or "split"
    videos = corpus_videos(dataset) if "text" in dataset.column_names else dataset
    if len(videos) == 0:
        raise ValueError(f"{corpus} {split} has no video to cache.")
    key, description = cache_key(videos, processor, corpus, split)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
    path = os.path.join(cache_dir, key)
    if os.path.isfile(os.path.join(path, META_FILE)) and not rebuild:
        logger.info("Reading the frame cache %s", path)
        return FrameCache(path)

    policy = description["policy"]
    shape = _frame_shape(processor, policy["max_frames"])
    features = Features(
        {
            "video_id": Value("string"),
            "frames": Value("large_binary"),
            "frame_mask": Sequence(Value("int8"), length=policy["max_frames"]),
            "error": Value("string"),
        }
    )
    if writer_batch_size is None:
        writer_batch_size = max(1, (64 << 20) // int(np.prod(shape)))
    num_proc = max(1, min(num_proc or os.cpu_count() or 1, len(videos)))
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir)
    try:
        built = videos.map(
            _decode_video,
            fn_kwargs={
                "policy": policy,
                "processor_dict": _video_processor(processor).to_dict(),
                "on_error": on_error,
                "in_worker": num_proc > 1,
            },
            remove_columns=[c for c in videos.column_names if c != "video_id"],
            features=features,
            num_proc=num_proc if num_proc > 1 else None,
            writer_batch_size=writer_batch_size,
            cache_file_name=os.path.join(staging, "frames.arrow"),
            load_from_cache_file=False,
            new_fingerprint=key,
            desc=f"Caching frames ({corpus} {split})",
        )
        errors = {v: e for v, e in zip(built["video_id"], built["error"]) if e is not None}
        shards = [os.path.basename(f["filename"]) for f in built.cache_files]
        del built  # release the memory maps before the folder moves
        meta = {
            **description,
            "frame_shape": list(shape),
            "num_videos": len(videos),
            "failed": errors,
            "shards": shards,
        }
        with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(staging, path)  # the cache appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if errors:
        logger.warning("%s %s: %d of %d videos could not be decoded and were skipped.", corpus, split, len(errors),
                       len(videos))  # fmt: skip
    return FrameCache(path)


__all__ = ["FrameCache", "build_frame_cache", "cache_key", "check_on_error", "default_cache_dir"]
