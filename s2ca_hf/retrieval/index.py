"""`VideoIndex`: an index folder opened for search by text, by example video, or the reverse.

S2CA's score factorises (docs/method.md §5): `score(text, video) = phi(text) . psi(video)` with fixed per-item
vectors. So every video's psi is computed once and stored (`build.py`, in the format of `store.py`), and a query
costs one text encoding plus one matrix product (`search.py`).

The package's retrieval code is split by job: `sources.py` (which videos), `fingerprints.py` (which model, frame
policy and text side made the vectors), `store.py` (manifest, table, shards), `build.py` (decoding and
`build_index`), `search.py` (exact top-k and FAISS), `two_stage.py` (a compressed first stage and exact re-scoring
from memory-mapped shards, for large indexes), `share.py` (an index as a `datasets` dataset and a Hub dataset
repository, behind `VideoIndex.to_dataset` and friends) and this file. Each name is imported from the module that
defines it; this one defines `VideoIndex` and `SearchHit`.

This module is not part of the Hub model code: the model files never import it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..modeling_s2ca import late_interaction_score
from . import share
from .build import ENCODING_DTYPES, decode_for_index, load_model_and_processor
from .errors import ModelMismatchError, VideoIndexError
from .evaluation import encode_texts, encode_videos
from .fingerprints import check_model, check_text_side, frame_policy, model_fingerprint
from .search import build_faiss_index, exact_search, faiss_search
from .store import SHARDS_DIR, TABLE_FILE, load_shard_vectors, read_manifest, resolve_videos_root
from .two_stage import FirstStage, MappedShards, build_first_stage, two_stage_search


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
    `in_memory=False` streams the shards from disk at each search, bounding memory by one shard. An index with a
    first stage (`build_first_stage`, `s2ca-index --first-stage`) is searched in two stages by default: candidates
    from the compressed first stage, re-scored exactly from the memory-mapped shards; `backend="exact"` scans all.
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
        self._first_stage: FirstStage | None | bool = False  # False: not looked for yet
        self._mapped: MappedShards | None = None
        self.videos_root: str | None = None  # set by `load`

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        in_memory: bool = True,
        chunk_size: int = 65536,
        videos_root: str | os.PathLike | None = None,
    ) -> VideoIndex:
        """Opens the index folder `path`. `videos_root`: where the indexed folder's videos are now (an index built
        elsewhere, or videos moved); by default the folder that was indexed, or the same folder seen from the index
        when the two were moved together. Old indexes, whose rows hold absolute paths, load as they are."""
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
        index = cls(path, manifest, table, device, in_memory, chunk_size)
        index.videos_root = resolve_videos_root(path, manifest, videos_root)
        return index

    def video_path(self, stored: str) -> str:
        """A table row's path as a file here (relative rows start at `videos_root`)."""
        return stored if os.path.isabs(stored) or self.videos_root is None else os.path.join(self.videos_root, stored)

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
            vectors = load_shard_vectors(os.path.join(self.path, shard["file"]), shard.get("sha256"))
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
        return load_shard_vectors(os.path.join(self.path, SHARDS_DIR, shard), checksums.get(shard))[
            self.table.column("shard_row")[row].as_py()
        ].float()

    # -- sharing (share.py) ---------------------------------------------------------------------------------

    def to_dataset(self):
        """The index as a `datasets.Dataset`: one row per video (the table's columns and `psi`, float16), the
        manifest and checksums as JSON in `info.description`. `from_dataset` turns it back into an index folder."""
        return share.to_dataset(self)

    @classmethod
    def from_dataset(cls, dataset, out: str | os.PathLike, model=None, overwrite: bool = False) -> VideoIndex:
        """Writes a dataset from `to_dataset` as an index folder at `out` and opens it. `model` (a model, its name
        or folder, or its fingerprint): refused unless it made the vectors (see `share.from_dataset`)."""
        return cls.load(share.dataset_to_folder(dataset, out, model=model, overwrite=overwrite))

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None, **upload_kwargs):
        """Uploads the index as a dataset repository (`data/*.parquet`, `s2ca_index.json`, a card) in one commit."""
        return share.push_to_hub(self, repo_id, private=private, token=token, **upload_kwargs)

    @classmethod
    def from_hub(
        cls, repo_id: str, out: str | os.PathLike, revision: str | None = None, model=None, **kwargs
    ) -> VideoIndex:
        """Downloads a dataset repository `push_to_hub` wrote and writes it as an index folder at `out`."""
        return cls.load(share.hub_to_folder(repo_id, out, revision=revision, model=model, **kwargs))

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
        self._model = model.to(self.device, ENCODING_DTYPES.get(self.manifest.get("encoding_dtype"), torch.float32))
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

    @property
    def first_stage(self) -> FirstStage | None:
        """The index's compressed first stage, or None if it has none (a stale one is refused, naming the fix)."""
        if self._first_stage is False:
            self._first_stage = FirstStage.load(self.path, self.manifest)
        return self._first_stage

    def build_first_stage(self, factory: str = "auto", projection: str = "instance", **kwargs) -> FirstStage:
        """Builds (or rebuilds) the first stage of two-stage search into the index folder; see `two_stage.py` and
        `build_first_stage` there for the arguments."""
        self._first_stage = build_first_stage(self.path, self.manifest, factory, projection, **kwargs)
        return self._first_stage

    def attach_first_stage(self, first_stage) -> None:
        """Searches take their candidates from `first_stage` (a `FirstStage`, or a `milvus.MilvusFirstStage`)."""
        self._first_stage = first_stage

    def search(
        self,
        queries: str | Sequence[str] | torch.Tensor,
        k: int = 10,
        backend: str = "auto",
        faiss_factory: str = "SQfp16",
        nprobe: int | None = None,
        candidates: int | None = None,
        rerank: int | None = None,
    ) -> list[list[SearchHit]]:
        """The top-k videos for each query, best first: a list (one per query) of `SearchHit`.

        `queries`: a text, a list of texts (encoded with the index's model), or `(Q, E)` / `(E,)` vectors. Text
        vectors give the model's retrieval score; a video's psi as the query (see `search_by_video`) compares
        video vectors with each other. `backend`: `"auto"` (two stages where the index has a first stage, else
        exact), `"exact"` (chunked matrix products over every vector), `"two_stage"` or `"faiss"` (a FAISS index
        over the full vectors, built in memory). `candidates` and `nprobe` set the two-stage search (defaults: the
        first stage's settings).

        `rerank`: with a model that has the late-interaction re-ranker and text queries, the search's best `rerank`
        videos (at least k) are re-scored by score + late interaction, each caption token against the video's
        concepts as psi stores them (`S2CAModel.late_interaction_scores`), and the best k of them returned with
        that score.
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
        if rerank is None:
            scores, rows = self.search_vectors(vectors, k, backend, faiss_factory, nprobe, candidates)
            return self._hits(scores, rows)
        if isinstance(queries, torch.Tensor):
            raise ValueError("rerank needs text queries: the re-ranker reads each caption's tokens.")
        model, processor = self._require_model()
        if not model.config.has_late_interaction:
            raise ValueError(f"rerank: the model of {self.path} has no late-interaction re-ranker to re-rank with.")
        shortlist = min(max(int(rerank), k), len(self))
        scores, rows = self.search_vectors(vectors, shortlist, backend, faiss_factory, nprobe, candidates)
        from .evaluation import encode_text_tokens

        features, weights = encode_text_tokens(model, processor, list(queries))
        found = rows.clamp(min=0)
        if self.in_memory:
            psi = self.vectors[found.to(self.device)].float().cpu()
        else:
            if self._mapped is None:
                self._mapped = MappedShards(self.path, self.manifest)
            psi = torch.from_numpy(self._mapped.gather(found.flatten().numpy())).view(*found.shape, -1)
        concepts = model.video_concepts_from_embeds(psi.flatten(0, 1).to(model.device, torch.float32)).cpu()
        concepts = concepts.view(*found.shape, *concepts.shape[1:])  # (Q, shortlist, K, D)
        rescored = scores + late_interaction_score(features, weights, concepts)
        rescored = rescored.masked_fill(rows < 0, float("-inf"))  # a shortlist shorter than asked keeps its holes
        best = rescored.topk(min(k, shortlist), dim=1).indices
        return self._hits(rescored.gather(1, best), rows.gather(1, best))

    def search_vectors(
        self,
        queries: torch.Tensor,
        k: int = 10,
        backend: str = "auto",
        faiss_factory: str = "SQfp16",
        nprobe: int | None = None,
        candidates: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(Q, k)` scores and row numbers of the top-k rows for `(Q, E)` query vectors."""
        if backend == "auto":
            backend = "two_stage" if self.first_stage is not None else "exact"
            if backend == "exact" and nprobe is not None:
                raise ValueError(
                    f"nprobe applies to --backend faiss or to a two-stage first stage, and {self.path} has no first "
                    "stage: exact search has no lists to visit."
                )
        if backend != "two_stage" and candidates is not None:
            raise ValueError(f"candidates applies to the two-stage search, not to backend={backend!r}.")
        if backend == "two_stage":
            if self.first_stage is None:
                raise VideoIndexError(
                    f"{self.path} has no first stage: build one with `s2ca-index --first-stage --out {self.path} ...` "
                    "(or VideoIndex.build_first_stage), or search with the exact backend."
                )
            if self._mapped is None:
                self._mapped = MappedShards(self.path, self.manifest)
            return two_stage_search(queries, self.first_stage, self._mapped, k, candidates, nprobe)
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
        raise ValueError(f"backend must be 'auto', 'exact', 'two_stage' or 'faiss', got {backend!r}.")

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
                path = self.video_path(record["path"])
                hits.append(SearchHit(len(hits) + 1, float(score), row, record["id"], path, metadata))
            results.append(hits)
        return results


class _ShardStream:
    """Re-iterable stream of an index's shards from disk, for `exact_search` with bounded memory."""

    def __init__(self, index: VideoIndex):
        self.index = index

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.index.iter_shards()


__all__ = ["SearchHit", "VideoIndex"]
