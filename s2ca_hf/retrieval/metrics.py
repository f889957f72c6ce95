"""Text-video retrieval metrics: R@K, MdR, MnR for text->video and video->text, in the protocols the field uses.

The spec is CLIP4Clip's evaluation (`metrics.py`, `main_task_retrieval.py`): R@K in percent, 1-based median and mean
ranks. Two things are done differently by default, and each has a switch that restores the reference behaviour:

* Ties. CLIP4Clip's `compute_metrics` counts every column tied with the ground truth as a separate rank (so a
  constant row inflates the rank list; ArrowLuo/CLIP4Clip issue #80) and its multi-caption function breaks ties by
  argsort order. By default a tied ground truth gets the average of the tied positions, as collaborative-experts and
  QB-Norm do. `ties="clip4clip"` reproduces CLIP4Clip exactly (with a stable sort where it used an unstable one).
* NaN similarities raise an error instead of silently dropping the query.

Everything is computed block by block: a similarity matrix, or text and video features whose product is never
materialised, is read `chunk_size` rows or columns at a time, and the numbers equal the full computation.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch


KS = (1, 5, 10, 50)
TIES = ("average", "clip4clip")
VIDEO_TO_TEXT = ("clip4clip", "ce")
POST_PROCESSING = (None, "dsl", "qb_norm")


class _Scores:
    """Blocks of the (optionally post-processed) text x video score matrix, from a matrix or from features."""

    def __init__(self, sim=None, text_embeds=None, video_embeds=None, chunk_size: int = 1024):
        if (sim is None) == (text_embeds is None or video_embeds is None):
            raise ValueError("Pass either `sim` or both `text_embeds` and `video_embeds`.")
        self.sim = None if sim is None else _as_tensor(sim, "sim")
        self.text = None if text_embeds is None else _as_tensor(text_embeds, "text_embeds")
        self.video = None if video_embeds is None else _as_tensor(video_embeds, "video_embeds")
        if self.sim is not None:
            if self.sim.dim() != 2:
                raise ValueError(
                    f"`sim` must be a 2-D [num_texts, num_videos] matrix, got shape {tuple(self.sim.shape)}."
                )
            self.shape = tuple(self.sim.shape)
        else:
            if self.text.dim() != 2 or self.video.dim() != 2 or self.text.shape[1] != self.video.shape[1]:
                raise ValueError(
                    f"Feature shapes do not match: text {tuple(self.text.shape)}, video {tuple(self.video.shape)}."
                )
            self.shape = (self.text.shape[0], self.video.shape[0])
        self.chunk_size = chunk_size
        self.transform: Callable[[torch.Tensor, slice, slice], torch.Tensor] | None = None

    def block(self, rows: slice, cols: slice) -> torch.Tensor:
        if self.sim is not None:
            block = self.sim[rows, cols]
        else:
            block = self.text[rows] @ self.video[cols].t()
        if torch.isnan(block).any():
            i, j = torch.nonzero(torch.isnan(block))[0].tolist()
            raise ValueError(
                f"The similarity of text {i + (rows.start or 0)} and video {j + (cols.start or 0)} is NaN: "
                "a NaN score cannot be ranked."
            )
        return block if self.transform is None else self.transform(block, rows, cols)

    def row_blocks(self):
        for start in range(0, self.shape[0], self.chunk_size):
            rows = slice(start, min(start + self.chunk_size, self.shape[0]))
            yield rows, self.block(rows, slice(None))

    def col_blocks(self):
        for start in range(0, self.shape[1], self.chunk_size):
            cols = slice(start, min(start + self.chunk_size, self.shape[1]))
            yield cols, self.block(slice(None), cols)


def _as_tensor(values, name: str) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if not torch.is_floating_point(tensor):
        tensor = tensor.double()
    # float64 keeps ties exact and sums stable; the matrices here are scores, not activations.
    return tensor.detach().to("cpu", torch.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Post-processing (reported separately, never mixed with plain numbers)
# ---------------------------------------------------------------------------------------------------------------------


def _apply_dsl(scores: _Scores) -> None:
    """Inference-time dual softmax as TS2-Net: `sim * softmax(sim, axis=0)` (softmax over the texts of each video)."""
    log_norm = torch.cat([torch.logsumexp(block, dim=0) for _, block in scores.col_blocks()])
    scores.transform = lambda block, rows, cols: block * torch.exp(block - log_norm[cols])


def _apply_qb_norm(scores: _Scores, query_bank: "_Scores", beta: float, k: int) -> None:
    """QB-Norm's dynamic inverted softmax with a bank of training captions (QBN `dynamic_inverted_softmax.py`)."""
    if query_bank.shape[1] != scores.shape[1]:
        raise ValueError(f"The query bank scores {query_bank.shape[1]} videos but the test set has {scores.shape[1]}.")
    retrieved = torch.zeros(scores.shape[1], dtype=torch.bool)
    normalizing_sum = torch.zeros(scores.shape[1], dtype=torch.float64)
    for _, block in query_bank.row_blocks():
        retrieved[block.topk(min(k, block.shape[1]), dim=1).indices.flatten()] = True
        normalizing_sum += torch.exp(beta * block).sum(dim=0)
    # Only the queries whose top-1 video is one the bank retrieves are renormalised.
    renormalise = torch.cat([retrieved[block.argmax(dim=1)] for _, block in scores.row_blocks()])

    def transform(block, rows, cols):
        normalised = torch.exp(beta * block) / normalizing_sum[cols]
        return torch.where(renormalise[rows].unsqueeze(1), normalised, block)

    scores.transform = transform


