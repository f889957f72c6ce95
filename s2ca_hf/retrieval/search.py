"""Top-k search over stored vectors as plain tensor functions: exact chunked matrix products, and FAISS.

Both return `(Q, k)` float32 scores and int64 row numbers, best first, ties ordered by row number, so that an
index's answer does not depend on how its rows were chunked or which backend ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


COSINE_REFUSED = (
    "S2CA's score is the plain inner product phi . psi, and cosine ranks like it only when every stored vector has "
    "one norm (with the default usage weights every psi has norm sqrt(1 + lambda_e)); other weightings give norms "
    "that depend on the concepts an item uses, where a cosine would rank differently."
)
NORM_TOLERANCE = 1e-3  # relative spread of the norms below which they count as one (float16 storage: ~5e-4)


def vector_norm_range(vectors: torch.Tensor | Iterable[torch.Tensor]) -> tuple[float, float]:
    """The smallest and largest row norm of a `(N, E)` tensor or of re-iterable chunks (read once)."""
    chunks = [vectors] if isinstance(vectors, torch.Tensor) else vectors
    low, high = math.inf, 0.0
    for chunk in chunks:
        if len(chunk):
            norms = torch.linalg.vector_norm(chunk.float(), dim=1)
            low, high = min(low, float(norms.min())), max(high, float(norms.max()))
    return low, high


def check_metric(metric: str, vectors: torch.Tensor | Iterable[torch.Tensor] | None = None) -> float | None:
    """None for the inner product (S2CA's score). For `"cosine"`, the one norm of the stored `vectors` (cosine then
    ranks as the inner product does, and scores are the inner products over the norms); vectors whose norms differ
    are refused, with their range."""
    if metric in ("inner_product", "ip", "dot"):
        return None
    if metric != "cosine":
        raise ValueError(f"metric={metric!r} is not supported: use 'inner_product' (or 'cosine'). {COSINE_REFUSED}")
    if vectors is None:
        raise ValueError(f"metric='cosine' needs the stored vectors to check their norms. {COSINE_REFUSED}")
    low, high = vector_norm_range(vectors)
    if high - low > NORM_TOLERANCE * high:
        raise ValueError(
            f"metric='cosine' is refused: the stored vectors' norms range from {low:.4f} to {high:.4f}. "
            + COSINE_REFUSED
        )
    return high


def check_queries(queries: torch.Tensor) -> None:
    """Refuses query vectors with a NaN or infinite value: they rank nothing (FAISS returns no hit, a product scores
    NaN), and they mean the model or its input is broken, which an empty or arbitrary answer would hide."""
    finite = torch.isfinite(queries.detach()).reshape(queries.shape[0], -1).all(1) if queries.ndim > 1 else None
    if finite is None:
        finite = torch.isfinite(queries.detach()).all().reshape(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(
            f"Query vector(s) {', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''} of {len(finite)} hold "
            "NaN or infinite values: nothing can be ranked for them (is the model that encoded them broken?)."
        )


def check_nprobe(nprobe: int | None) -> None:
    if nprobe is not None and (isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1):
        raise ValueError(f"nprobe (the IVF lists a search visits) must be an integer >= 1, got {nprobe!r}.")


_FAISS_THREADS: list[int] = []  # FAISS's own thread count, read once before anything changes it


def faiss_threads(queries: int) -> int:
    """The OpenMP threads a FAISS search of `queries` queries gets: one per query, at most FAISS's default (the
    cores, or OMP_NUM_THREADS). FAISS spreads a batch over threads query by query, so a single query keeps one
    thread busy and the others only spin; with several searching processes on one machine those spinning threads
    took the cores from each other (eight clients at the default: 4.9 queries/s in all, at one thread each: ~210)."""
    faiss = import_faiss()
    if not _FAISS_THREADS:
        _FAISS_THREADS.append(faiss.omp_get_max_threads())
    return max(1, min(queries, _FAISS_THREADS[0]))


def faiss_search_with_threads(index, vectors, count: int):
    """`index.search(vectors, count)` with `faiss_threads(len(vectors))` OpenMP threads, restored afterwards."""
    faiss = import_faiss()
    threads = faiss_threads(len(vectors))
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        return index.search(vectors, count)
    finally:
        faiss.omp_set_num_threads(before)


def _merge_topk(
    best: tuple[torch.Tensor, torch.Tensor] | None, scores: torch.Tensor, indices: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if best is not None:
        scores, indices = torch.cat([best[0], scores], 1), torch.cat([best[1], indices], 1)
    top, position = scores.topk(min(k, scores.shape[1]), dim=1)
    return top, indices.gather(1, position)


def sort_hits(scores: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
    metric: str = "inner_product",
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
    (`half_products` forces either way). Ties are ordered by row number. `metric="cosine"` is accepted when every
    stored vector has one norm (`check_metric`): the same ranking, scores divided by both norms.
    """
    norm = check_metric(metric, vectors if metric == "cosine" else None)
    check_queries(queries)
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
    scores, indices = sort_hits(torch.cat(all_scores), torch.cat(all_indices))
    if norm is not None:  # cosine: the inner products over both norms (the order is the inner product's)
        scores = scores / (torch.linalg.vector_norm(queries, dim=1, keepdim=True).clamp(min=1e-12) * norm)
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


