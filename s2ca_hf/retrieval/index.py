"""Encode a video collection once into an index folder, then search it by text, by example video, or the reverse.

S2CA's score factorises (METHOD.md §5): `score(text, video) = phi(text) . psi(video)` with fixed per-item vectors.
So every video's psi is computed once and stored, and a query costs one text encoding plus one matrix product.

An index folder holds:

    manifest.json           what the index is: format version, the model (name, revision, config and weight hashes,
                            dtype), the frame policy, the source of the videos, dimension, count, the shards in row
                            order, and the videos that were skipped with the reason
    videos.parquet          one row per vector, in row order: id, path, duration, frame count, fps, size, ...
    shards/shard-*.safetensors
                            psi as float16 `vectors (n, E)`; each shard also carries its rows' metadata and its
                            skipped videos in the safetensors header, so a shard is complete on its own

Shards are written atomically (temporary file, then `os.replace`), one per chunk of `shard_size` videos. The shard
folder is the truth for resuming: a new run lists the videos, drops rows whose file changed or disappeared, and
encodes only the videos no shard holds. The manifest and the table are the committed view that search reads; they
are rebuilt from the shards at the end of every run.

This module is not part of the Hub model code: the model files never import it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import json
import logging
import math
import os
import platform
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load, save_file

from ..utils import walk_once
from .evaluation import encode_texts, encode_videos


logger = logging.getLogger(__name__)

INDEX_FORMAT = "s2ca-video-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TABLE_FILE = "videos.parquet"
SHARDS_DIR = "shards"

# Extensions PyAV/FFmpeg commonly decode; compared case-insensitively. Other files in the folder are ignored.
VIDEO_EXTENSIONS = (
    ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ogv", ".ts",
    ".webm", ".wmv",
)  # fmt: skip

# Config keys that do not change the vectors (bookkeeping, output switches, the load dtype, which is recorded on
# its own): left out of the config hash so that re-saving a checkpoint with another transformers does not refuse it.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "auto_map",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "use_cache",
    }
)

# The video processor fields that decide which frames are read and how their pixels are made.
_FRAME_POLICY_KEYS = (
    "max_frames",
    "sample_fps",
    "slice_framepos",
    "frame_sampling",
    "size",
    "crop_size",
    "do_resize",
    "do_center_crop",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


class VideoIndexError(ValueError):
    """The index folder, its source of videos or a request against it is not usable; the message says why."""


class ModelMismatchError(VideoIndexError):
    """The model is not the one the index was built with (dimension, config hash or weights)."""


class EmptyCollectionError(VideoIndexError):
    """The source of videos holds no video file."""


# --------------------------------------------------------------------------------------------------------------
# The videos to index
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# What identifies a model, a frame policy, an index
# --------------------------------------------------------------------------------------------------------------


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_volatile(v) for k, v in value.items() if k not in _VOLATILE_CONFIG_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip_volatile(v) for v in value]
    return value


def config_hash(config) -> str:
    """sha256 of the model config without bookkeeping keys: equal configs give equal vectors for equal weights."""
    return _sha256_json(_strip_volatile(config.to_dict()))


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer of the state dict (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(model, name_or_path: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """What the manifest records about the model; `config_sha256`, `weights_sha256` and `dimension` must match
    for a model to search the index."""
    config = model.config
    name_or_path = name_or_path or getattr(config, "_name_or_path", None) or None
    if name_or_path and os.path.isdir(name_or_path):
        name_or_path = os.path.abspath(name_or_path)
    return {
        "name_or_path": name_or_path,
        "revision": revision or getattr(config, "_commit_hash", None),
        "class": type(model).__name__,
        "config_sha256": config_hash(config),
        "weights_sha256": weights_hash(model),
        "dimension": int(config.embedding_dim),
    }


def frame_policy(processor) -> dict[str, Any]:
    """The video processor's frame sampling and pixel settings, JSON-ready."""
    video_processor = getattr(processor, "video_processor", processor)
    fields = video_processor.to_dict()
    policy = {key: fields[key] for key in _FRAME_POLICY_KEYS if key in fields}
    return json.loads(json.dumps(policy, default=lambda v: int(v) if hasattr(v, "__int__") else str(v)))


def text_settings(processor) -> dict[str, Any]:
    """What turns a query into phi besides the weights: the tokenizer's vocabulary (and merges) and the processor's
    text settings. The manifest records them, so that a search with another tokenizer or `max_text_length`, whose
    queries would rank differently, is refused."""
    tokenizer = getattr(processor, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)  # vocabulary, merges, normaliser: the whole pipeline
    if backend is not None:
        described = hashlib.sha256(backend.to_str().encode()).hexdigest()
    else:
        described = _sha256_json(sorted(tokenizer.get_vocab().items()) if tokenizer is not None else [])
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "tokenizer_sha256": described,
        "max_text_length": getattr(processor, "max_text_length", None),
    }


def check_text_side(manifest: dict[str, Any], processor, what: str = "this index") -> None:
    recorded = manifest.get("text")
    if recorded is None or processor is None:  # an index built before text settings were recorded
        return
    given = text_settings(processor)
    different = [key for key in recorded if recorded[key] != given.get(key)]
    if different:
        details = ", ".join(f"{key} {given.get(key)!r} instead of {recorded[key]!r}" for key in different)
        raise ModelMismatchError(
            f"The processor's text side differs from the one {what} was built with ({details}): its queries would "
            "rank differently. Use the processor saved with the model, or build a new index."
        )