# ---------------------------------------------------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------------------------------------------------


def _gt_ranks(rows: torch.Tensor, gt_columns: torch.Tensor, ties: str) -> list[torch.Tensor] | torch.Tensor:
    """0-based rank of each row's ground-truth column.

    `average`: greater + (equal - 1) / 2. `clip4clip`: every tied position is a separate entry (a list of tensors),
    as `compute_metrics` counts them.
    """
    gt = rows.gather(1, gt_columns.unsqueeze(1))
    greater = (rows > gt).sum(dim=1)
    equal = (rows == gt).sum(dim=1)
    if ties == "average":
        return greater.double() + (equal.double() - 1) / 2
    return [torch.arange(g, g + e, dtype=torch.float64) for g, e in zip(greater.tolist(), equal.tolist())]


def _stable_order_ranks(rows: torch.Tensor, gt_columns: torch.Tensor) -> torch.Tensor:
    """Rank under a stable descending argsort: ties go to the earlier column (CLIP4Clip's double argsort, made
    deterministic)."""
    gt = rows.gather(1, gt_columns.unsqueeze(1))
    greater = (rows > gt).sum(dim=1)
    columns = torch.arange(rows.shape[1]).unsqueeze(0)
    earlier_ties = ((rows == gt) & (columns < gt_columns.unsqueeze(1))).sum(dim=1)
    return (greater + earlier_ties).double()