def import_faiss():
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
    metric: str = "inner_product",
):
    """A FAISS inner-product index over the vectors, added chunk by chunk (float32 copies are one chunk at a time).

    The default `"SQfp16"` stores float16, as the shards do, and decodes it exactly: scores equal exact search.
    Approximate factories (`"IVF4096,SQfp16"`, `"HNSW32"`, ...) are for collections past a few million videos;
    they are trained on the first `train_size` vectors.
    """
    check_metric(metric, vectors if metric == "cosine" else None)  # cosine: one norm, so inner products rank alike
    if "l2norm" in factory.lower():
        raise ValueError(f"The FAISS factory {factory!r} normalises the vectors: {COSINE_REFUSED}")
    faiss = import_faiss()
    try:
        index = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(
            f"FAISS cannot build the index factory {factory!r} ({_faiss_reason(error)}); see the FAISS wiki's "
            "'The index factory' for the syntax, e.g. SQfp16, IVF4096,SQfp16 or HNSW32."
        ) from None
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
        try:
            _train_and_flush(index, pending)
        except RuntimeError as error:  # e.g. fewer training vectors than an IVF factory's lists
            raise ValueError(
                f"FAISS could not train {factory!r} on {sum(p.shape[0] for p in pending)} vectors "
                f"({_faiss_reason(error)}): use a factory with fewer lists, or the exact backend."
            ) from None
    return index


def _faiss_reason(error: RuntimeError) -> str:
    # FAISS messages start with the C++ function and source line; the reason is what follows the last ": ".
    return str(error).strip().rsplit(": ", 1)[-1]


def _train_and_flush(index, pending: list) -> None:
    import numpy as np

    sample = np.concatenate(pending)
    if not index.is_trained:
        index.train(sample)
    index.add(sample)


def faiss_search(index, queries: torch.Tensor, k: int = 10, nprobe: int | None = None):
    """`(Q, k)` float32 scores and int64 rows from a FAISS index (ties ordered by row number, as in exact search)."""
    faiss = import_faiss()
    check_queries(queries)
    check_nprobe(nprobe)
    if nprobe is not None:
        try:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        except RuntimeError:
            raise ValueError(
                f"nprobe applies to IVF indexes only; this FAISS index ({type(index).__name__}) has none."
            ) from None
    vectors = queries.detach().float().cpu().contiguous().numpy()
    scores, indices = faiss_search_with_threads(index, vectors, min(k, index.ntotal))
    scores, indices = torch.from_numpy(scores), torch.from_numpy(indices).long()
    # FAISS pads with -1 when an approximate index finds fewer than k; keep only real rows.
    if (indices < 0).any():
        scores = scores.masked_fill(indices < 0, -math.inf)
    return sort_hits(scores, indices)


__all__ = ["build_faiss_index", "check_nprobe", "check_queries", "exact_search", "faiss_search"]
