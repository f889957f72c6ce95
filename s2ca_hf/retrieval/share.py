"""Sharing an index: an index folder as a `datasets.Dataset`, and as a dataset repository on the Hub.

The dataset has one row per indexed video, in the index's row order: the table's columns (`id`, `path`, duration,
frame count, fps, size, `start`/`end` where the video is a clip or a window, `shard`, ...) and `psi`, the stored
float16 vector (a fixed-length list of `float16`, bit for bit the shard's). What makes it an index besides the rows
travels with it as JSON (`SHARE_FORMAT`): the manifest (model fingerprint, encoding dtype, frame policy, source,
text side), each shard's row count and skipped videos, and sha256 checksums of the rows and of the vectors. In memory
it is `dataset.info.description`; on the Hub it is the file `s2ca_index.json` next to `data/*.parquet`, one parquet
file per shard.

`dataset_to_folder` writes a normal index folder (the same shards, so the same `content_id` and row order), which
`VideoIndex.load` opens and searches as any other (`VideoIndex.from_dataset` and `VideoIndex.from_hub` do both). It
refuses a dataset whose columns are missing or changed (checksums), and, when given the model that will search it,
one made with another model (`check_model`, which names both). Paths are those of the machine that built the index:
search returns them as they were recorded.

This module is not part of the Hub model code: the model files never import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from ..utils import sha256_json
from .errors import VideoIndexError
from .fingerprints import check_model, model_fingerprint
from .store import (
    INDEX_FORMAT,
    MANIFEST_FILE,
    SHARDS_DIR,
    TABLE_COLUMNS,
    IndexLock,
    clear_index,
    commit_index,
    load_shard_vectors,
    read_manifest,
    read_shard_header,
    write_shard,
)


SHARE_FORMAT = "s2ca-video-index-dataset"
SHARE_VERSION = 2  # 2: the manifest has its own checksum
SHARE_FILE = "s2ca_index.json"  # the share metadata, in a Hub repository
DATA_DIR = "data"
PSI_COLUMN = "psi"
# The columns of the dataset: the table's, less the row's position in its shard (the shard's order gives it).
ROW_COLUMNS = tuple(name for name, _ in TABLE_COLUMNS if name != "shard_row")
# What the manifest holds that `commit_index` recomputes from the shards (or that describes the folder, not the index).
_COMMITTED_KEYS = ("format", "format_version", "content_id", "count", "dimension", "dtype", "shards", "skipped")
_SETTINGS_KEYS = ("model", "encoding_dtype", "frame_policy", "source")


def _digests() -> tuple[Any, Any]:
    return hashlib.sha256(), hashlib.sha256()


def _update(rows_digest, psi_digest, rows: list[dict], vectors: torch.Tensor) -> None:
    for row in rows:
        rows_digest.update((json.dumps([row.get(name) for name in ROW_COLUMNS], default=str) + "\n").encode())
    psi_digest.update(vectors.to(torch.float16).contiguous().view(torch.uint8).numpy().tobytes())


def _shard_parts(index) -> Iterator[tuple[dict, list[dict], torch.Tensor, dict]]:
    """(manifest shard entry, table rows, float16 vectors, shard header) for every shard, in row order."""
    table_rows = index.table.to_pylist()
    offset = 0
    for shard in index.manifest["shards"]:
        path = os.path.join(index.path, shard["file"])
        vectors = load_shard_vectors(path, shard.get("sha256"))
        rows = table_rows[offset : offset + shard["count"]]
        if vectors.shape != (shard["count"], index.dimension) or any(
            row["shard"] != os.path.basename(shard["file"]) for row in rows
        ):
            raise VideoIndexError(f"{index.path}: shard {shard['file']} does not hold the rows the manifest lists.")
        offset += shard["count"]
        yield shard, rows, vectors.to(torch.float16), read_shard_header(path)


def _arrow_table(rows: list[dict], vectors: torch.Tensor, dimension: int):
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    kinds = dict(TABLE_COLUMNS)
    arrays = {name: pa.array([row.get(name) for row in rows], type=types[kinds[name]]) for name in ROW_COLUMNS}
    flat = pa.array(vectors.contiguous().view(torch.uint8).numpy().view("float16").reshape(-1), type=pa.float16())
    arrays[PSI_COLUMN] = pa.FixedSizeListArray.from_arrays(flat, dimension)
    return pa.table(arrays)


def _metadata(index, shards: list[dict], rows_sha256: str, psi_sha256: str) -> dict[str, Any]:
    manifest = {key: value for key, value in index.manifest.items() if key not in ("shards",)}
    return {
        "format": SHARE_FORMAT,
        "version": SHARE_VERSION,
        "manifest": manifest,
        # The model fingerprint and the settings decide which model search loads: checked like the rows.
        "manifest_sha256": sha256_json(manifest),
        "shards": shards,
        "rows_sha256": rows_sha256,
        "psi_sha256": psi_sha256,
    }


def _shard_entry(shard: dict, header: dict) -> dict:
    return {"name": os.path.basename(shard["file"]), "count": shard["count"], "skipped": header["skipped"]}


def to_dataset(index):
    """The index as a `datasets.Dataset`, its share metadata (JSON) in `info.description`. Holds every vector in
    memory: for a large index, `save_hub_folder` writes one parquet file per shard instead."""
    import datasets
    import pyarrow as pa

    rows_digest, psi_digest = _digests()
    tables, shards = [], []
    for shard, rows, vectors, header in _shard_parts(index):
        _update(rows_digest, psi_digest, rows, vectors)
        tables.append(_arrow_table(rows, vectors, index.dimension))
        shards.append(_shard_entry(shard, header))
    table = pa.concat_tables(tables) if tables else _arrow_table([], torch.empty(0, index.dimension), index.dimension)
    metadata = _metadata(index, shards, rows_digest.hexdigest(), psi_digest.hexdigest())
    info = datasets.DatasetInfo(description=json.dumps(metadata))
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=info)


def save_hub_folder(index, folder: str | os.PathLike) -> str:
    """Writes what `push_to_hub` uploads: `data/shard-NNNNN.parquet` (one per shard with rows), `s2ca_index.json`, a
    dataset card. `folder` must not exist or be empty. Returns its path."""
    import pyarrow.parquet as pq

    folder = os.fspath(folder)
    if os.path.isdir(folder) and os.listdir(folder):
        raise VideoIndexError(f"{folder} is not empty: give a new folder to write the dataset repository into.")
    os.makedirs(os.path.join(folder, DATA_DIR), exist_ok=True)
    rows_digest, psi_digest = _digests()
    shards = []
    parts = 0
    for shard, rows, vectors, header in _shard_parts(index):
        _update(rows_digest, psi_digest, rows, vectors)
        if rows:  # a shard of skipped videos only has no rows (and `datasets` cannot read an empty parquet file)
            table = _arrow_table(rows, vectors, index.dimension)
            pq.write_table(table, os.path.join(folder, DATA_DIR, _part(parts)))
            parts += 1
        shards.append(_shard_entry(shard, header))
    if not parts:  # an empty index still gives a loadable dataset with the right columns
        empty = _arrow_table([], torch.empty(0, index.dimension), index.dimension)
        pq.write_table(empty, os.path.join(folder, DATA_DIR, _part(0)))
    metadata = _metadata(index, shards, rows_digest.hexdigest(), psi_digest.hexdigest())
    with open(os.path.join(folder, SHARE_FILE), "w") as handle:
        json.dump(metadata, handle, indent=2)
        handle.write("\n")
    with open(os.path.join(folder, "README.md"), "w") as handle:
        handle.write(_card(metadata))
    return folder


def _part(number: int) -> str:
    return f"shard-{number:05d}.parquet"


def _card(metadata: dict) -> str:
    manifest = metadata["manifest"]
    model = manifest["model"]
    return (
        "---\n"
        "configs:\n"
        "- config_name: default\n"
        "  data_files:\n"
        "  - split: train\n"
        f"    path: {DATA_DIR}/*.parquet\n"
        "tags:\n"
        "- s2ca\n"
        "- video-retrieval\n"
        "---\n\n"
        "# S2CA video index\n\n"
        f"{manifest['count']} videos encoded by `{model.get('name_or_path')}` (weights sha256 "
        f"`{model['weights_sha256'][:12]}`): one row per video with its psi vector ({manifest['dimension']} float16 "
        f"values). `{SHARE_FILE}` holds the index manifest and checksums.\n\n"
        "```python\n"
        "from s2ca_hf.retrieval.index import VideoIndex\n\n"
        'index = VideoIndex.from_hub("REPO_ID", "my_index")   # a normal index folder\n'
        'index.search("a man plays guitar", k=5)\n'
        "```\n"
    )


def push_to_hub(
    index,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    **upload_kwargs,
):
    """Uploads the index to the dataset repository `repo_id` (created if needed) in one commit; returns the
    `upload_folder` result. `upload_kwargs` go to `HfApi.upload_folder` (`revision`, `create_pr`, ...)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="s2ca-share-") as tmp:
        folder = save_hub_folder(index, os.path.join(tmp, "repo"))
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        upload_kwargs.setdefault("commit_message", f"Upload S2CA video index ({len(index)} videos)")
        return api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder, **upload_kwargs)