def _summary(ranks_0based: torch.Tensor, ks: Sequence[int], median: str = "average") -> dict:
    ranks = ranks_0based.double() + 1
    if ranks.numel() == 0:
        raise ValueError("No query to evaluate.")
    if median == "lower":  # torch.median, which CLIP4Clip's multi-caption metric uses
        middle = float(torch.sort(ranks).values[(ranks.numel() - 1) // 2])
    else:  # numpy's median: the two middle values averaged
        middle = float(np.median(ranks.numpy()))
    result = {f"R@{k}": float(100.0 * (ranks <= k).double().mean()) for k in ks}
    result["MdR"] = middle
    result["MnR"] = float(ranks.mean())
    result["std_rank"] = float(ranks.std()) if ranks.numel() > 1 else 0.0
    return result


def _group_max(block: torch.Tensor, text_to_video: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[T, c] scores -> [num_groups, c]: each caption group (video) scores as its best caption."""
    out = block.new_full((num_groups, block.shape[1]), -math.inf)
    index = text_to_video.unsqueeze(1).expand(-1, block.shape[1])
    return out.scatter_reduce(0, index, block, reduce="amax", include_self=True)


# ---------------------------------------------------------------------------------------------------------------------
# The public function
# ---------------------------------------------------------------------------------------------------------------------


def retrieval_metrics(
    sim=None,
    text_to_video=None,
    *,
    text_embeds=None,
    video_embeds=None,
    ties: str = "average",
    video_to_text: str = "clip4clip",
    post_processing: str | None = None,
    query_bank=None,
    query_bank_text_embeds=None,
    qb_norm_beta: float = 20.0,
    qb_norm_k: int = 1,
    ks: Sequence[int] = KS,
    chunk_size: int = 1024,
) -> dict:
    """Text->video and video->text retrieval metrics.

    Args:
        sim (`[num_texts, num_videos]` tensor or array): scores; or give `text_embeds` `[T, E]` and `video_embeds`
            `[V, E]`, and the scores `text_embeds @ video_embeds.T` are computed block by block, never whole.
        text_to_video (`[num_texts]` ints, *optional*): the column of each text's video. `None`: the diagonal
            (one caption per video, text i describes video i). Several texts may share a video (MSVD): then
            text->video ranks every caption, and video->text follows `video_to_text`.
        ties (`str`): `"average"` (default; a tied ground truth gets the mean of the tied positions) or
            `"clip4clip"` (CLIP4Clip's functions exactly, tie behaviour included, to match published numbers).
        video_to_text (`str`): with several captions per video, `"clip4clip"` ranks each video against the caption
            groups, a group scoring as its best caption; `"ce"` (collaborative experts / VSE) ranks the best correct
            caption among all captions. Identical with one caption per video.
        post_processing (`str`, *optional*): `"dsl"` (TS2-Net's inference-time dual softmax over the texts of the
            test set) or `"qb_norm"` (QB-Norm, needing `query_bank` `[bank_texts, num_videos]` scores of training
            captions, or `query_bank_text_embeds`). Both use the whole test set: report them apart from plain numbers.
        ks: the K of R@K.
        chunk_size: rows or columns of scores held in memory at once.

    Returns:
        `{"text_to_video": {"R@1", "R@5", "R@10", "R@50", "MdR", "MnR", "std_rank"}, "video_to_text": {...},
        "protocol": {...}}`; R@K in percent, ranks 1-based, MdR the median with the two middle values averaged
        (CLIP4Clip's multi-caption text->video takes the lower one: so does `ties="clip4clip"` there).
    """
    if ties not in TIES:
        raise ValueError(f"`ties` must be one of {TIES}, got {ties!r}.")
    if video_to_text not in VIDEO_TO_TEXT:
        raise ValueError(f"`video_to_text` must be one of {VIDEO_TO_TEXT}, got {video_to_text!r}.")
    if post_processing not in POST_PROCESSING:
        raise ValueError(f"`post_processing` must be one of {POST_PROCESSING}, got {post_processing!r}.")
    scores = _Scores(sim, text_embeds, video_embeds, chunk_size)
    num_texts, num_videos = scores.shape

    if text_to_video is None:
        if num_texts != num_videos:
            raise ValueError(
                f"Without `text_to_video` the ground truth is the diagonal, which needs as many texts as videos; "
                f"got {num_texts} texts and {num_videos} videos."
            )
        text_to_video = torch.arange(num_texts)
    text_to_video = torch.as_tensor(np.asarray(text_to_video), dtype=torch.long).flatten()
    if text_to_video.numel() != num_texts:
        raise ValueError(f"`text_to_video` has {text_to_video.numel()} entries for {num_texts} texts.")
    if num_texts and (text_to_video.min() < 0 or text_to_video.max() >= num_videos):
        raise ValueError(f"`text_to_video` must hold video columns in [0, {num_videos}).")
    captions_per_video = torch.bincount(text_to_video, minlength=num_videos)
    # A video no text describes is still a distractor for text->video; it just cannot be a video->text query.
    has_text = captions_per_video > 0
    if not has_text.any():
        raise ValueError("No video has a caption.")
    single = bool((captions_per_video[has_text] == 1).all())

    if post_processing == "dsl":
        _apply_dsl(scores)
    elif post_processing == "qb_norm":
        if query_bank is None and query_bank_text_embeds is None:
            raise ValueError("QB-Norm needs `query_bank` scores (or `query_bank_text_embeds`) of training captions.")
        bank = (
            _Scores(query_bank, chunk_size=chunk_size)
            if query_bank is not None
            else _Scores(text_embeds=query_bank_text_embeds, video_embeds=scores.video, chunk_size=chunk_size)
        )
        _apply_qb_norm(scores, bank, qb_norm_beta, qb_norm_k)

    # Text -> video: every caption is a query over all videos.
    t2v_ranks = []
    for rows, block in scores.row_blocks():
        gt = text_to_video[rows]
        if ties == "clip4clip" and not single:
            t2v_ranks.append(_stable_order_ranks(block, gt))
        else:
            t2v_ranks.extend(_as_list(_gt_ranks(block, gt, ties)))
    t2v = _summary(torch.cat(t2v_ranks), ks, median="lower" if ties == "clip4clip" and not single else "average")

    # Video -> text.
    v2t_ranks = []
    for cols, block in scores.col_blocks():
        queries = torch.arange(num_videos)[cols]
        block, queries = block[:, has_text[cols]], queries[has_text[cols]]
        if video_to_text == "clip4clip" or single:
            group_scores = _group_max(block, text_to_video, num_videos).t()  # [c queries, V groups]
            v2t_ranks.extend(_as_list(_gt_ranks(group_scores, queries, ties)))
        else:
            best_correct = _group_max(block, text_to_video, num_videos).t().gather(1, queries.unsqueeze(1))
            captions = block.t()  # [c queries, T captions]
            greater = (captions > best_correct).sum(dim=1).double()
            equal = (captions == best_correct).sum(dim=1)
            if ties == "average":
                v2t_ranks.append(greater + (equal.double() - 1) / 2)
            else:
                pairs = zip(greater.long().tolist(), equal.tolist())
                v2t_ranks.extend(torch.arange(g, g + e, dtype=torch.float64) for g, e in pairs)
    v2t = _summary(torch.cat(v2t_ranks), ks)

    return {
        "text_to_video": t2v,
        "video_to_text": v2t,
        "protocol": {
            "captions_per_video": "single" if single else "multiple",
            "num_texts": num_texts,
            "num_videos": num_videos,
            "num_videos_without_text": int((~has_text).sum()),
            "ties": ties,
            "video_to_text": "caption groups scored by their best caption (CLIP4Clip)"
            if video_to_text == "clip4clip" or single
            else "best correct caption among all captions (CE/VSE)",
            "post_processing": post_processing,
        },
    }


def _as_list(ranks) -> list[torch.Tensor]:
    return ranks if isinstance(ranks, list) else [ranks]


__all__ = ["retrieval_metrics"]