def check_model(manifest: dict[str, Any], fingerprint: dict[str, Any], what: str = "this index") -> None:
    """Refuses a model whose vectors are not comparable with the index's: another dimension, config or weights."""
    expected = manifest["model"]
    source = expected.get("name_or_path") or "an unnamed model"
    given = fingerprint.get("name_or_path") or "the given model"
    if fingerprint["dimension"] != expected["dimension"]:
        raise ModelMismatchError(
            f"{given} gives {fingerprint['dimension']}-dimensional vectors but {what} holds "
            f"{expected['dimension']}-dimensional ones from {source}: build a new index with this model."
        )
    if fingerprint["config_sha256"] != expected["config_sha256"]:
        raise ModelMismatchError(
            f"The config of {given} (hash {fingerprint['config_sha256'][:12]}) is not the config {what} was built "
            f"with ({source}, hash {expected['config_sha256'][:12]}): its vectors would not be comparable. Use "
            "that model, or build a new index with this one."
        )
    if fingerprint["weights_sha256"] != expected["weights_sha256"]:
        raise ModelMismatchError(
            f"The weights of {given} (hash {fingerprint['weights_sha256'][:12]}) are not those {what} was built "
            f"with ({source}, hash {expected['weights_sha256'][:12]}): same architecture, different checkpoint. "
            "Use that checkpoint, or build a new index with this one."
        )


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
        model = model.to(_DTYPES[dtype])
    return model, processor, fingerprint


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------------------------
# Decoding: one item to model inputs, in DataLoader workers when asked
# --------------------------------------------------------------------------------------------------------------


def decode_for_index(processor, path: str, start: float | None = None, end: float | None = None):
    """Model inputs for one video file, `(1, F, 3, H, W)` pixels and `(1, F)` frame mask, and its metadata.

    The frames are picked by the processor's own policy (`sample_frames`; with a time window, the same policy cut
    to the window), decoded with PyAV, and passed to the processor as frames that are already sampled, so the
    pixels are exactly those of `processor(videos=[path])`. Raises `FileNotFoundError`/`ValueError` naming the file.
    """
    from s2ca_hf.video_processing_s2ca import decode_video_frames, select_frame_indices

    video_processor = processor.video_processor
    if start is None and end is None:
        sample = video_processor.sample_frames
    else:

        def sample(metadata, **kwargs):
            return select_frame_indices(
                metadata.total_num_frames,
                metadata.fps,
                max_frames=video_processor.max_frames,
                sample_fps=video_processor.sample_fps,
                slice_framepos=video_processor.slice_framepos,
                frame_sampling=video_processor.frame_sampling,
                start_time=start,
                end_time=end,
            )

    frames, metadata = decode_video_frames(path, sample)
    try:
        inputs = processor(videos=[frames], return_tensors="pt")
    except Exception as error:  # a frame size or layout the image pipeline rejects: skip this video, name it
        raise ValueError(f"Could not process the frames of {path}: {error}") from error
    info = {
        "duration": None if metadata.duration is None else float(metadata.duration),
        "num_frames": int(metadata.total_num_frames),
        "fps": None if metadata.fps is None else float(metadata.fps),
        "width": None if metadata.width is None else int(metadata.width),
        "height": None if metadata.height is None else int(metadata.height),
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
# Shards
# --------------------------------------------------------------------------------------------------------------


def _file_mode() -> int:
    """rw for everyone the umask allows (0644 under the usual 022), for every file of an index alike: safetensors
    writes 0600 files, and a shared index whose shards its readers cannot open is no use."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, _file_mode())
    os.replace(tmp, final)


def _shard_name(rows: Sequence[dict], skipped: Sequence[dict]) -> str:
    # Named by content (ids and file states), so every process and every run derives the same name for the same
    # work, and a new chunk never overwrites a shard another run completed.
    keys = [(r["id"], r.get("size_bytes"), r.get("mtime_ns")) for r in rows]
    keys += [("skipped", s["id"], s.get("size_bytes"), s.get("mtime_ns")) for s in skipped]
    return f"shard-{_sha256_json(keys)[:20]}.safetensors"


def _write_shard(folder: str, vectors: torch.Tensor, rows: list[dict], skipped: list[dict], settings: dict) -> str:
    """Writes one shard atomically and returns its file name. `vectors` are stored as float16."""
    if vectors.shape[0] != len(rows):
        raise RuntimeError(f"{vectors.shape[0]} vectors for {len(rows)} rows")
    vectors = vectors.to(torch.float16).contiguous()
    if not torch.isfinite(vectors).all():  # float16 tops out at 65504; psi is normalised and far below that
        bad = [rows[i]["path"] for i in torch.nonzero(~torch.isfinite(vectors).all(1)).flatten().tolist()]
        raise RuntimeError(f"Non-finite video vectors in float16 for {bad[:5]}: the model's outputs overflow.")
    name = _shard_name(rows, skipped)
    final = os.path.join(folder, name)
    tmp = f"{final}.{os.getpid()}.tmp"
    metadata = {
        "format": INDEX_FORMAT,
        "settings": json.dumps(settings, sort_keys=True),
        "rows": json.dumps(rows),
        "skipped": json.dumps(skipped),
    }
    save_file({"vectors": vectors}, tmp, metadata=metadata)
    _fsync_replace(tmp, final)
    return name


def _read_shard_header(path: str) -> dict[str, Any]:
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
        shape = handle.get_slice("vectors").get_shape()
    if metadata.get("format") != INDEX_FORMAT:
        raise VideoIndexError(f"{path} is not a shard of an S2CA video index.")
    return {
        "settings": json.loads(metadata["settings"]),
        "rows": json.loads(metadata["rows"]),
        "skipped": json.loads(metadata["skipped"]),
        "shape": tuple(shape),
    }


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_shard_vectors(path: str, sha256: str | None = None) -> torch.Tensor:
    """A shard's vectors, checked: its bytes against the manifest's checksum (when it has one), then readable and
    finite. Every failure names the file: a flipped byte must never turn into a wrong ranking."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise VideoIndexError(f"Shard {path} cannot be read ({error}); run s2ca-index again to repair.") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise VideoIndexError(
            f"Shard {path} does not match the checksum in the manifest (changed or corrupt): delete it and run "
            "s2ca-index again to re-encode its videos."
        )
    try:
        vectors = load(data)["vectors"]
    except Exception as error:  # truncated or not a safetensors file
        raise VideoIndexError(f"Shard {path} cannot be read ({error}): delete it and run s2ca-index again.") from None
    if not torch.isfinite(vectors).all():
        raise VideoIndexError(f"Shard {path} holds non-finite vectors: delete it and run s2ca-index again.")
    return vectors


