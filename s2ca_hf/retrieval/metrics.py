"""Text-video retrieval metrics: R@K, MdR, MnR for text->video and video->text, in the protocols the field uses.

The spec is CLIP4Clip's evaluation (`metrics.py`, `main_task_retrieval.py`): R@K in percent, 1-based median and mean
ranks. Two things are done differently by default, and each has a switch that restores the reference behaviour:

* Ties. CLIP4Clip's `compute_metrics` counts every column tied with the ground truth as a separate rank (so a
  constant row inflates the rank list; ArrowLuo/CLIP4Clip issue #80) and its multi-caption function breaks ties by
  argsort order. By default a tied ground truth gets the average of the tied positions, as collaborative-experts and
  QB-Norm do. `ties="clip4clip"` reproduces CLIP4Clip exactly (with a stable sort where it used an unstable one).
* NaN similarities raise an error instead of silently dropping the query.

The ground truth is by default each text's source video, the protocol of the real corpora. With `positives`, a text
may instead have several correct videos (a caption that names only part of a scene fits every clip showing that
part): a query is then ranked by its best-scoring correct answer, and the other correct answers are taken out of the
ranking, so that two equally correct videos never compete (see `retrieval_metrics` for the exact definitions).

Everything is computed block by block: a similarity matrix, or text and video features whose product is never
materialised, is read `chunk_size` rows or columns at a time, and the numbers equal the full computation. Content
positives are kept as sorted (text, video) pairs, and a mask is built only for the block being read.
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
# Content positives: several correct videos per text
# ---------------------------------------------------------------------------------------------------------------------


class _Positives:
    """The correct (text, video) pairs, sorted and without duplicates, read back as block masks.

    A dense `[num_texts, num_videos]` mask would be as large as the score matrix that the blocks exist to avoid, so
    the pairs are stored instead (sorted by text, and indexed by video) and each block gets a mask of its own shape.
    """

    def __init__(self, texts: torch.Tensor, videos: torch.Tensor, num_texts: int, num_videos: int):
        pairs = torch.unique(texts * num_videos + videos)  # sorted by text, then video; duplicates merged
        self.texts, self.videos = pairs // num_videos, pairs % num_videos
        self.num_texts, self.num_videos = num_texts, num_videos
        self.text_starts = torch.searchsorted(self.texts, torch.arange(num_texts + 1))
        self.by_video = torch.argsort(self.videos, stable=True)
        self.video_starts = torch.searchsorted(self.videos[self.by_video], torch.arange(num_videos + 1))

    def texts_per_video(self) -> torch.Tensor:
        return self.video_starts.diff()

    def row_mask(self, rows: slice) -> torch.Tensor:
        """`[rows, num_videos]`: which videos are correct for each text of the block."""
        first, last = self.text_starts[rows.start], self.text_starts[rows.stop]
        mask = torch.zeros(rows.stop - rows.start, self.num_videos, dtype=torch.bool)
        mask[self.texts[first:last] - rows.start, self.videos[first:last]] = True
        return mask

    def column_mask(self, cols: slice) -> torch.Tensor:
        """`[num_texts, cols]`: which texts are correct for each video of the block."""
        pairs = self.by_video[self.video_starts[cols.start] : self.video_starts[cols.stop]]
        mask = torch.zeros(self.num_texts, cols.stop - cols.start, dtype=torch.bool)
        mask[self.texts[pairs], self.videos[pairs] - cols.start] = True
        return mask


def _content_positives(positives, text_to_video: torch.Tensor, num_videos: int) -> _Positives:
    """Validates `positives` (column lists, or a boolean matrix) and checks that every text's own video is in them."""
    num_texts = text_to_video.numel()
    if isinstance(positives, torch.Tensor):
        positives = positives.detach().cpu().numpy()
    if isinstance(positives, np.ndarray) and positives.dtype != bool:
        positives = list(positives)  # a rectangular integer array: one row of columns per text
    if not isinstance(positives, np.ndarray):
        rows = [np.asarray(sorted(row) if isinstance(row, (set, frozenset)) else row) for row in positives]
        if len(rows) != num_texts:
            raise ValueError(f"`positives` has {len(rows)} entries for {num_texts} texts.")
        # A row of booleans would otherwise read as the columns 0 and 1: booleans make the whole input a matrix.
        if any(row.dtype == bool for row in rows):
            if not all(row.dtype == bool and row.shape == (num_videos,) for row in rows):
                raise ValueError(
                    f"`positives` mixes boolean rows with something else: as a mask, every row must hold "
                    f"{num_videos} booleans (one per video)."
                )
            positives = np.stack(rows) if rows else np.zeros((0, num_videos), dtype=bool)
    if isinstance(positives, np.ndarray):
        if positives.shape != (num_texts, num_videos):
            raise ValueError(
                f"A boolean `positives` mask must be [num_texts, num_videos] = [{num_texts}, {num_videos}], "
                f"got shape {positives.shape}."
            )
        texts, videos = (torch.from_numpy(index.astype(np.int64)) for index in np.nonzero(positives))
    else:
        texts_list, videos_list = [], []
        for text, row in enumerate(rows):
            row = row.reshape(-1)
            if row.size and row.dtype.kind not in "iu":
                raise ValueError(f"`positives` of text {text} must hold integer video columns, got {row.tolist()}.")
            if row.size and (row.min() < 0 or row.max() >= num_videos):
                bad = int(row[(row < 0) | (row >= num_videos)][0])
                raise ValueError(f"`positives` of text {text} holds column {bad}, outside [0, {num_videos}).")
            texts_list.append(np.full(row.size, text, dtype=np.int64))
            videos_list.append(row.astype(np.int64))
        texts = torch.from_numpy(np.concatenate(texts_list)) if rows else torch.zeros(0, dtype=torch.long)
        videos = torch.from_numpy(np.concatenate(videos_list)) if rows else torch.zeros(0, dtype=torch.long)
    result = _Positives(texts, videos, num_texts, num_videos)
    own = torch.arange(num_texts) * num_videos + text_to_video
    missing = ~torch.isin(own, result.texts * num_videos + result.videos)
    if missing.any():
        text = int(torch.nonzero(missing)[0])
        raise ValueError(
            f"`positives` of text {text} does not hold its own video (column {int(text_to_video[text])}): a text's "
            "source clip is always one of its correct answers."
        )
    return result


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