def load_hub_folder(folder: str | os.PathLike):
    """The dataset of a folder `save_hub_folder` wrote (or a download of its repository), metadata attached."""
    import datasets

    folder = os.fspath(folder)
    share_path = os.path.join(folder, SHARE_FILE)
    if not os.path.isfile(share_path):
        raise VideoIndexError(f"{folder} holds no {SHARE_FILE}: it is not an exported S2CA video index.")
    try:
        with open(share_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as error:
        raise VideoIndexError(f"{share_path} cannot be read ({error}).") from None
    data_dir = os.path.join(folder, DATA_DIR)
    files = sorted(
        os.path.join(data_dir, name) for name in os.listdir(data_dir) if name.endswith(".parquet")
    ) if os.path.isdir(data_dir) else []  # fmt: skip
    if not files:
        raise VideoIndexError(f"{folder} holds no {DATA_DIR}/*.parquet: the index's rows are missing.")
    import pyarrow.parquet as pq

    filled = [path for path in files if pq.ParquetFile(path).metadata.num_rows > 0]
    if filled:
        dataset = datasets.Dataset.from_parquet(filled, keep_in_memory=False)
    else:  # an index of no video: `datasets` cannot read an empty parquet file
        dataset = datasets.Dataset(datasets.table.InMemoryTable(pq.read_table(files[0])))
    dataset.info.description = json.dumps(metadata)
    return dataset


def hub_to_folder(
    repo_id: str,
    out: str | os.PathLike,
    revision: str | None = None,
    token: str | None = None,
    model=None,
    overwrite: bool = False,
    cache_dir: str | None = None,
    endpoint: str | None = None,
):
    """Downloads the dataset repository `repo_id`, writes it as an index folder at `out` (`dataset_to_folder`) and
    returns the folder's path."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id, repo_type="dataset", revision=revision, token=token, cache_dir=cache_dir, endpoint=endpoint
    )
    return dataset_to_folder(load_hub_folder(folder), out, model=model, overwrite=overwrite, source=repo_id)


def _share_metadata(dataset, source: str) -> dict[str, Any]:
    description = getattr(dataset.info, "description", None) or ""
    try:
        metadata = json.loads(description)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != SHARE_FORMAT:
        raise VideoIndexError(
            f"{source} carries no S2CA index metadata (its info.description is not the JSON `to_dataset` writes). "
            f"A dataset loaded with `datasets.load_dataset` loses it: use VideoIndex.from_hub, which reads "
            f"{SHARE_FILE} from the repository."
        )
    if metadata.get("version", 0) > SHARE_VERSION:
        raise VideoIndexError(f"{source} was exported by a newer s2ca-hf (format {metadata['version']}); upgrade.")
    manifest = metadata.get("manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != INDEX_FORMAT or "model" not in manifest:
        raise VideoIndexError(f"{source}: its metadata holds no index manifest.")
    # Version 1 exports (before this checksum) lack it; from version 2 it must be there and match.
    if metadata.get("version", 0) >= 2 and sha256_json(manifest) != metadata.get("manifest_sha256"):
        raise VideoIndexError(
            f"{source}: the index manifest (model fingerprint, encoding settings) does not match the checksum "
            "recorded at export: it was changed or is corrupt. Export the index again."
        )
    return metadata


def _fingerprint_of(model) -> dict[str, Any]:
    if isinstance(model, dict):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .build import load_model_and_processor

        return load_model_and_processor(os.fspath(model))[2]
    return model_fingerprint(model)


def dataset_to_folder(
    dataset, out: str | os.PathLike, model=None, overwrite: bool = False, source: str | None = None
) -> str:
    """Writes a dataset from `to_dataset` (or `load_hub_folder`) as an index folder at `out` and returns the folder's
    path (`VideoIndex.load` opens it).

    `model` (a model, its name or folder, or its `model_fingerprint`): the model that will search the index; one
    other than the model the vectors were made with is refused (`ModelMismatchError`, naming both). Without it the
    check happens when the index loads its model to search, as for any index. `out` must be new or empty unless
    `overwrite` (which replaces an index there)."""
    source = source or "the dataset"
    metadata = _share_metadata(dataset, source)
    manifest = metadata["manifest"]
    dimension = manifest["dimension"]
    if manifest["model"].get("dimension") != dimension:
        raise VideoIndexError(f"{source}: the manifest's dimension and its model's differ.")
    if model is not None:
        check_model(manifest, _fingerprint_of(model), source)

    import pyarrow as pa

    table = dataset.with_format("arrow")[:] if len(dataset) else dataset.data.table
    missing = [name for name in (*ROW_COLUMNS, PSI_COLUMN) if name not in table.column_names]
    if missing:
        raise VideoIndexError(f"{source} lacks the column(s) {', '.join(missing)} of an exported S2CA index.")
    psi_type = table.schema.field(PSI_COLUMN).type
    if not (pa.types.is_fixed_size_list(psi_type) or pa.types.is_list(psi_type)) or not pa.types.is_float16(
        psi_type.value_type
    ):
        raise VideoIndexError(f"{source}: column {PSI_COLUMN} is {psi_type}, not lists of float16 psi values.")
    psi = table.column(PSI_COLUMN).combine_chunks()
    if psi.null_count or len(psi.flatten()) != len(table) * dimension:
        raise VideoIndexError(f"{source}: column {PSI_COLUMN} does not hold one {dimension}-value vector per row.")
    vectors = torch.from_numpy(psi.flatten().to_numpy(zero_copy_only=False).view("uint16").copy())
    vectors = vectors.view(torch.float16).reshape(len(table), dimension)
    rows = table.select(list(ROW_COLUMNS)).to_pylist()

    shards = metadata.get("shards") or []
    if sum(shard["count"] for shard in shards) != len(rows) or len(rows) != manifest["count"]:
        raise VideoIndexError(
            f"{source} has {len(rows)} rows but its metadata lists {manifest['count']}: rows were added or removed."
        )
    rows_digest, psi_digest = _digests()
    _update(rows_digest, psi_digest, rows, vectors)
    if rows_digest.hexdigest() != metadata.get("rows_sha256"):
        raise VideoIndexError(
            f"{source}: the rows (ids, paths, spans, ...) do not match the checksum recorded at export: the dataset "
            "was changed or is corrupt. Export the index again."
        )
    if psi_digest.hexdigest() != metadata.get("psi_sha256"):
        raise VideoIndexError(
            f"{source}: column {PSI_COLUMN} does not match the checksum recorded at export: the vectors were changed "
            "or are corrupt. Export the index again."
        )
    if not torch.isfinite(vectors).all():
        raise VideoIndexError(f"{source}: column {PSI_COLUMN} holds non-finite values.")

    out = os.path.abspath(os.fspath(out))
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise VideoIndexError(f"{out} is not empty: give a new folder, or overwrite=True.")
        if not os.path.isfile(os.path.join(out, MANIFEST_FILE)):
            raise VideoIndexError(f"{out} is not empty and holds no index: it is not overwritten.")
        read_manifest(out)
    os.makedirs(out, exist_ok=True)
    with IndexLock(out):
        shard_dir = os.path.join(out, SHARDS_DIR)
        if overwrite and os.path.isdir(shard_dir):
            clear_index(out)
        staging = tempfile.mkdtemp(prefix=".s2ca-share-", dir=out)
        try:
            settings = {key: manifest[key] for key in _SETTINGS_KEYS}
            headers, offset = {}, 0
            for shard in shards:
                part = slice(offset, offset + shard["count"])
                shard_rows = [{k: v for k, v in row.items() if k != "shard"} for row in rows[part]]
                if any(row["shard"] != shard["name"] for row in rows[part]):
                    raise VideoIndexError(f"{source}: the rows of shard {shard['name']} are not in the shard's order.")
                name = write_shard(staging, vectors[part], shard_rows, shard["skipped"], settings)
                if name != shard["name"]:
                    raise VideoIndexError(f"{source}: shard {shard['name']} does not hold the videos its name says.")
                headers[name] = read_shard_header(os.path.join(staging, name))
                offset += shard["count"]
            os.makedirs(shard_dir, exist_ok=True)
            for name in headers:
                os.replace(os.path.join(staging, name), os.path.join(shard_dir, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        extra = {key: value for key, value in manifest.items() if key not in (*_COMMITTED_KEYS, *_SETTINGS_KEYS)}
        extra["shared_from"] = {"source": source, "content_id": manifest["content_id"]}
        committed = commit_index(out, headers, settings, extra)
    if committed["content_id"] != manifest["content_id"]:  # the same shards give the same content, row order and ids
        raise VideoIndexError(f"{source}: the index written at {out} is not the exported one (shards differ).")
    return out


__all__ = [
    "SHARE_FILE",
    "SHARE_FORMAT",
    "dataset_to_folder",
    "hub_to_folder",
    "load_hub_folder",
    "push_to_hub",
    "save_hub_folder",
    "to_dataset",
]