def _settings_differences(old: dict, new: dict) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


# --------------------------------------------------------------------------------------------------------------
# Building an index
# --------------------------------------------------------------------------------------------------------------


def _file_state(path: str) -> tuple[int | None, int | None]:
    try:
        stat = os.stat(path)
    except OSError:
        return None, None
    return int(stat.st_size), int(stat.st_mtime_ns)


def _scan_shards(shard_dir: str) -> dict[str, dict]:
    headers = {}
    for name in sorted(os.listdir(shard_dir)):
        if name.endswith(".safetensors"):
            try:
                headers[name] = _read_shard_header(os.path.join(shard_dir, name))
            except VideoIndexError:
                raise
            except Exception as error:  # a shard is written atomically: an unreadable one was damaged afterwards
                raise VideoIndexError(
                    f"Shard {os.path.join(shard_dir, name)} cannot be read ({error}); delete it and run again to "
                    "re-encode its videos."
                ) from error
    return headers


def _prune_shards(shard_dir: str, headers: dict[str, dict], current: dict[str, dict]) -> tuple[dict[str, dict], int]:
    """Drops from the shards the rows and skipped entries whose video is gone from the source or whose file changed
    since (size or modification time), and duplicates. Affected shards are rewritten under their new content name,
    then the old file is removed. Returns the new headers and the number of dropped entries."""
    seen: set[str] = set()
    new_headers, dropped = {}, 0
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
        old_path = os.path.join(shard_dir, name)
        if kept_rows or kept_skipped:
            vectors = _load_shard_vectors(old_path)[kept_rows]
            rows = [header["rows"][i] for i in kept_rows]
            new_name = _write_shard(shard_dir, vectors, rows, kept_skipped, header["settings"])
            new_headers[new_name] = {**header, "rows": rows, "skipped": kept_skipped, "shape": tuple(vectors.shape)}
        if not (kept_rows or kept_skipped) or new_name != name:
            os.remove(old_path)
    return new_headers, dropped


# The metadata table, one row per vector in row order. `id` is unique; `path` is absolute; duration, frame count and
# fps come from the container (None where it does not say); `sampled_frames` is how many frames were encoded;
# `start`/`end` the time window of a corpus clip; size and modification time are how a changed file is detected.
_TABLE_COLUMNS = (
    ("id", "string"), ("path", "string"), ("duration", "float64"), ("num_frames", "int64"), ("fps", "float64"),
    ("width", "int64"), ("height", "int64"), ("sampled_frames", "int64"), ("start", "float64"), ("end", "float64"),
    ("size_bytes", "int64"), ("mtime_ns", "int64"), ("shard", "string"), ("shard_row", "int64"),
)  # fmt: skip


