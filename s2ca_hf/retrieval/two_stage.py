"""Two-stage search for large indexes: a compressed first stage proposes candidates, the full S2CA score re-ranks
them from the shards, memory-mapped.

psi is large (D (1 + K) float16 values per video: 4.3 KiB for the small model with K = 16, 17 KiB for ViT-B/32
with K = 16), so a collection of millions of videos does not fit in memory and a full scan costs seconds per query.
The first stage keeps, per video, a few dozen bytes: a projection of psi (by default its instance part, the first D
values, which is what s_inst ranks by) compressed by FAISS (IVF + product quantisation). It returns `candidates`
rows per query; the second stage reads those rows' psi from the memory-mapped shards and scores them exactly, in
float32. The answer equals exact search whenever the exact top-k is among the candidates (measured by
`benchmarks/search.py`: recall@10 against the full scan).

The first stage lives in the index folder:

    first_stage/settings.json            factory, projection, default candidates and nprobe, and the content id and
                                         row count of the index it was built from (a changed index is refused)
    first_stage/faiss.index              the FAISS index over the projected vectors
    first_stage/projection.safetensors   P `(E, r)`: the first stage scores (phi P) . (psi P)
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shutil
import struct
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..utils import file_sha256
from .errors import VideoIndexError
from .search import check_nprobe, check_queries, faiss_search_with_threads, import_faiss, sort_hits
from .store import file_mode


FIRST_STAGE_DIR = "first_stage"
SETTINGS_FILE = "settings.json"
FAISS_FILE = "faiss.index"
PROJECTION_FILE = "projection.safetensors"
PROJECTIONS = ("instance", "svd")
DEFAULT_CANDIDATES = 256
NPROBE_SHARE = 8  # a built IVF first stage visits 1/8 of its lists by default
# A refined first stage re-ranks this many times `candidates` of its coarse codes. 8, measured
# (benchmarks/results/search.md, 1M generated rows): recall@10 0.961 against exact at 1,172 queries/s in batches
# of 64; 16 gave 0.976 at 819 queries/s (the k-selection over 4,096 coarse hits and their refinement cost that).
REFINE_K_FACTOR = 8


def auto_factory(count: int, dims: int) -> str:
    """`"Flat"` (exact inner products over the projection) below 20,000 rows, where compression saves little; else
    `ivf_pq_factory`. Chosen by measurement (`benchmarks/search_two_stage.py`, results/search.md)."""
    return "Flat" if count < 20000 else ivf_pq_factory(count, dims)


def ivf_pq_factory(count: int, dims: int) -> str:
    """IVF with 2 to 4 sqrt(N) lists (a power of two), a 4-bit fast-scan product quantiser over 2 dimensions per code
    (dims / 4 bytes) and a refinement of its best `REFINE_K_FACTOR x candidates` by 8-bit scalar codes (dims
    bytes): 40 + 128 bytes per video for D = 128. Why (trials on this 2-core machine while building it; the
    committed figures are in results/search.md): 8-bit PQ codes trained about 30x slower than 4-bit fast-scan ones,
    and fast-scan codes alone stopped improving recall past a few hundred candidates whatever nprobe, which the
    scalar-code refinement fixes at little cost."""
    if dims % 2:
        raise ValueError(f"The auto factory needs an even projection size, got {dims}: pass a factory.")
    lists = 2 ** max(0, math.floor(math.log2(min(4.0 * math.sqrt(count), 65536, count / 39))))
    return f"IVF{lists},PQ{dims // 2}x4fs,Refine(SQ8)"


def projection_matrix(sample: torch.Tensor, kind: str, dims: int, instance_dim: int) -> torch.Tensor:
    """P `(E, r)`, float32, with orthonormal columns.

    `"instance"`: the first `instance_dim` coordinates (the instance feature v; then the first stage ranks by
    s_inst). `"svd"`: the top-r right singular vectors of the (uncentred) sample, the r-dimensional subspace that
    keeps most of psi: phi . psi ~ (phi P) . (psi P) when psi ~ P P^T psi, whatever phi is. Centring would change
    the ranking of an inner product, so the sample is not centred.
    """
    dimension = sample.shape[1]
    if kind == "instance":
        if dims != instance_dim:
            raise ValueError(f'projection="instance" keeps the {instance_dim} instance dimensions, not {dims}.')
        return torch.eye(dimension, instance_dim)
    if kind == "svd":
        if not 0 < dims <= min(dimension, sample.shape[0]):
            raise ValueError(f"An SVD projection needs 0 < dims <= {min(dimension, sample.shape[0])}, got {dims}.")
        _, _, vh = torch.linalg.svd(sample.double(), full_matrices=False)
        return vh[:dims].t().float().contiguous()
    raise ValueError(f"projection must be one of {PROJECTIONS}, got {kind!r}.")


class MappedShards:
    """The index's psi, memory-mapped shard by shard: `gather(rows)` reads only the rows asked for.

    With `verify=True` (default) every shard is checked against the manifest's sha256 once, when opened (a full
    read of the index, as one exact scan costs); rows read later come from those checked files. The pages a gather
    touches stay in the page cache (they count in the process's resident memory as file-backed pages, which the
    kernel reclaims under pressure); `chunks` maps each shard only while it reads it.
    """

    def __init__(self, path: str, manifest: dict, verify: bool = True):
        self.dimension = manifest["dimension"]
        self.files, self.counts, starts = [], [], [0]
        for shard in manifest["shards"]:
            file = os.path.join(path, shard["file"])
            if verify and shard.get("sha256") and file_sha256(file) != shard["sha256"]:
                raise VideoIndexError(
                    f"Shard {file} does not match the checksum in the manifest (changed or corrupt): delete it and "
                    "run s2ca-index again to re-encode its videos."
                )
            self.files.append(file)
            self.counts.append(shard["count"])
            starts.append(starts[-1] + shard["count"])
        self.starts = np.asarray(starts, dtype=np.int64)
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _array(self, shard: int) -> np.ndarray:
        if shard not in self._arrays:
            # A plain ndarray view (it keeps the map alive): numpy's take skips memmap's subclass overhead (~20 %).
            self._arrays[shard] = _map_vectors(self.files[shard], self.counts[shard], self.dimension).view(np.ndarray)
        return self._arrays[shard]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 `(len(rows), E)` for int64 row numbers (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.shape[0], self.dimension), dtype=np.float32)
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for shard in np.unique(shard_of):
            where = np.nonzero(shard_of == shard)[0]
            local = rows[where] - self.starts[shard]
            order = np.argsort(local, kind="stable")  # ascending reads: pages in file order
            out[where[order]] = self._array(int(shard))[local[order]]
        return out

    def score(self, queries: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """`(Q, C)` float32 scores `queries[q] . psi[rows[q, c]]` for `(Q, E)` float32 queries and `(Q, C)` int64
        rows (-inf where a row is -1), read from the shards.

        One query at a time, single-threaded, through two buffers of C rows that every query reuses: one query's
        rows fit in the CPU's cache, so converting them to float32 and scoring them costs little next to reading
        them. Gathering every query's rows into one fresh `(Q C, E)` float32 array first, and scoring that, spends
        most of its time on page faults of the new memory and on memory bandwidth (3x slower for 64 queries of 256
        candidates). One thread, because an op this small gains nothing from a second one, and on a busy machine a
        parallel region waits a scheduler time slice for it (8 ms instead of 0.03 ms per conversion, measured).
        """
        count = rows.shape[1]
        half = np.empty((count, self.dimension), dtype=np.float16)
        full = torch.empty((count, self.dimension))
        order = np.argsort(rows, axis=1, kind="stable")  # each query's rows in file order; the -1s come first
        in_file_order = np.take_along_axis(rows, order, axis=1)
        missing = (in_file_order < 0).sum(1)
        scores = torch.full(rows.shape, -math.inf)  # in file order until the scatter below
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for q in range(rows.shape[0]):
                first = int(missing[q])
                found = in_file_order[q, first:]
                self._read_into(found, half[: len(found)])
                full[: len(found)].copy_(torch.from_numpy(half[: len(found)]))
                torch.mv(full[: len(found)], queries[q], out=scores[q, first:])
        finally:
            torch.set_num_threads(threads)
        return torch.empty_like(scores).scatter_(1, torch.from_numpy(order), scores)

    def _read_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        # `rows` ascending: each shard's rows are one contiguous run of them.
        bounds = np.searchsorted(rows, self.starts)
        for shard in np.flatnonzero(bounds[1:] > bounds[:-1]):
            begin, end = bounds[shard], bounds[shard + 1]
            np.take(self._array(int(shard)), rows[begin:end] - self.starts[shard], axis=0, out=out[begin:end])

    def chunks(self, chunk_rows: int = 65536):
        """The vectors in row order, as float32 tensors of at most `chunk_rows` rows (for building a first stage)."""
        for file, count in zip(self.files, self.counts):
            array = _map_vectors(file, count, self.dimension)  # mapped for this shard's pass only
            for start in range(0, count, chunk_rows):
                yield torch.from_numpy(np.ascontiguousarray(array[start : start + chunk_rows], dtype=np.float32))
            del array


def _map_vectors(file: str, count: int, dimension: int) -> np.ndarray:
    # A safetensors file: an 8-byte little-endian header length, the JSON header, then the tensor bytes.
    try:
        with open(file, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_length))
    except (OSError, ValueError, struct.error) as error:
        raise VideoIndexError(f"Shard {file} cannot be read ({error}); run s2ca-index again to repair.") from None
    entry = header.get("vectors", {})
    if entry.get("dtype") != "F16" or entry.get("shape") != [count, dimension]:
        raise VideoIndexError(f"Shard {file} does not hold the {count} x {dimension} float16 rows the manifest lists.")
    begin = 8 + header_length + entry["data_offsets"][0]
    if count == 0:
        return np.zeros((0, dimension), dtype=np.float16)
    return np.memmap(file, dtype=np.float16, mode="r", offset=begin, shape=(count, dimension))


def first_stage_settings(path: str) -> dict | None:
    """The settings of the first stage in the index folder `path`, or None if it has none (or they are unreadable)."""
    try:
        with open(os.path.join(path, FIRST_STAGE_DIR, SETTINGS_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


class FirstStage:
    """The compressed first stage of an index folder (see the module docstring)."""

    def __init__(self, faiss_index, projection: torch.Tensor, settings: dict):
        self._owner = faiss_index  # the wrapper that owns the C++ index (a downcast view does not)
        self.faiss_index = import_faiss().downcast_index(faiss_index)
        self.projection = projection
        self.settings = settings
        if hasattr(self.faiss_index, "k_factor"):  # IndexRefine
            self.faiss_index.k_factor = settings.get("refine_k_factor", REFINE_K_FACTOR)

    @classmethod
    def load(cls, path: str, manifest: dict) -> FirstStage | None:
        """The first stage of the index at `path`, or None if it has none. A first stage built from other contents
        (videos added or re-encoded since) is refused: its candidates would silently miss the new rows."""
        folder = os.path.join(path, FIRST_STAGE_DIR)
        settings_file = os.path.join(folder, SETTINGS_FILE)
        if not os.path.isfile(settings_file):
            return None
        try:
            with open(settings_file, encoding="utf-8") as handle:
                settings = json.load(handle)
        except (OSError, ValueError) as error:
            raise VideoIndexError(f"{settings_file} cannot be read ({error}); {_rebuild(path)}") from None
        try:
            check_nprobe(settings.get("nprobe"))
        except ValueError as error:
            raise VideoIndexError(f"{settings_file}: {error} {_rebuild(path)}") from None
        if settings.get("content_id") != manifest["content_id"] or settings.get("count") != manifest["count"]:
            raise VideoIndexError(
                f"The first stage in {folder} was built for other contents of this index ({settings.get('count')} "
                f"rows then, {manifest['count']} now): {_rebuild(path)}"
            )
        # The same videos indexed by another model have the same content id: the weights tell them apart.
        weights = settings.get("model_weights_sha256")
        if weights is not None and weights != manifest["model"].get("weights_sha256"):
            raise VideoIndexError(
                f"The first stage in {folder} was built from another model's vectors (weights sha256 {weights[:12]}, "
                f"the index's {str(manifest['model'].get('weights_sha256'))[:12]}): {_rebuild(path)}"
            )
        for name, key in ((FAISS_FILE, "faiss_sha256"), (PROJECTION_FILE, "projection_sha256")):
            file = os.path.join(folder, name)
            if key in settings and os.path.isfile(file) and file_sha256(file) != settings[key]:
                raise VideoIndexError(f"{file} is not the file written with the settings (damaged); {_rebuild(path)}")
        faiss = import_faiss()
        try:
            faiss_index = faiss.read_index(os.path.join(folder, FAISS_FILE))
            projection = load_file(os.path.join(folder, PROJECTION_FILE))["projection"]
        except Exception as error:  # missing or truncated file
            raise VideoIndexError(f"The first stage in {folder} cannot be read ({error}); {_rebuild(path)}") from None
        if faiss_index.ntotal != manifest["count"] or projection.shape[0] != manifest["dimension"]:
            raise VideoIndexError(f"The first stage in {folder} does not match the index; {_rebuild(path)}")
        return cls(faiss_index, projection, settings)

    def candidates(self, queries: torch.Tensor, count: int, nprobe: int | None = None) -> np.ndarray:
        """`(Q, count)` int64 candidate rows (-1 where the first stage found fewer)."""
        faiss = import_faiss()
        if nprobe is not None or "nprobe" in self.settings:
            probes = nprobe if nprobe is not None else self.settings["nprobe"]
            try:
                faiss.extract_index_ivf(self.faiss_index).nprobe = probes
            except RuntimeError:
                if nprobe is not None:
                    raise ValueError(f"nprobe applies to IVF first stages, not {self.settings['factory']}.") from None
        projected = (queries.detach().float().cpu() @ self.projection).contiguous().numpy()
        _, rows = faiss_search_with_threads(self.faiss_index, projected, min(count, self.faiss_index.ntotal))
        return rows


def _rebuild(path: str) -> str:
    return f"rebuild it with `s2ca-index --first-stage --out {path} ...` (same videos), or search with --exact."


def projected_sample(
    path: str, manifest: dict, projection: str, dims: int | None, train_size: int, verify: bool = True
) -> tuple[MappedShards, torch.Tensor, torch.Tensor]:
    """The index's shards, a training sample of its rows (evenly spaced, so that a collection indexed in some order
    is sampled across it) and the projection P computed from it: what every first stage (FAISS here, Milvus in
    `milvus.py`) starts from, so that the same settings give the same projected vectors."""
    instance_dim = _instance_dim(manifest)
    dims = instance_dim if dims is None else dims
    shards = MappedShards(path, manifest, verify=verify)
    if len(shards) == 0:
        raise VideoIndexError(f"The index at {path} holds no video: there is nothing to build a first stage from.")
    sample_rows = np.unique(np.linspace(0, len(shards) - 1, min(train_size, len(shards))).astype(np.int64))
    sample = torch.from_numpy(shards.gather(sample_rows))
    return shards, sample, projection_matrix(sample, projection, dims, instance_dim)


def build_first_stage(
    path: str,
    manifest: dict,
    factory: str = "auto",
    projection: str = "instance",
    dims: int | None = None,
    candidates: int = DEFAULT_CANDIDATES,
    nprobe: int | None = None,
    train_size: int = 131072,
    verify: bool = True,
    progress: bool = True,
) -> FirstStage:
    """Builds the first stage of the index at `path` from its shards and writes it into `path/first_stage`
    (replacing any earlier one). `dims`: the projection size (default: the model's D, `projection_dim`)."""
    faiss = import_faiss()
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}.")
    check_nprobe(nprobe)
    shards, sample, matrix = projected_sample(path, manifest, projection, dims, train_size, verify)
    dims = matrix.shape[1]
    requested_factory = factory
    factory = auto_factory(len(shards), dims) if factory == "auto" else factory
    if "l2norm" in factory.lower() or factory.upper().startswith("PCA"):
        raise ValueError(
            f"The first-stage factory {factory!r} normalises or centres the vectors, which changes the ranking of "
            "S2CA's inner product: use projection='svd' for a smaller first stage."
        )
    try:
        faiss_index = faiss.index_factory(dims, factory, faiss.METRIC_INNER_PRODUCT)
        if not faiss_index.is_trained:
            faiss_index.train((sample @ matrix).numpy())
    except RuntimeError as error:
        raise ValueError(f"FAISS cannot build or train {factory!r} on {len(sample)} vectors ({error}).") from None
    from tqdm.auto import tqdm

    with tqdm(total=len(shards), desc="first stage", unit="video", disable=not progress) as bar:
        for chunk in shards.chunks():
            faiss_index.add((chunk @ matrix).numpy())
            bar.update(chunk.shape[0])
    settings = {
        "factory": factory,
        "requested_factory": requested_factory,
        "projection": projection,
        "dims": dims,
        "candidates": candidates,
        "content_id": manifest["content_id"],
        "count": manifest["count"],
        "dimension": manifest["dimension"],
        "bytes_per_video": _bytes_per_video(faiss_index),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if _is_ivf(faiss_index):
        # Queries are texts and the lists are centred on videos: a share of the lists, not a fixed count, keeps
        # recall as the collection grows (a trial at 200k rows, 1,024 lists: nprobe 16 / 64 / 256 took recall@10
        # from 0.62 to 0.94 and 0.99; the committed figures are in results/search.md).
        lists = import_faiss().extract_index_ivf(faiss_index).nlist
        settings["nprobe"] = nprobe if nprobe is not None else max(1, lists // NPROBE_SHARE)
        settings["requested_nprobe"] = nprobe  # None: derived from the list count, and derived again on a rebuild
    if "refine" in factory.lower():
        settings["refine_k_factor"] = REFINE_K_FACTOR
    settings["model_weights_sha256"] = manifest["model"].get("weights_sha256")
    folder = os.path.join(path, FIRST_STAGE_DIR)
    _remove_abandoned_builds(path)
    tmp = f"{folder}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    faiss.write_index(faiss_index, os.path.join(tmp, FAISS_FILE))
    save_file({"projection": matrix.contiguous()}, os.path.join(tmp, PROJECTION_FILE))
    for name, key in ((FAISS_FILE, "faiss_sha256"), (PROJECTION_FILE, "projection_sha256")):
        os.chmod(os.path.join(tmp, name), file_mode())  # readable like the rest of the index (safetensors: 0600)
        settings[key] = file_sha256(os.path.join(tmp, name))
    with open(os.path.join(tmp, SETTINGS_FILE), "w") as handle:
        json.dump(settings, handle, indent=2)
        handle.write("\n")
    # Replaced as a whole: a reader sees the old first stage or the new one, never a mix (settings are read first).
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return FirstStage(faiss_index, matrix, settings)


def rebuild_options(settings: dict) -> dict:
    """The `build_first_stage` options that rebuild a first stage with its own settings after the index grew: what
    was asked for, not what it resolved to for the old row count ("auto" factory, an nprobe derived from the list
    count: both are derived again, so that a grown index keeps its recall)."""
    options = {key: settings[key] for key in ("projection", "dims", "candidates")}
    options["factory"] = settings.get("requested_factory", settings["factory"])
    options["nprobe"] = settings.get("requested_nprobe")  # a first stage from before this key: derived again
    return options


def _remove_abandoned_builds(path: str) -> None:
    """Deletes `first_stage.<pid>.tmp` folders whose process is gone (a build that was killed)."""
    for name in os.listdir(path):
        match = re.fullmatch(rf"{FIRST_STAGE_DIR}\.(\d+)\.tmp", name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(path, name), ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _instance_dim(manifest: dict) -> int:
    """D, the size of psi's instance part: recorded in the manifest since the first stage exists; for an older
    index, read from the model's config."""
    model = manifest["model"]
    if model.get("projection_dim"):
        return int(model["projection_dim"])
    from ..configuration_s2ca import S2CAConfig

    try:
        return int(S2CAConfig.from_pretrained(model["name_or_path"], revision=model.get("revision")).projection_dim)
    except (OSError, ValueError, TypeError) as error:
        raise VideoIndexError(
            f"The index's manifest does not record the model's projection_dim and its model {model['name_or_path']!r} "
            f"cannot be read ({error}): pass dims= with projection='svd', or rebuild the index."
        ) from None


def _is_ivf(faiss_index) -> bool:
    faiss = import_faiss()
    try:
        faiss.extract_index_ivf(faiss_index)
        return True
    except RuntimeError:
        return False


def _bytes_per_video(faiss_index) -> float:
    """What the first stage holds in memory per video: its codes plus, for IVF, the 8-byte row id of each entry."""
    faiss = import_faiss()
    index = faiss.downcast_index(faiss_index)
    refine = 0
    if hasattr(index, "refine_index"):  # IndexRefine: the coarse codes plus the refinement's codes
        refine = faiss.downcast_index(index.refine_index).code_size
    if _is_ivf(faiss_index):
        ivf = faiss.extract_index_ivf(faiss_index)
        return float(ivf.code_size + 8 + refine)
    code_size = getattr(faiss_index, "code_size", None)
    if code_size:
        return float(code_size)
    return float(faiss_index.d * 4)


@torch.inference_mode()
def two_stage_search(
    queries: torch.Tensor,
    first_stage: FirstStage,
    shards: MappedShards,
    k: int = 10,
    candidates: int | None = None,
    nprobe: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k rows of `queries @ psi.T`: `candidates` rows per query from the first stage, scored exactly (float32)
    from the shards. `(Q, k)` float32 scores and int64 rows, best first, ties by row number (as `exact_search`)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    check_queries(queries)
    check_nprobe(nprobe)
    candidates = max(k, candidates if candidates is not None else first_stage.settings["candidates"])
    queries = queries.detach().float().cpu()
    rows = first_stage.candidates(queries, candidates, nprobe)  # (Q, C), -1 where fewer were found
    scores = shards.score(queries, rows)
    top, where = scores.topk(min(k, scores.shape[1]), dim=1)
    return sort_hits(top, torch.from_numpy(rows).gather(1, where))


def describe(settings: dict[str, Any]) -> str:
    return (
        f"{settings['factory']} over the {settings['projection']} projection ({settings['dims']} dims), "
        f"{settings['bytes_per_video']:.0f} bytes per video, {settings['candidates']} candidates"
    )


__all__ = [
    "FirstStage",
    "MappedShards",
    "auto_factory",
    "build_first_stage",
    "first_stage_settings",
    "ivf_pq_factory",
    "projected_sample",
    "projection_matrix",
    "two_stage_search",
]