def _best_positive_ranks(
    rows: torch.Tensor, positive: torch.Tensor, ties: str, stable_order: bool = False
) -> list[torch.Tensor] | torch.Tensor:
    """0-based rank of each row's best-scoring positive among the row's non-positive columns.

    The other positives are out of the ranking: `greater` counts the non-positives scoring strictly higher than the
    best positive, `tied` the non-positives scoring the same. `average`: greater + tied / 2, the mean position of the
    best positive and the non-positives tied with it. `clip4clip`: each of those tied positions as a separate entry,
    as `_gt_ranks` counts them; with `stable_order`, the position under a stable descending sort instead, where the
    non-positives tied with the best positive count only when their column comes before the first positive of that
    score (`_stable_order_ranks`). With the own column as the only positive, these equal `_gt_ranks` and
    `_stable_order_ranks`.
    """
    best = rows.masked_fill(~positive, -math.inf).amax(dim=1, keepdim=True)
    wrong = ~positive
    greater = ((rows > best) & wrong).sum(dim=1)
    tied_wrong = (rows == best) & wrong
    if stable_order:
        columns = torch.arange(rows.shape[1]).unsqueeze(0)
        first_best = torch.where(positive & (rows == best), columns, rows.shape[1]).amin(dim=1, keepdim=True)
        return (greater + (tied_wrong & (columns < first_best)).sum(dim=1)).double()
    tied = tied_wrong.sum(dim=1)
    if ties == "average":
        return greater.double() + tied.double() / 2
    return [torch.arange(g, g + t + 1, dtype=torch.float64) for g, t in zip(greater.tolist(), tied.tolist())]


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


def _positive_groups(
    block: torch.Tensor, positive: torch.Tensor, text_to_video: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, c] scores and positives -> [c, num_groups] scores and positives of the caption groups.

    A group holding a positive caption is a positive and scores as its best positive caption: it is one correct
    answer, and its other captions do not compete with it. Every other group scores as its best caption.
    """
    has_positive = _group_max(positive.double(), text_to_video, num_groups) > 0
    positive_scores = _group_max(block.masked_fill(~positive, -math.inf), text_to_video, num_groups)
    scores = torch.where(has_positive, positive_scores, _group_max(block, text_to_video, num_groups))
    return scores.t(), has_positive.t()


def _as_list(ranks) -> list[torch.Tensor]:
    return ranks if isinstance(ranks, list) else [ranks]


def _source_video_v2t_ranks(
    block: torch.Tensor, cols: slice, text_to_video: torch.Tensor, has_text: torch.Tensor, grouped: bool, ties: str
) -> list[torch.Tensor]:
    """Video->text ranks of a `[T, c]` block of video columns, each video's own captions being the correct ones."""
    num_videos = has_text.numel()
    queries = torch.arange(num_videos)[cols]
    block, queries = block[:, has_text[cols]], queries[has_text[cols]]
    if grouped:
        group_scores = _group_max(block, text_to_video, num_videos).t()  # [c queries, V groups]
        return _as_list(_gt_ranks(group_scores, queries, ties))
    best_correct = _group_max(block, text_to_video, num_videos).t().gather(1, queries.unsqueeze(1))
    captions = block.t()  # [c queries, T captions]
    greater = (captions > best_correct).sum(dim=1).double()
    # Collaborative experts ranks each correct caption among all captions: a tied own caption shares the positions.
    equal = (captions == best_correct).sum(dim=1)
    if ties == "average":
        return [greater + (equal.double() - 1) / 2]
    pairs = zip(greater.long().tolist(), equal.tolist())
    return [torch.arange(g, g + e, dtype=torch.float64) for g, e in pairs]