def _commit(out: str, headers: dict[str, dict], settings: dict, extra: dict) -> dict[str, Any]:
    """Writes the table and the manifest from the shards (table first; both atomically), with each shard's sha256,
    after checking those the previous manifest recorded. Returns the manifest."""
    previous = {}
    if os.path.isfile(os.path.join(out, MANIFEST_FILE)):
        previous = {
            os.path.basename(shard["file"]): shard["sha256"]
            for shard in read_manifest(out).get("shards", [])
            if "sha256" in shard
        }
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(headers)
    content_id = _sha256_json(names)[:32]
    columns: dict[str, list] = {name: [] for name, _ in _TABLE_COLUMNS}
    shards, skipped = [], []
    for name in names:
        header = headers[name]
        for position, row in enumerate(header["rows"]):
            for key in columns:
                columns[key].append(row.get(key))
            columns["shard"][-1], columns["shard_row"][-1] = name, position
        checksum = _file_sha256(os.path.join(out, SHARDS_DIR, name))
        if previous.get(name, checksum) != checksum:  # resume: a shard the last commit recorded has changed
            raise VideoIndexError(
                f"Shard {os.path.join(out, SHARDS_DIR, name)} does not match the checksum in the manifest (changed "
                "or corrupt): delete it and run s2ca-index again to re-encode its videos."
            )
        shards.append({"file": f"{SHARDS_DIR}/{name}", "count": len(header["rows"]), "sha256": checksum})
        skipped.extend(header["skipped"])
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    schema = pa.schema(
        [(name, types[kind]) for name, kind in _TABLE_COLUMNS], metadata={"s2ca_content_id": content_id}
    )
    table = pa.table(columns, schema=schema)
    table_tmp = os.path.join(out, f"{TABLE_FILE}.{os.getpid()}.tmp")
    pq.write_table(table, table_tmp)
    _fsync_replace(table_tmp, os.path.join(out, TABLE_FILE))

    skipped.sort(key=lambda entry: entry["id"])
    manifest = {
        "format": INDEX_FORMAT,
        "format_version": FORMAT_VERSION,
        "content_id": content_id,
        "count": table.num_rows,
        "dimension": settings["model"]["dimension"],
        "dtype": "float16",
        "model": settings["model"],
        "encoding_dtype": settings["encoding_dtype"],
        "frame_policy": settings["frame_policy"],
        "source": settings["source"],
        "shards": shards,
        "skipped": [{"id": s["id"], "path": s["path"], "reason": s["reason"]} for s in skipped],
        **extra,
    }
    manifest_path = os.path.join(out, MANIFEST_FILE)
    tmp = f"{manifest_path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
    _fsync_replace(tmp, manifest_path)
    return manifest


