"""The on-disk format of a video index: manifest, table and shards, each written atomically and checked on read.

An index folder holds:


    manifest.json           what the index is: format version, the model (name, revision, config and weight hashes,
                            dtype), the frame policy, the source of the videos, the window settings of moments
                            (`windows`: window and stride in seconds, or null), dimension, count, the shards in
                            row order, and the videos that were skipped with the reason
    videos.parquet          one row per vector, in row order: id, path, duration, frame count, fps, size, ...
    shards/shard-*.safetensors
                            psi as float16 `vectors (n, E)`; each shard also carries its rows' metadata and its
                            skipped videos in the safetensors header, so a shard is complete on its own

Shards are written atomically (temporary file, then `os.replace`), one per chunk of `shard_size` videos. The shard

Shards are written atomically (temporary file, then `os.replace`), one per chunk of `shard_size` videos. The shard
folder is the truth for resuming (`build.py`); the manifest and the table are the committed view that search reads,
rebuilt from the shards at the end of every run. The manifest records each shard's sha256, checked on every read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Collection, Sequence
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load, save_file

from ..utils import FolderLock, file_sha256, sha256_json
from .errors import VideoIndexError


INDEX_FORMAT = "s2ca-video-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
TABLE_FILE = "videos.parquet"
SHARDS_DIR = "shards"
LOCK_FILE = ".s2ca-index.lock"

# The temporary files this package writes: `<final name>.<pid>.tmp` next to the file they replace.
_TEMPORARY = re.compile(r"^(shard-[0-9a-f]{20}\.safetensors|manifest\.json|videos\.parquet)\.\d+\.tmp$")


# --------------------------------------------------------------------------------------------------------------
# One writer at a time
# --------------------------------------------------------------------------------------------------------------


class IndexLock(FolderLock):
    """An exclusive lock on an index folder for the whole of a build (`FolderLock`): a second writer waits up to
    `timeout` seconds, then stops with a message naming the holder. Readers take no lock: the table and the
    manifest are replaced atomically and checked against each other on load."""

    lock_file = LOCK_FILE
    error = VideoIndexError
    busy = (
        "{folder} is being written by another s2ca-index run ({holder}){waited}. Wait for it to finish "
        "(--lock-timeout SECONDS waits), or use another --out."
    )

    def acquire(self) -> IndexLock:
        super().acquire()
        try:
            os.chmod(self.path, file_mode())
        except PermissionError:  # another user's lock file in a shared index: locking it still works
            pass
        return self


def remove_stale_temporary_files(out: str) -> int:
    """Deletes what an interrupted write left behind: only files named as this package names its temporary files,
    in the index folder and its shard folder. Call it under `IndexLock`, which makes every such file stale (its
    writer is gone). Returns how many were deleted."""
    removed = 0
    for folder in (out, os.path.join(out, SHARDS_DIR)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if _TEMPORARY.match(name):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------------------------


def file_mode() -> int:
    """rw for everyone the umask allows (0644 under the usual 022), for every file of an index alike: safetensors
    writes 0600 files, and a shared index whose shards its readers cannot open is no use."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, file_mode())
    os.replace(tmp, final)


def _shard_name(rows: Sequence[dict], skipped: Sequence[dict]) -> str:
    # Named by content (ids and file states), so every process and every run derives the same name for the same
    # work, and a new chunk never overwrites a shard another run completed.
    keys = [(r["id"], r.get("size_bytes"), r.get("mtime_ns")) for r in rows]
    keys += [("skipped", s["id"], s.get("size_bytes"), s.get("mtime_ns")) for s in skipped]
    return f"shard-{sha256_json(keys)[:20]}.safetensors"


def write_shard(folder: str, vectors: torch.Tensor, rows: list[dict], skipped: list[dict], settings: dict) -> str:
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


def read_shard_header(path: str) -> dict[str, Any]:
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


def load_shard_vectors(path: str, sha256: str | None = None) -> torch.Tensor:
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


