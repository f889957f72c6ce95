"""The first stage of two-stage search in Milvus, for collections past one machine.

FAISS in the index folder is the one-machine default (`two_stage.py`). Past one machine, the first stage can live in
a Milvus deployment instead: this module writes the projected vectors (the same projection and sample as the FAISS
first stage) into a Milvus collection and asks it for the candidates; the second stage re-scores them exactly from
the index's shards, memory-mapped from wherever the index folder is mounted. The same `pymilvus` client code talks to
Milvus Lite (a local file, `uri="first-stage.db"`, tested here) and to a Milvus cluster
(`uri="http://milvus:19530"`); no server of our own.

```python
>>> from s2ca_hf.retrieval.milvus import MilvusFirstStage
>>> stage = MilvusFirstStage.build(index, uri="http://milvus:19530", collection="my_videos", index_type="IVF_FLAT")
>>> index.attach_first_stage(stage)        # index.search(...) now takes its candidates from Milvus
>>> stage = MilvusFirstStage.open(index, uri="http://milvus:19530", collection="my_videos")   # later, elsewhere
```

The collection records the index's content id and row count in a collection property: a collection built from other
contents is refused, as a stale FAISS first stage is. Milvus Lite offers FLAT, IVF_FLAT, IVF_SQ8, HNSW and HNSW_SQ
(no product quantisation yet); a cluster offers IVF_PQ too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

from .errors import VideoIndexError
from .two_stage import DEFAULT_CANDIDATES, projected_sample


VECTOR_FIELD = "first_stage"
ROW_FIELD = "row"
INSERT_BATCH = 4096
SETTINGS_PROPERTY = "s2ca_first_stage"  # a collection property: the settings, content id and row count, as JSON


def _client(uri: str, token: str | None):
    try:
        from pymilvus import MilvusClient
    except ImportError as error:
        raise ImportError("The Milvus first stage needs pymilvus (and milvus-lite for a local file).") from error
    return MilvusClient(uri=uri, token=token or "")


class MilvusFirstStage:
    """A first stage whose candidates come from a Milvus collection (see the module docstring)."""

    def __init__(self, client, collection: str, projection: torch.Tensor, settings: dict[str, Any]):
        self.client = client
        self.collection = collection
        self.projection = projection
        self.settings = settings

    @classmethod
    def build(
        cls,
        index,
        uri: str,
        collection: str,
        index_type: str = "IVF_FLAT",
        index_params: dict | None = None,
        projection: str = "instance",
        dims: int | None = None,
        candidates: int = DEFAULT_CANDIDATES,
        nprobe: int | None = None,
        train_size: int = 131072,
        token: str | None = None,
        overwrite: bool = False,
    ) -> MilvusFirstStage:
        """Writes the projected vectors of the `VideoIndex` `index` into `collection` (primary key: the row number)
        and builds the Milvus index `index_type` (`index_params`, e.g. `{"nlist": 1024}`) for inner products."""
        from pymilvus import DataType

        client = _client(uri, token)
        if client.has_collection(collection):
            if not overwrite:
                raise VideoIndexError(f"Milvus collection {collection!r} exists at {uri}: pass overwrite=True.")
            client.drop_collection(collection)
        shards, _, matrix = projected_sample(index.path, index.manifest, projection, dims, train_size)
        settings = {
            "projection": projection,
            "dims": int(matrix.shape[1]),
            "index_type": index_type,
            "index_params": index_params or {},
            "candidates": candidates,
            "content_id": index.manifest["content_id"],
            "count": index.manifest["count"],
            "train_size": train_size,
            "projection_sha256": _matrix_sha256(matrix),
            "model_weights_sha256": index.manifest["model"].get("weights_sha256"),
        }
        if nprobe is not None:
            settings["nprobe"] = nprobe
        schema = client.create_schema(auto_id=False)
        schema.add_field(ROW_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=int(matrix.shape[1]))
        params = client.prepare_index_params()
        params.add_index(field_name=VECTOR_FIELD, index_type=index_type, metric_type="IP", params=index_params or {})
        client.create_collection(
            collection, schema=schema, index_params=params, properties={SETTINGS_PROPERTY: json.dumps(settings)}
        )
        row = 0
        for chunk in shards.chunks(INSERT_BATCH):
            projected = (chunk @ matrix).numpy()
            client.insert(
                collection, [{ROW_FIELD: row + i, VECTOR_FIELD: vector} for i, vector in enumerate(projected)]
            )
            row += chunk.shape[0]
        client.flush(collection)
        client.load_collection(collection)
        return cls(client, collection, matrix, settings)

    @classmethod
    def open(cls, index, uri: str, collection: str, token: str | None = None) -> MilvusFirstStage:
        """The first stage in `collection`, checked against the `VideoIndex` `index`."""
        client = _client(uri, token)
        if not client.has_collection(collection):
            raise VideoIndexError(
                f"No Milvus collection {collection!r} at {uri}: build it with MilvusFirstStage.build."
            )
        try:
            description = client.describe_collection(collection)
            settings = json.loads((description.get("properties") or {}).get(SETTINGS_PROPERTY) or "")
        except ValueError:
            raise VideoIndexError(f"Milvus collection {collection!r} was not written by MilvusFirstStage.") from None
        dims = [f.get("params", {}).get("dim") for f in description.get("fields", []) if f.get("name") == VECTOR_FIELD]
        if dims != [settings.get("dims")]:
            raise VideoIndexError(
                f"Milvus collection {collection!r} at {uri} holds vectors of dimension {dims[0] if dims else None}, "
                f"its settings say {settings.get('dims')}: it was changed; build it again (overwrite=True)."
            )
        if settings.get("content_id") != index.manifest["content_id"] or settings.get("count") != len(index):
            raise VideoIndexError(
                f"Milvus collection {collection!r} was built for other contents of {index.path} "
                f"({settings.get('count')} rows then, {len(index)} now): build it again (overwrite=True)."
            )
        # The same videos indexed by another model have the same content id: the weights tell them apart.
        weights = settings.get("model_weights_sha256")
        if weights is not None and weights != index.manifest["model"].get("weights_sha256"):
            raise VideoIndexError(
                f"Milvus collection {collection!r} was built from another model's vectors (weights sha256 "
                f"{weights[:12]}, {index.path}'s {str(index.manifest['model'].get('weights_sha256'))[:12]}): build it "
                "again (overwrite=True)."
            )
        # The projection is computed again from the same rows of the index (deterministic), and checked.
        _, _, matrix = projected_sample(
            index.path, index.manifest, settings["projection"], settings["dims"], settings["train_size"]
        )
        if _matrix_sha256(matrix) != settings["projection_sha256"]:
            raise VideoIndexError(
                f"The projection of Milvus collection {collection!r} cannot be reproduced here (another numerical "
                "library?): build the collection again from this machine (overwrite=True)."
            )
        client.load_collection(collection)
        return cls(client, collection, matrix, settings)

    def candidates(self, queries: torch.Tensor, count: int, nprobe: int | None = None) -> np.ndarray:
        """`(Q, count)` int64 candidate rows (-1 where Milvus found fewer)."""
        projected = (queries.detach().float().cpu() @ self.projection).numpy()
        search_params: dict[str, Any] = {"metric_type": "IP"}
        probes = nprobe if nprobe is not None else self.settings.get("nprobe")
        if probes is not None:
            search_params["params"] = {"nprobe": probes}
        results = self.client.search(
            self.collection,
            data=[vector.tolist() for vector in projected],
            limit=min(count, self.settings["count"]),
            anns_field=VECTOR_FIELD,
            search_params=search_params,
            output_fields=[ROW_FIELD],
        )
        rows = np.full((len(projected), count), -1, dtype=np.int64)
        for q, hits in enumerate(results):
            found = [int(hit[ROW_FIELD]) for hit in hits]
            rows[q, : len(found)] = found
        return rows


def _matrix_sha256(matrix: torch.Tensor) -> str:
    return hashlib.sha256(matrix.contiguous().numpy().tobytes()).hexdigest()


__all__ = ["MilvusFirstStage"]