def _content_v2t_ranks(
    block: torch.Tensor,
    positive: torch.Tensor,
    text_to_video: torch.Tensor,
    num_videos: int,
    grouped: bool,
    ties: str,
) -> list[torch.Tensor]:
    """Video->text ranks of a `[T, c]` block of video columns, `positive` `[T, c]` marking each video's correct
    texts; a video that no text lists is not a query."""
    is_query = positive.any(dim=0)
    block, positive = block[:, is_query], positive[:, is_query]
    if grouped:
        group_scores, group_positive = _positive_groups(block, positive, text_to_video, num_videos)
        return _as_list(_best_positive_ranks(group_scores, group_positive, ties))
    return _as_list(_best_positive_ranks(block.t(), positive.t(), ties))


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
    positives=None,
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
        positives (*optional*): the correct videos of each text, when a caption fits more clips than its own: per
            text a list or set of video columns, or a boolean `[num_texts, num_videos]` mask (numpy, torch, or
            nested lists of `bool`; a 2-D integer array is read as column lists, one row per text). Each text's own
            video (`text_to_video`) must be among its positives. `None`: the own video is the only correct answer.
            With positives, a query is ranked by its best-scoring positive among the non-positives only:

            * text->video: rank = the non-positive videos scoring strictly higher than the text's best positive
              video, plus, under `ties="average"`, half the non-positives tied with it (the mean position of the
              best positive and the non-positives it ties). A correct video above every wrong one is a hit
              wherever the other correct videos are. `ties="clip4clip"` counts each of those tied positions as an
              entry, and with several captions per video places the best positive by a stable sort (a tied
              non-positive counts if its column comes before the first positive of that score), as without
              positives.
            * video->text: a video's positive texts are those listing it; videos that no text lists are not
              queries. `video_to_text="clip4clip"`: a caption group holding a positive caption is correct and
              scores as its best positive caption, every other group as its best caption; `"ce"`: the best
              positive caption among the non-positive captions. Ties as above.

            With each text's own video as its only positive, the numbers equal those without `positives`, with one
            exception: under `video_to_text="ce"`, collaborative experts lets a video's own captions tied at its best
            score share the tied positions, while positives never compete with each other.

    Returns:
        `{"text_to_video": {"R@1", "R@5", "R@10", "R@50", "MdR", "MnR", "std_rank"}, "video_to_text": {...},
        "protocol": {...}}`; R@K in percent, ranks 1-based, MdR the median with the two middle values averaged
        (CLIP4Clip's multi-caption text->video takes the lower one: so does `ties="clip4clip"` there). The protocol's
        `"positives"` is `"source video"`, or `"content"` with `"mean_positives_per_text"` and
        `"num_videos_without_positive_text"`.
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
    content = None if positives is None else _content_positives(positives, text_to_video, num_videos)

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
        if content is not None:
            ranks = _best_positive_ranks(
                block, content.row_mask(rows), ties, stable_order=ties == "clip4clip" and not single
            )
            t2v_ranks.extend(_as_list(ranks))
        elif ties == "clip4clip" and not single:
            t2v_ranks.append(_stable_order_ranks(block, gt))
        else:
            t2v_ranks.extend(_as_list(_gt_ranks(block, gt, ties)))
    t2v = _summary(torch.cat(t2v_ranks), ks, median="lower" if ties == "clip4clip" and not single else "average")

    # Video -> text: every video with a correct text is a query over the texts (or their groups).
    grouped = video_to_text == "clip4clip" or single
    v2t_ranks = []
    for cols, block in scores.col_blocks():
        if content is None:
            v2t_ranks.extend(_source_video_v2t_ranks(block, cols, text_to_video, has_text, grouped, ties))
        else:
            v2t_ranks.extend(
                _content_v2t_ranks(block, content.column_mask(cols), text_to_video, num_videos, grouped, ties)
            )
    v2t = _summary(torch.cat(v2t_ranks), ks)

    if content is None:
        ground_truth = {"positives": "source video"}
    else:
        ground_truth = {
            "positives": "content",
            "mean_positives_per_text": content.texts.numel() / num_texts,
            "num_videos_without_positive_text": int((content.texts_per_video() == 0).sum()),
        }
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
            if grouped
            else "best correct caption among all captions (CE/VSE)",
            "post_processing": post_processing,
            **ground_truth,
        },
    }


__all__ = ["retrieval_metrics"]
