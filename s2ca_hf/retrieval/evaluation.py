"""Encode once, score by blocks: the evaluation loop shared by `training/evaluate_model.py` and `training/train.py`.

Every text and every unique video is encoded once into the vectors phi and psi (`S2CAModel.get_text_features` /
`get_video_features`), whose dot product is the model's score; the metrics then read `phi @ psi.T` block by block.

A split whose rows carry `positive_video_ids` (every video of the split that the row's caption fits, its own
included) is evaluated with several correct videos per text, the content-aware ground truth of `retrieval_metrics`'s
`positives`; the real corpora have no such column and keep their single-positive protocols.
"""

from collections.abc import Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..modeling_s2ca import late_interaction_score
from .metrics import retrieval_metrics


POSITIVES_COLUMN = "positive_video_ids"


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def encode_texts(
    model, processor, texts: Sequence[str], batch_size: int = 256, progress: bool = True, max_length: int | None = None
) -> torch.Tensor:
    """phi for every text, `(T, E)` float32 on the CPU, in order. The model is put in eval mode."""
    model.eval()
    device = _device_of(model)
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="encode texts", disable=not progress, unit="batch"):
        batch = processor(text=list(texts[start : start + batch_size]), return_tensors="pt", max_length=max_length)
        embeds = model.get_text_features(
            batch["input_ids"].to(device), batch["attention_mask"].to(device)
        ).pooler_output
        chunks.append(embeds.float().cpu())
    if not chunks:
        raise ValueError("No text to encode.")
    return torch.cat(chunks)


@torch.inference_mode()
def encode_videos(model, batches: Iterable[dict], total: int | None = None, progress: bool = True) -> torch.Tensor:
    """psi for every video, `(V, E)` float32 on the CPU, from batches of `pixel_values_videos` and `frame_mask`
    (from the processor, or from the frame cache), in order."""
    model.eval()
    device = _device_of(model)
    dtype = next(model.parameters()).dtype
    chunks = []
    with tqdm(total=total, desc="encode videos", disable=not progress, unit="video") as bar:
        for batch in batches:
            pixels = batch["pixel_values_videos"].to(device=device, dtype=dtype)
            frame_mask = batch.get("frame_mask")
            frame_mask = None if frame_mask is None else frame_mask.to(device)
            chunks.append(model.get_video_features(pixels, frame_mask).pooler_output.float().cpu())
            bar.update(pixels.shape[0])
    if not chunks:
        raise ValueError("No video to encode.")
    return torch.cat(chunks)