def settings_differences(old: dict, new: dict) -> list[str]:
    return [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def scan_shards(shard_dir: str, exclude: Collection[str] = ()) -> dict[str, dict]:
    """The headers of the shards in `shard_dir` but those named in `exclude` (shards a running build replaced)."""
    headers = {}
    for name in sorted(os.listdir(shard_dir)):
        if name.endswith(".safetensors") and name not in exclude:
            try:
                headers[name] = read_shard_header(os.path.join(shard_dir, name))
            except VideoIndexError:
                raise
            except Exception as error:  # a shard is written atomically: an unreadable one was damaged afterwards
                raise VideoIndexError(
                    f"Shard {os.path.join(shard_dir, name)} cannot be read ({error}); delete it and run again to "
                    "re-encode its videos."
                ) from error
    return headers


# --------------------------------------------------------------------------------------------------------------
# The committed view: table and manifest
# --------------------------------------------------------------------------------------------------------------


# The metadata table, one row per vector in row order. `id` is unique; `path` is absolute; duration, frame count and
# fps come from the container (None where it does not say); `sampled_frames` is how many frames were encoded;
# `start`/`end` the time window of a corpus clip or of a moment (`--window`); size and modification time are how a
# changed file is detected.
TABLE_COLUMNS = (
    ("id", "string"), ("path", "string"), ("duration", "float64"), ("num_frames", "int64"), ("fps", "float64"),
    ("width", "int64"), ("height", "int64"), ("sampled_frames", "int64"), ("start", "float64"), ("end", "float64"),
    ("size_bytes", "int64"), ("mtime_ns", "int64"), ("shard", "string"), ("shard_row", "int64"),
)  # fmt: skip


def commit_index(
    out: str, headers: dict[str, dict], settings: dict, extra: dict, written: set[str] = frozenset()
) -> dict[str, Any]:
    """Writes the table and the manifest from the shards (table first; both atomically), with each shard's sha256,
    after checking those the previous manifest recorded. `written`: the shards this run wrote (re-encoding a deleted
    shard gives its content name again, with other bytes): they replace what the previous manifest recorded.
    Returns the manifest."""
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
    content_id = sha256_json(names)[:32]
    # A folder's (or one file's) videos are stored relative to it, so that an index copied with its videos, or
    # searched with another `videos_root`, still names live files; other sources keep absolute paths.
    source = settings.get("source") or {}
    root = source.get("root") if source.get("kind") in ("folder", "file") else None
    columns: dict[str, list] = {name: [] for name, _ in TABLE_COLUMNS}
    shards, skipped = [], []
    owner: dict[str, str] = {}
    for name in names:
        header = headers[name]
        for entry in [*header["rows"], *header["skipped"]]:  # one row (or one skip) per id, or search repeats videos
            if entry["id"] in owner:
                raise VideoIndexError(
                    f"Video {entry['id']!r} is in two shards of {out}: {owner[entry['id']]} and {name}. The shard "
                    "folder was changed by hand or by another writer: delete one of them and run s2ca-index again."
                )
            owner[entry["id"]] = name
        for position, row in enumerate(header["rows"]):
            for key in columns:
                columns[key].append(row.get(key))
            columns["shard"][-1], columns["shard_row"][-1] = name, position
            columns["path"][-1] = relative_to(row["path"], root)
        checksum = file_sha256(os.path.join(out, SHARDS_DIR, name))
        if name not in written and previous.get(name, checksum) != checksum:  # a recorded shard has changed since
            raise VideoIndexError(
                f"Shard {os.path.join(out, SHARDS_DIR, name)} does not match the checksum in the manifest (changed "
                "or corrupt): delete it and run s2ca-index again to re-encode its videos."
            )
        shards.append({"file": f"{SHARDS_DIR}/{name}", "count": len(header["rows"]), "sha256": checksum})
        skipped.extend(header["skipped"])
    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    schema = pa.schema([(name, types[kind]) for name, kind in TABLE_COLUMNS], metadata={"s2ca_content_id": content_id})
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
        # Where relative paths in the table start: the source root, and the same folder seen from the index (for
        # an index moved together with its videos).
        "videos_root": root,
        "videos_root_from_index": os.path.relpath(root, out) if root else None,
        "windows": settings.get("windows"),
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


def relative_to(path: str, root: str | None) -> str:
    """`path` relative to `root` when it lies inside it, else as it is."""
    if root is None or not os.path.isabs(path):
        return path
    relative = os.path.relpath(path, root)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


def resolve_videos_root(index_path: str, manifest: dict, videos_root: str | None = None) -> str | None:
    """Where the table's relative paths start: `videos_root` when given; else the source root if it exists; else
    the same folder seen from the index (an index moved with its videos); else the recorded root (paths then name
    files that are not here, as an index of absolute paths would)."""
    if videos_root is not None:
        return os.path.abspath(os.fspath(videos_root))
    recorded = manifest.get("videos_root")
    if recorded is None or os.path.isdir(recorded):
        return recorded
    beside = manifest.get("videos_root_from_index")
    moved = os.path.normpath(os.path.join(index_path, beside)) if beside else None
    return moved if moved is not None and os.path.isdir(moved) else recorded


def write_vector_index(out: str, chunks, settings: dict, extra: dict | None = None) -> dict[str, Any]:
    """Writes an index folder from vectors made elsewhere (an import, or the generated collections of the search
    benchmark and tests): every `(rows, vectors)` of `chunks` becomes one shard, `rows` a list of dicts with at least
    `id` and `path`, `vectors` `(len(rows), E)`. `settings` as `build_index` records them (`model` with its
    `dimension`, `encoding_dtype`, `frame_policy`, `source`, `windows`). Returns the manifest."""
    out = os.path.abspath(out)
    if os.path.exists(os.path.join(out, MANIFEST_FILE)):
        raise VideoIndexError(f"{out} already holds an index: give a new folder.")
    shard_dir = os.path.join(out, SHARDS_DIR)
    os.makedirs(shard_dir, exist_ok=True)
    for rows, vectors in chunks:
        write_shard(shard_dir, vectors, list(rows), [], settings)
    return commit_index(out, scan_shards(shard_dir), settings, extra or {})


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


def clear_index(out: str) -> None:
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
    first_stage = os.path.join(out, "first_stage")  # two_stage.FIRST_STAGE_DIR: built from the shards removed above
    if os.path.isfile(os.path.join(first_stage, "settings.json")):
        shutil.rmtree(first_stage)


def _is_index_shard(path: str) -> bool:
    try:
        with safe_open(path, framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == INDEX_FORMAT
    except Exception:  # not a safetensors file, or unreadable: not ours to delete
        return False