def _software_versions() -> dict[str, str]:
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
            with another model, frame policy or source).

    Raises:
        EmptyCollectionError: the source holds no video.
        VideoIndexError: `out` holds an index built with other settings (and `overwrite` is False).
    """
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
    }
    shard_dir = os.path.join(out, SHARDS_DIR)

    # The main process repairs the folder while the others wait; the checks run on every process (they only read,
    # so all raise alike), because an error on the main process alone would leave the others at a barrier.
    if overwrite:
        if is_main and os.path.isdir(out):
            _clear_index(out)
        barrier()
    if is_main:
        os.makedirs(shard_dir, exist_ok=True)
        for name in os.listdir(shard_dir):  # leftovers of an interrupted write; complete shards are kept
            if name.endswith(".tmp"):
                os.remove(os.path.join(shard_dir, name))
    barrier()
    _check_resumable(out, shard_dir, settings)

    current = {}
    for item in items:
        size, mtime = _file_state(item.path)
        current[item.id] = {"size_bytes": size, "mtime_ns": mtime}
    headers = _scan_shards(shard_dir)
    barrier()
    if is_main:
        headers, dropped = _prune_shards(shard_dir, headers, current)
        if dropped:
            logger.info("%d indexed videos were removed or changed since the last run; they are re-encoded.", dropped)
    barrier()
    headers = _scan_shards(shard_dir)
    done = {row["id"] for header in headers.values() for row in header["rows"]}
    done |= {entry["id"] for header in headers.values() for entry in header["skipped"]}
    pending = [item for item in items if item.id not in done]
    chunks = [pending[start : start + shard_size] for start in range(0, len(pending), shard_size)]
    mine = chunks[rank::world]
    if is_main:
        logger.info(
            "%s: %d videos, %d already indexed, %d to encode in %d shards over %d process(es).",
            out,
            len(items),
            len(items) - len(pending),
            len(pending),
            len(chunks),
            world,
        )

    if mine:
        _encode_chunks(model, processor, mine, current, shard_dir, settings, batch_size, num_workers, progress, rank)
    barrier()

    manifest = None
    if is_main:
        headers = _scan_shards(shard_dir)
        extra = {
            "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "software": _software_versions(),
            "text": text_settings(processor),
        }
        manifest = _commit(out, headers, settings, extra)
        if manifest["count"] == 0:
            logger.warning("No video of %s could be decoded: the index is empty (see `skipped` in the manifest).", out)
    barrier()
    if manifest is None:
        manifest = read_manifest(out)
    return manifest


def _clear_index(out: str) -> None:
    if not os.path.exists(os.path.join(out, MANIFEST_FILE)) and not os.path.isdir(os.path.join(out, SHARDS_DIR)):
        return
    shard_dir = os.path.join(out, SHARDS_DIR)
    if os.path.isdir(shard_dir):
        for name in os.listdir(shard_dir):
            # Only the index's own shards: the name alone could be any user's file in a folder that is no index.
            if (
                name.startswith("shard-")
                and name.endswith(".safetensors")
                and _is_index_shard(os.path.join(shard_dir, name))
            ):
                os.remove(os.path.join(shard_dir, name))
    for name in (MANIFEST_FILE, TABLE_FILE):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))


def _is_index_shard(path: str) -> bool:
    try:
        with safe_open(path, framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == INDEX_FORMAT
    except Exception:  # not a safetensors file, or unreadable: not ours to delete
        return False


def _check_resumable(out: str, shard_dir: str, settings: dict) -> None:
    """Refuses to add to an index built with another model, frame policy, dtype or source."""
    previous = []
    manifest_path = os.path.join(out, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        manifest = read_manifest(out)
        previous.append(("the manifest", {key: manifest.get(key) for key in settings}))
    for name, header in _scan_shards(shard_dir).items():
        previous.append((f"shard {name}", header["settings"]))
        break  # every shard of a valid index has the same settings; the first one stands for the rest
    for where, old in previous:
        differences = _settings_differences(_comparable(old), _comparable(settings))
        if differences:
            raise VideoIndexError(
                f"{out} already holds an index built with other settings ({', '.join(differences)} differ, "
                f"according to {where}). Use another --out, or --overwrite to rebuild it."
            )


def _comparable(settings: dict) -> dict:
    # The model's name may change (a moved folder, a Hub id for a local copy); its hashes identify it.
    model = {k: v for k, v in (settings.get("model") or {}).items() if k not in ("name_or_path", "revision")}
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
                _write_shard(shard_dir, stacked, rows, skipped, settings)
                vectors, rows, skipped = [], [], []
                chunk_index += 1


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    manifest_path = os.path.join(os.fspath(path), MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        raise VideoIndexError(f"No video index at {path}: {manifest_path} does not exist (build one with s2ca-index).")
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (ValueError, OSError) as error:  # truncated, not JSON, not UTF-8
        raise VideoIndexError(f"{manifest_path} cannot be read ({error}); run s2ca-index again to repair.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT:
        raise VideoIndexError(f"{manifest_path} is not the manifest of an S2CA video index.")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise VideoIndexError(
            f"{path} was written by a newer s2ca-hf (index format {manifest['format_version']}); upgrade s2ca-hf."
        )
    return manifest


# --------------------------------------------------------------------------------------------------------------
# Exact search
# --------------------------------------------------------------------------------------------------------------


def _merge_topk(
    best: tuple[torch.Tensor, torch.Tensor] | None, scores: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if best is not None:
        scores, indices = torch.cat([best[0], scores], 1), torch.cat([best[1], indices], 1)
    top, position = scores.topk(min(k, scores.shape[1]), dim=1)
    return top, indices.gather(1, position)


def _sort_hits(scores: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Best score first; equal scores by row number, so that the order does not depend on how rows were chunked.
    order = torch.argsort(indices, dim=1, stable=True)
    scores, indices = scores.gather(1, order), indices.gather(1, order)
    order = torch.argsort(-scores, dim=1, stable=True)
    return scores.gather(1, order), indices.gather(1, order)


@torch.inference_mode()
def exact_search(
    queries: torch.Tensor,
    vectors: torch.Tensor | Iterable[torch.Tensor],
    k: int = 10,
    chunk_size: int = 65536,
    query_batch_size: int = 1024,
    device: str | torch.device | None = None,
    half_products: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k rows of `queries @ vectors.T` by chunked matrix products: `(Q, k)` float32 scores and int64 rows.

    `vectors` is a `(N, E)` tensor, or a re-iterable of `(n_i, E)` chunks read one at a time (shards streamed from
    disk; iterated once per query batch), so memory is bounded by `query_batch_size x chunk_size` scores and one
    chunk, never by the index.
    Computation happens on `device` (default: the vectors' device, else the CPU).

    Scores are float32 dot products of the float32 queries with the stored vectors. Where the chunk is float16 or
    bfloat16 (on a GPU), the product runs in that dtype for speed, a margin of candidates is kept, and the final
    top-k is re-scored in float32, so the result is that of float32 arithmetic except where half precision
    reorders a near-tie across the candidate cut. On the CPU, half-precision chunks are computed in float32
    (`half_products` forces either way). Ties are ordered by row number.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if isinstance(vectors, torch.Tensor):
        device = torch.device(device) if device is not None else vectors.device
        vectors_tensor = vectors

        def chunk_iter():
            return (vectors[s : s + chunk_size] for s in range(0, vectors.shape[0], chunk_size))

    else:
        if iter(vectors) is vectors:
            raise TypeError(
                "`vectors` must be a tensor or a re-iterable of chunks (a list, a shard stream), not an iterator."
            )
        device = torch.device(device or "cpu")
        vectors_tensor = None

        def chunk_iter():
            return iter(vectors)

    queries = queries.to(device=device, dtype=torch.float32)
    if queries.dim() != 2:
        raise ValueError(f"queries must be (Q, E), got shape {tuple(queries.shape)}.")

    all_scores, all_indices = [], []
    buffer = None
    for q_start in range(0, queries.shape[0], query_batch_size):
        batch = queries[q_start : q_start + query_batch_size]
        best, offset, half_chunks = None, 0, False
        for chunk in chunk_iter():
            if chunk.shape[1] != batch.shape[1]:
                raise ValueError(f"queries have dimension {batch.shape[1]}, vectors {chunk.shape[1]}.")
            chunk = chunk.to(device, non_blocking=True)
            use_half = device.type != "cpu" if half_products is None else half_products
            if use_half and chunk.dtype in (torch.float16, torch.bfloat16):
                half_chunks = True
                scores = (chunk @ batch.to(chunk.dtype).T).T.float()
                margin = k + max(k, 16)  # candidates re-scored in float32 below
            else:
                if chunk.dtype != torch.float32:
                    # copy_ into a reused buffer converts several times faster on the CPU than `.float()`.
                    if buffer is None or buffer.shape[0] < chunk.shape[0]:
                        buffer = torch.empty(chunk.shape, dtype=torch.float32, device=device)
                    chunk = buffer[: chunk.shape[0]].copy_(chunk)
                # (chunk @ batch.T).T: MKL picks a faster kernel for a tall left operand (measured 2-3x for Q <= 64).
                scores = (chunk @ batch.T).T
                margin = k
            rows = torch.arange(offset, offset + chunk.shape[0], device=device).expand(batch.shape[0], -1)
            top, position = scores.topk(min(margin, scores.shape[1]), dim=1)
            best = _merge_topk(best, top, rows.gather(1, position), margin)
            offset += chunk.shape[0]
        if best is None:
            raise ValueError("No vector to search.")
        scores, indices = best
        if half_chunks:
            scores = _rescore(batch, indices, vectors_tensor, chunk_iter, device)
            scores, indices = _merge_topk(None, scores, indices, k)
        all_scores.append(scores[:, :k])
        all_indices.append(indices[:, :k])
    scores, indices = _sort_hits(torch.cat(all_scores), torch.cat(all_indices))
    return scores.cpu(), indices.cpu()


def _rescore(batch, indices, vectors_tensor, chunk_iter, device) -> torch.Tensor:
    """float32 scores of the candidate rows."""
    if vectors_tensor is not None:
        candidates = vectors_tensor[indices.to(vectors_tensor.device)].to(device).float()  # (Q, C, E)
        return torch.einsum("qe,qce->qc", batch, candidates)
    scores = torch.empty(indices.shape, device=device)
    offset = 0
    for chunk in chunk_iter():
        inside = (indices >= offset) & (indices < offset + chunk.shape[0])
        if inside.any():
            q, c = inside.nonzero(as_tuple=True)
            rows = chunk.to(device)[indices[q, c] - offset].float()
            scores[q, c] = (batch[q] * rows).sum(1)
        offset += chunk.shape[0]
    return scores


# --------------------------------------------------------------------------------------------------------------
# FAISS
# --------------------------------------------------------------------------------------------------------------


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError("The FAISS backend needs faiss-cpu: `pip install s2ca-hf[faiss]`.") from error
    return faiss


def build_faiss_index(
    vectors: torch.Tensor | Iterable[torch.Tensor],
    dimension: int,
    factory: str = "SQfp16",
    train_size: int = 262144,
    add_batch: int = 16384,
):
    """A FAISS inner-product index over the vectors, added chunk by chunk (float32 copies are one chunk at a time).

    The default `"SQfp16"` stores float16, as the shards do, and decodes it exactly: scores equal exact search.
    Approximate factories (`"IVF4096,SQfp16"`, `"HNSW32"`, ...) are for collections past a few million videos;
    they are trained on the first `train_size` vectors.
    """
    faiss = _import_faiss()
    index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    chunks = [vectors] if isinstance(vectors, torch.Tensor) else vectors
    pending: list[torch.Tensor] = []
    buffered = 0
    for chunk in chunks:
        for start in range(0, chunk.shape[0], add_batch):
            part = chunk[start : start + add_batch].float().cpu().numpy()
            if not index.is_trained:
                # Training needs a sample before anything is added: buffer the first vectors (bounded).
                pending.append(part)
                buffered += part.shape[0]
                if buffered >= train_size:
                    _train_and_flush(index, pending)
                    pending = []
                continue
            index.add(part)
    if pending:
        _train_and_flush(index, pending)
    return index


def _train_and_flush(index, pending: list) -> None:
    import numpy as np

    sample = np.concatenate(pending)
    if not index.is_trained:
        index.train(sample)
    index.add(sample)


def faiss_search(index, queries: torch.Tensor, k: int = 10, nprobe: int | None = None):
    """`(Q, k)` float32 scores and int64 rows from a FAISS index (ties ordered by row number, as in exact search)."""
    faiss = _import_faiss()
    if nprobe is not None:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    scores, indices = index.search(queries.detach().float().cpu().contiguous().numpy(), min(k, index.ntotal))
    scores, indices = torch.from_numpy(scores), torch.from_numpy(indices).long()
    # FAISS pads with -1 when an approximate index finds fewer than k; keep only real rows.
    if (indices < 0).any():
        scores = scores.masked_fill(indices < 0, -math.inf)
    return _sort_hits(scores, indices)


# --------------------------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SearchHit:
    rank: int
    score: float
    row: int
    id: str
    path: str
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": self.score, "id": self.id, "path": self.path, **self.metadata}


class VideoIndex:
    """A video index folder, opened for search.

    ```python
    >>> index = VideoIndex.load("my-index")                 # reads the manifest and the table
    >>> hits = index.search("a man plays guitar", k=5)       # loads the model from the manifest, encodes phi
    >>> hits[0][0].id, hits[0][0].score
    >>> index.search(phi, k=5)                               # or (Q, E) query vectors computed elsewhere
    ```

    `in_memory=True` (default) reads every shard once into `device` memory (float32 on the CPU, float16 on a GPU);
    `in_memory=False` streams the shards from disk at each search, bounding memory by one shard.
    """

    def __init__(self, path: str, manifest: dict, table, device: torch.device, in_memory: bool, chunk_size: int):
        self.path = path
        self.manifest = manifest
        self.table = table
        self.device = device
        self.in_memory = in_memory
        self.chunk_size = chunk_size
        self._vectors: torch.Tensor | None = None
        self._model = None
        self._processor = None
        self._faiss = {}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        in_memory: bool = True,
        chunk_size: int = 65536,
    ) -> VideoIndex:
        import pyarrow.parquet as pq

        path = os.path.abspath(os.fspath(path))
        manifest = read_manifest(path)
        table_path = os.path.join(path, TABLE_FILE)
        if not os.path.isfile(table_path):
            raise VideoIndexError(f"{table_path} is missing: run s2ca-index again on {path} to rebuild it.")
        table = pq.read_table(table_path)
        content_id = (table.schema.metadata or {}).get(b"s2ca_content_id", b"").decode()
        if content_id != manifest["content_id"] or table.num_rows != manifest["count"]:
            raise VideoIndexError(
                f"{path}: the table and the manifest describe different contents (an interrupted commit?); run "
                "s2ca-index again on it to repair."
            )
        for shard in manifest["shards"]:
            if not os.path.isfile(os.path.join(path, shard["file"])):
                raise VideoIndexError(f"{path}: shard {shard['file']} is missing; run s2ca-index again to repair.")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(path, manifest, table, device, in_memory, chunk_size)

    def __len__(self) -> int:
        return self.manifest["count"]

    @property
    def dimension(self) -> int:
        return self.manifest["dimension"]

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    def _storage_dtype(self) -> torch.dtype:
        # The CPU has no fast float16 matrix products (measured: 3-4x slower than float32 for query batches).
        return torch.float32 if self.device.type == "cpu" else torch.float16

    def iter_shards(self) -> Iterator[torch.Tensor]:
        """The stored float16 vectors, shard by shard, in row order."""
        for shard in self.manifest["shards"]:
            vectors = _load_shard_vectors(os.path.join(self.path, shard["file"]), shard.get("sha256"))
            if vectors.shape != (shard["count"], self.dimension):
                raise VideoIndexError(f"{self.path}: shard {shard['file']} does not hold the rows the manifest lists.")
            yield vectors

    @property
    def vectors(self) -> torch.Tensor:
        """All vectors, `(N, E)`, on the index's device (loaded once)."""
        if self._vectors is None:
            dtype = self._storage_dtype()
            vectors = torch.empty(len(self), self.dimension, dtype=dtype, device=self.device)
            offset = 0
            for chunk in self.iter_shards():
                vectors[offset : offset + chunk.shape[0]] = chunk.to(self.device, dtype)
                offset += chunk.shape[0]
            self._vectors = vectors
        return self._vectors

    def vector(self, video_id: str) -> torch.Tensor:
        """psi of one indexed video, `(E,)` float32."""
        ids = self.ids
        try:
            row = ids.index(video_id)
        except ValueError:
            raise VideoIndexError(f"No video with id {video_id!r} in {self.path}.") from None
        if self.in_memory:
            return self.vectors[row].float().cpu()
        shard = self.table.column("shard")[row].as_py()
        checksums = {os.path.basename(s["file"]): s.get("sha256") for s in self.manifest["shards"]}
        return _load_shard_vectors(os.path.join(self.path, SHARDS_DIR, shard), checksums.get(shard))[
            self.table.column("shard_row")[row].as_py()
        ].float()

    # -- the model -------------------------------------------------------------------------------------------

    def set_model(self, model, processor, fingerprint: dict[str, Any] | None = None) -> None:
        """Uses this model to encode queries, after checking it is the model the index was built with."""
        check_model(self.manifest, fingerprint or model_fingerprint(model), f"the index at {self.path}")
        check_text_side(self.manifest, processor, f"the index at {self.path}")
        self._model, self._processor = model.eval(), processor

    def load_model(self, name_or_path: str | None = None, revision: str | None = None):
        """Loads the model and processor named in the manifest (or `name_or_path`), checks them, and returns them.
        The model goes to the index's device, in the dtype the videos were encoded with."""
        recorded = self.manifest["model"]
        name = name_or_path or recorded.get("name_or_path")
        if not name:
            raise VideoIndexError(f"The manifest of {self.path} names no model: pass one (--model).")
        try:
            model, processor, fingerprint = load_model_and_processor(
                name, revision if name_or_path else (revision or recorded.get("revision"))
            )
        except VideoIndexError as error:
            if name_or_path:
                raise
            raise VideoIndexError(
                f"{error} (the model the index names; pass --model to use a copy elsewhere)"
            ) from error
        self.set_model(model, processor, fingerprint)
        self._model = model.to(self.device, _DTYPES.get(self.manifest.get("encoding_dtype"), torch.float32))
        return self._model, self._processor

    def _require_model(self):
        if self._model is None:
            self.load_model()
        return self._model, self._processor

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """phi of the texts, `(T, E)` float32, with the index's model."""
        model, processor = self._require_model()
        return encode_texts(model, processor, list(texts), progress=False)

    def encode_video(self, path: str) -> torch.Tensor:
        """psi of a video file, `(E,)` float32, decoded and sampled exactly as the indexed videos were."""
        model, processor = self._require_model()
        if frame_policy(processor) != self.manifest["frame_policy"]:
            raise ModelMismatchError(
                f"The processor's frame policy {frame_policy(processor)} is not the index's "
                f"{self.manifest['frame_policy']}: a query video would not be sampled as the indexed ones were."
            )
        pixels, frame_mask, _ = decode_for_index(processor, os.fspath(path))
        return encode_videos(model, [{"pixel_values_videos": pixels, "frame_mask": frame_mask}], progress=False)[0]

    # -- search ----------------------------------------------------------------------------------------------

    def search(
        self,
        queries: str | Sequence[str] | torch.Tensor,
        k: int = 10,
        backend: str = "exact",
        faiss_factory: str = "SQfp16",
        nprobe: int | None = None,
    ) -> list[list[SearchHit]]:
        """The top-k videos for each query, best first: a list (one per query) of `SearchHit`.

        `queries`: a text, a list of texts (encoded with the index's model), or `(Q, E)` / `(E,)` vectors. Text
        vectors give the model's retrieval score; a video's psi as the query (see `search_by_video`) compares
        video vectors with each other. `backend`: `"exact"` (chunked matrix products) or `"faiss"`.
        """
        if len(self) == 0:
            raise VideoIndexError(f"The index at {self.path} holds no video (see `skipped` in its manifest).")
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, torch.Tensor):
            vectors = queries.float().reshape(-1, queries.shape[-1])
            if vectors.shape[1] != self.dimension:
                raise ModelMismatchError(
                    f"Query vectors have dimension {vectors.shape[1]}, the index {self.dimension}: they come from "
                    "another model."
                )
        else:
            vectors = self.encode_texts(queries)
        scores, rows = self.search_vectors(vectors, k, backend, faiss_factory, nprobe)
        return self._hits(scores, rows)

    def search_vectors(
        self,
        queries: torch.Tensor,
        k: int = 10,
        backend: str = "exact",
        faiss_factory: str = "SQfp16",
        nprobe: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(Q, k)` scores and row numbers of the top-k rows for `(Q, E)` query vectors."""
        if backend == "exact":
            if self.in_memory:
                return exact_search(queries, self.vectors, k, chunk_size=self.chunk_size, device=self.device)
            return exact_search(queries, _ShardStream(self), k, device=self.device)
        if backend == "faiss":
            key = faiss_factory
            if key not in self._faiss:
                source = self.vectors if self.in_memory else self.iter_shards()
                self._faiss[key] = build_faiss_index(source, self.dimension, faiss_factory)
            return faiss_search(self._faiss[key], queries, k, nprobe)
        raise ValueError(f"backend must be 'exact' or 'faiss', got {backend!r}.")

    def search_by_video(self, video: str | os.PathLike, k: int = 10, **kwargs) -> list[SearchHit]:
        """Videos similar to an example video file: its psi against the index's psi.

        This compares video vectors with each other (`psi . psi`), not the text-video score the model was trained
        for: it finds videos whose instance feature and concept features resemble the example's.
        """
        return self.search(self.encode_video(os.fspath(video)).unsqueeze(0), k, **kwargs)[0]

    def rank_texts(self, texts: Sequence[str], video: str | os.PathLike | None = None, video_id: str | None = None):
        """The reverse direction: the texts ranked for one video (a file, or an indexed video by id), by the
        model's score `phi(text) . psi(video)`. Returns `[(rank, score, text)]`, best first."""
        if (video is None) == (video_id is None):
            raise ValueError("Give exactly one of `video` (a file) and `video_id` (an indexed video).")
        texts = list(texts)
        if not texts:
            raise VideoIndexError("No text to rank.")
        psi = self.vector(video_id) if video_id is not None else self.encode_video(os.fspath(video))
        phi = self.encode_texts(texts)
        scores, order = exact_search(psi.unsqueeze(0), phi, k=len(texts), device="cpu")
        return [(rank + 1, float(s), texts[i]) for rank, (s, i) in enumerate(zip(scores[0], order[0].tolist()))]

    def _hits(self, scores: torch.Tensor, rows: torch.Tensor) -> list[list[SearchHit]]:
        columns = ("duration", "num_frames", "fps", "start", "end")
        wanted = sorted({int(r) for r in rows.flatten().tolist() if r >= 0})
        selected = self.table.take(wanted).to_pylist() if wanted else []
        by_row = dict(zip(wanted, selected))
        results = []
        for query_scores, query_rows in zip(scores.tolist(), rows.tolist()):
            hits = []
            for score, row in zip(query_scores, query_rows):
                if row < 0:
                    continue
                record = by_row[row]
                metadata = {key: record[key] for key in columns if record.get(key) is not None}
                hits.append(SearchHit(len(hits) + 1, float(score), row, record["id"], record["path"], metadata))
            results.append(hits)
        return results


class _ShardStream:
    """Re-iterable stream of an index's shards from disk, for `exact_search` with bounded memory."""

    def __init__(self, index: VideoIndex):
        self.index = index

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.index.iter_shards()


def environment() -> dict[str, Any]:
    """Machine and software versions, for benchmark reports."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    info.update(_software_versions())
    return info


__all__ = [
    "EmptyCollectionError",
    "ModelMismatchError",
    "SearchHit",
    "VIDEO_EXTENSIONS",
    "VideoIndex",
    "VideoIndexError",
    "VideoItem",
    "build_faiss_index",
    "build_index",
    "check_model",
    "config_hash",
    "corpus_videos",
    "decode_for_index",
    "exact_search",
    "faiss_search",
    "folder_videos",
    "frame_policy",
    "load_model_and_processor",
    "model_fingerprint",
    "read_manifest",
    "resolve_videos",
    "weights_hash",
]