@torch.inference_mode()
def encode_text_tokens(
    model, processor, texts: Sequence[str], batch_size: int = 256, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The late-interaction re-ranker's view of every text: token features `(T, L, D)` and token weights `(T, L)`,
    float32 on the CPU, padded to the longest text (`S2CAConceptOutput.token_features` / `token_weights`)."""
    model.eval()
    device = _device_of(model)
    features, weights = [], []
    for start in range(0, len(texts), batch_size):
        batch = processor(text=list(texts[start : start + batch_size]), return_tensors="pt", max_length=max_length)
        concepts = model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device)).concepts
        features.append(concepts.token_features.float().cpu())
        weights.append(concepts.token_weights.float().cpu())
    return pad_tokens(features, weights)


def pad_tokens(features: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches (or single texts) of token features `(..., L_i, D)` and weights `(..., L_i)` stacked into `(T, L, D)`
    and `(T, L)`, padded with zeros to the longest (a padded token has weight 0, so it adds nothing to a score)."""
    features = [f if f.dim() == 3 else f[None] for f in features]
    weights = [w if w.dim() == 2 else w[None] for w in weights]
    length = max(part.shape[1] for part in features)
    features = torch.cat([torch.nn.functional.pad(f, (0, 0, 0, length - f.shape[1])) for f in features])
    weights = torch.cat([torch.nn.functional.pad(w, (0, length - w.shape[1])) for w in weights])
    return features, weights


def reranked_scores(
    first: torch.Tensor, video_concepts: torch.Tensor, token_features, token_weights, candidates: int = 20
) -> torch.Tensor:
    """`(T, V)` scores of a two-stage search from the first stage's `(T, V)` scores (`phi @ psi.T`) and the videos'
    concepts `(V, K, D)` (`S2CAModel.video_concepts_from_embeds(psi)`): each text's top `candidates` videos re-scored
    by first stage + late interaction and kept above every other video, so that re-ranking reorders the shortlist
    and nothing else (what `s2ca-search --rerank` does over an index)."""
    top = first.topk(min(candidates, first.shape[1]), dim=1).indices  # (T, C)
    late = torch.cat(  # (T, C): a block of texts at a time, each against its candidates' concepts (128, C, K, D)
        [
            late_interaction_score(token_features[rows], token_weights[rows], video_concepts[top[rows]])
            for rows in (slice(start, start + 128) for start in range(0, first.shape[0], 128))
        ]
    )
    lift = float(first.max() - first.min()) + float(late.abs().max()) + 1.0
    return first.scatter(1, top, first.gather(1, top) + late + lift)


def processor_video_batches(processor, videos: Sequence, batch_size: int = 16) -> Iterator[dict]:
    """Model-ready batches from video file paths or decoded frames, through the processor (decodes on the fly)."""
    for start in range(0, len(videos), batch_size):
        yield processor(videos=list(videos[start : start + batch_size]), return_tensors="pt")


def evaluate_embeddings(
    text_embeds: torch.Tensor, video_embeds: torch.Tensor, text_to_video, positives=None, **metric_kwargs
) -> dict:
    """Retrieval metrics of `text_embeds @ video_embeds.T` (never materialised whole; see `retrieval_metrics`).
    `positives`: each text's correct video columns, its own included (`None`: its own video only)."""
    return retrieval_metrics(
        text_to_video=text_to_video,
        text_embeds=text_embeds,
        video_embeds=video_embeds,
        positives=positives,
        **metric_kwargs,
    )


def _checked_positive_ids(dataset, videos) -> list[set[str]]:
    """Each row's `positive_video_ids`, checked before anything is encoded: a row must list its own video, and every
    id must be a video of the split (evaluated, or missing from disk under `load_corpus(..., allow_missing=True)`).
    Anything else means the column was built for other data."""
    from s2ca_hf.data import corpus_info

    video_ids = list(videos["video_id"])
    if len(set(video_ids)) != len(video_ids):
        raise ValueError(f"`{POSITIVES_COLUMN}` names videos by id, but this split has several videos per id.")
    known_ids = set(video_ids) | set(corpus_info(dataset).get("missing_videos", []))
    checked = []
    for row, (ids, own_id) in enumerate(zip(dataset[POSITIVES_COLUMN], dataset["video_id"])):
        ids = set(ids or ())
        if own_id not in ids:
            raise ValueError(
                f"Row {row}'s `{POSITIVES_COLUMN}` {sorted(ids)} does not list its own video {own_id!r}: a caption "
                "always fits its own clip."
            )
        unknown = sorted(ids - known_ids)
        if unknown:
            raise ValueError(f"Row {row}'s `{POSITIVES_COLUMN}` lists {unknown}, which are no videos of this split.")
        checked.append(ids)
    return checked


def _positive_columns(
    positive_ids: list[set[str]], video_ids: Sequence[str], text_rows: Sequence[int], kept_videos: Sequence[int]
) -> tuple[list[list[int]], int]:
    """The correct video columns of each evaluated text (`text_rows`), the columns being the encoded videos
    (`kept_videos`, their `video_index` in column order), and how many listed positives were left out.

    A positive whose video was not encoded (undecodable and skipped, or missing from disk) is left out: it is no
    candidate, so it can be neither found nor missed.
    """
    column_of_id = {video_ids[video_index]: column for column, video_index in enumerate(kept_videos)}
    positives = [sorted(column_of_id[i] for i in positive_ids[row] if i in column_of_id) for row in text_rows]
    listed = sum(len(positive_ids[row]) for row in text_rows)
    return positives, listed - sum(len(columns) for columns in positives)


def evaluate_corpus(
    model,
    processor,
    dataset,
    *,
    frame_cache=None,
    batch_size: int = 16,
    text_batch_size: int = 256,
    num_workers: int = 0,
    on_error: str = "raise",
    progress: bool = True,
    post_processing: Sequence[str] = (),
    query_bank_texts: Sequence[str] | None = None,
    multi_positive: bool | None = None,
    rerank_candidates: int = 20,
    **metric_kwargs,
) -> dict:
    """Encodes every text and every unique video of a corpus split once and computes the retrieval metrics.

    `dataset` is a split from `s2ca_hf.data.load_corpus`. Videos come from `frame_cache` when given (a `FrameCache`
    built for this processor), else they are decoded from the files with the processor's frame policy and each
    row's window. With `on_error="skip"`, undecodable videos and their texts are left out and counted.
    `post_processing` lists extra evaluations to report separately (`"dsl"`, `"qb_norm"`; QB-Norm needs
    `query_bank_texts`, training captions).

    `multi_positive`: whether a text's correct videos are those of the split's `positive_video_ids` column (the
    videos its caption fits, its own included) rather than its own video alone. `None` uses the column when the
    split has it, `False` ignores it, `True` requires it. The result's `protocol` says which (`"positives"`), and
    with the column how many listed positives were left out with their unevaluated videos (`"positives_left_out"`).

    A model with the late-interaction re-ranker (`late_interaction_weight > 0`) is also evaluated as a two-stage
    search: each text's top `rerank_candidates` videos re-ranked (`reranked_scores`), reported as the metrics'
    `"text_to_video_reranked"`.

    Returns `{"metrics": {...}, "post_processing": {name: {...}}, "counts": {"texts", "videos",
    "skipped_videos", "skipped_texts"}, "protocol": {...}, "embeddings": {"text", "video", "text_to_video",
    "positives"}}`.
    """
    from torch.utils.data import DataLoader

    from s2ca_hf.data import VideoTextCollator, corpus_videos

    if multi_positive is None:
        multi_positive = POSITIVES_COLUMN in dataset.column_names
    elif multi_positive and POSITIVES_COLUMN not in dataset.column_names:
        raise ValueError(
            f"`multi_positive=True` needs a `{POSITIVES_COLUMN}` column (each text's correct video ids); the split "
            f"has only {dataset.column_names}."
        )
    videos = corpus_videos(dataset)
    positive_ids = _checked_positive_ids(dataset, videos) if multi_positive else None
    collator = VideoTextCollator(processor, frame_cache=frame_cache, on_error=on_error, return_video_index=True)
    loader = DataLoader(videos, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    kept_videos: list[int] = []

    def batches():
        for batch in loader:
            if batch:
                kept_videos.extend(batch.pop("video_index").tolist())
                yield batch

    video_embeds = encode_videos(model, batches(), total=len(videos), progress=progress)
    # Texts whose video could not be decoded are dropped; the others point at their video's row among the kept.
    position = {video_index: row for row, video_index in enumerate(kept_videos)}
    all_video_index, all_texts = list(dataset["video_index"]), list(dataset["text"])
    text_rows = [row for row, video_index in enumerate(all_video_index) if video_index in position]
    texts = [all_texts[row] for row in text_rows]
    text_to_video = [position[all_video_index[row]] for row in text_rows]
    positives, positives_left_out = None, 0
    if positive_ids is not None:
        positives, positives_left_out = _positive_columns(
            positive_ids, list(videos["video_id"]), text_rows, kept_videos
        )
    text_embeds = encode_texts(model, processor, texts, batch_size=text_batch_size, progress=progress)

    result = evaluate_embeddings(text_embeds, video_embeds, text_to_video, positives, **metric_kwargs)
    metrics = {"text_to_video": result["text_to_video"], "video_to_text": result["video_to_text"]}
    if getattr(model.config, "has_late_interaction", False):
        token_features, token_weights = encode_text_tokens(model, processor, texts, batch_size=text_batch_size)
        first = text_embeds @ video_embeds.t()
        concepts = model.video_concepts_from_embeds(video_embeds)
        reranked = reranked_scores(first, concepts, token_features, token_weights, candidates=rerank_candidates)
        metrics["text_to_video_reranked"] = retrieval_metrics(
            reranked, text_to_video, positives=positives, **metric_kwargs
        )["text_to_video"]
    extra = {}
    for method in post_processing:
        kwargs = dict(metric_kwargs, post_processing=method)
        if method == "qb_norm":
            if not query_bank_texts:
                raise ValueError("QB-Norm needs `query_bank_texts` (training captions).")
            kwargs["query_bank_text_embeds"] = encode_texts(
                model, processor, list(query_bank_texts), batch_size=text_batch_size, progress=progress
            )
        post = evaluate_embeddings(text_embeds, video_embeds, text_to_video, positives, **kwargs)
        extra[method] = {"text_to_video": post["text_to_video"], "video_to_text": post["video_to_text"]}
    return {
        "metrics": metrics,
        "post_processing": extra,
        "protocol": {
            **result["protocol"],
            **({"positives_left_out": positives_left_out} if multi_positive else {}),
        },
        "counts": {
            "texts": len(text_rows),
            "videos": len(kept_videos),
            "skipped_videos": len(videos) - len(kept_videos),
            "skipped_texts": len(dataset) - len(text_rows),
        },
        "embeddings": {
            "text": text_embeds,
            "video": video_embeds,
            "text_to_video": text_to_video,
            "positives": positives,
        },
    }


__all__ = [
    "encode_texts",
    "encode_videos",
    "evaluate_corpus",
    "evaluate_embeddings",
    "encode_text_tokens",
    "pad_tokens",
    "reranked_scores",
    "processor_video_batches",
]
