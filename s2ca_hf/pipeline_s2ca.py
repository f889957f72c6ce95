"""The `"video-text-retrieval"` pipeline: rank texts for a video, or videos for a text, with an S2CA model.

    pipe = pipeline(model="org/s2ca-msrvtt", trust_remote_code=True, revision=REVISION)
    pipe("clip.mp4", candidate_labels=["a man is cooking", "a dog runs"])  # texts ranked for the video
    pipe("a man is cooking", videos=["a.mp4", "b.mp4"])                   # videos ranked for the text

    pipe(["a.mp4", "b.mp4"], candidate_labels=[...], batch_size=4)         # several inputs, 4 videos a forward

The first form has the shape of zero-shot video classification (a list of `{"label", "score"}`, best first).
Hosted inference does not run custom code, so a model page has no widget for it; a deployed endpoint or the demo
Space serves it instead. Scores are the softmax of the model's logits over the candidates; the raw
logit (`exp(logit_scale) * score`) is kept next to each, since a softmax hides how good the best match is.

This file is shipped next to the weights as Hub custom code, so it imports only torch, transformers and the
standard library.
"""

import os
import tempfile
from typing import Any

import torch
from transformers.pipelines.base import ChunkPipeline


TASK = "video-text-retrieval"


def _split_labels(candidate_labels: str | list[str] | tuple[str, ...]) -> list[str]:
    # Candidate labels may come as one comma-separated string, as zero-shot classification takes them.
    if isinstance(candidate_labels, str):
        labels = [label.strip() for label in candidate_labels.split(",")]
        labels = [label for label in labels if label]
    else:
        labels = list(candidate_labels)
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"`candidate_labels` must be a non-empty list of strings, got {candidate_labels!r}.")
    return labels


class VideoTextRetrievalPipeline(ChunkPipeline):
    r"""
    Text-video retrieval with an S2CA model and its `S2CAProcessor`.

    Two ways to call it (exactly one of `candidate_labels` and `videos`):

    - `pipe(video, candidate_labels=[...])`: ranks the texts for the video. Returns
      `[{"label": text, "score": p, "logit": l}, ...]`, best first.
    - `pipe(text, videos=[...])`: ranks the videos for the text. Returns
      `[{"video": path or index, "index": i, "score": p, "logit": l}, ...]`, best first; `"video"` is the path for
      a video given as a path and the position `i` in `videos` for decoded frames.

    A video is a file path (decoded with PyAV), the bytes of a video file, or decoded frames: an array or tensor
    `(n, H, W, 3)` or `(n, 3, H, W)`, taken to be sampled already. A list of videos (or of texts) as the first
    argument gives one ranking per item.

    Args (at call time):
        candidate_labels (`str` or `list[str]`): the texts to rank; a string is split on commas.
        videos (`list`): the videos to rank.
        hypothesis_template (`str`, *optional*, defaults to `"{}"`): formats each candidate label into the text
            that is scored (`"a video of {}."` turns class names into captions).
        top_k (`int`, *optional*): keep only the best `top_k` entries.
        rerank (`bool`, *optional*, defaults to `False`): with a model that has the late-interaction re-ranker
            (`late_interaction_weight > 0`), score every pair by score + late interaction (each caption token
            against the video's best-matching concept), as `s2ca-search --rerank` re-ranks a shortlist.

    `score` is the softmax of the logits over the candidates of one call, so it sums to 1 and depends on which
    candidates were given; `logit` does not.

    `batch_size` (at construction or call time) is the number of videos that go through the model together: the
    query videos when ranking texts (every batch is scored against all the candidate texts), the candidate videos
    when ranking videos (so any number of candidates fits in memory; with the default 1, one video per forward). The
    rankings and scores do not depend on it (padding changes no score; they agree to float rounding).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Retrieval must be deterministic: in training mode the Gumbel allocation would add noise to every score.
        self.model.eval()
        # The collate step of `batch_size` > 1 pads `input_ids` with the tokenizer's pad token.
        if self.tokenizer is None:
            self.tokenizer = self.processor.tokenizer

    def __call__(self, inputs: Any, candidate_labels: Any = None, videos: Any = None, **kwargs: Any):
        if (candidate_labels is None) == (videos is None):
            raise ValueError(
                "Call the video-text-retrieval pipeline as `pipe(video, candidate_labels=[...])` to rank texts for a "
                "video, or as `pipe(text, videos=[...])` to rank videos for a text: give exactly one of the two."
            )
        batch_size = kwargs.get("batch_size", self._batch_size)
        if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        else:
            kwargs["videos"] = videos
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self, candidate_labels=None, videos=None, hypothesis_template=None, top_k=None, rerank=None, **kwargs
    ):
        if kwargs:
            raise TypeError(f"Unexpected arguments for the video-text-retrieval pipeline: {sorted(kwargs)}.")
        preprocess_params = {}
        if candidate_labels is not None:
            preprocess_params["candidate_labels"] = candidate_labels
        if videos is not None:
            preprocess_params["videos"] = videos
        if hypothesis_template is not None:
            preprocess_params["hypothesis_template"] = hypothesis_template
        postprocess_params = {}
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"`top_k` must be a positive integer, got {top_k!r}.")
            postprocess_params["top_k"] = top_k
        forward_params = {}
        if rerank is not None:
            if not isinstance(rerank, bool):
                raise ValueError(f"`rerank` must be True or False, got {rerank!r}.")
            if rerank and not self.model.config.has_late_interaction:
                raise ValueError("`rerank=True` needs a model with the late-interaction re-ranker; this one has none.")
            forward_params["rerank"] = rerank
        return preprocess_params, forward_params, postprocess_params

    def _process_videos(self, videos: list) -> dict[str, torch.Tensor]:
        # Bytes (what an inference endpoint receives) go through a temporary file: the processor decodes paths.
        with tempfile.TemporaryDirectory(prefix="s2ca-pipeline-") as tmp:
            items = []
            for index, video in enumerate(videos):
                if isinstance(video, (bytes, bytearray)):
                    path = os.path.join(tmp, f"video_{index}")
                    with open(path, "wb") as f:
                        f.write(video)
                    video = path
                items.append(video)
            processed = self.processor(videos=items, return_tensors="pt")
        return {
            "pixel_values_videos": processed["pixel_values_videos"].to(self.model.dtype),
            "frame_mask": processed["frame_mask"],
        }

    def preprocess(self, inputs, candidate_labels=None, videos=None, hypothesis_template: str = "{}"):
        # A ChunkPipeline, as zero-shot classification is: every chunk holds one video, so that `batch_size` videos
        # (of one input or of several) go through the vision tower together whatever the number of candidates, and
        # the collate step pads each tensor along its second axis (frames, or tokens) with `frame_mask` or
        # `attention_mask` 0, which changes no score. Ranking texts for a video: one chunk, the video with all the
        # candidate texts (wrapped in a list, as ZeroShotImageClassificationPipeline does, so that the collate step
        # gathers them instead of padding them). Ranking videos for a text: one chunk per candidate video, each
        # with the query text; `is_last` tells the pipeline where an input's chunks end.
        if candidate_labels is not None:
            labels = _split_labels(candidate_labels)
            texts = [hypothesis_template.format(label) for label in labels]
            text_inputs = dict(self.processor(text=texts, return_tensors="pt"))
            yield {
                **self._process_videos([inputs]),
                "text_inputs": [text_inputs],
                "candidate": _Candidate("texts", labels),
                "is_last": True,
            }
            return
        if not isinstance(inputs, str):
            raise TypeError(f"With `videos=[...]` the pipeline ranks videos for a text: got {type(inputs)}.")
        videos = list(videos)
        if not videos:
            raise ValueError("`videos` must hold at least one video.")
        text_inputs = dict(self.processor(text=[hypothesis_template.format(inputs)], return_tensors="pt"))
        for index, video in enumerate(videos):
            name = os.fspath(video) if isinstance(video, (str, os.PathLike)) else index
            yield {
                **self._process_videos([video]),
                **text_inputs,
                "candidate": _Candidate("videos", name),
                "is_last": index == len(videos) - 1,
            }

    def _forward(self, inputs, rerank: bool = False):
        # With batch_size 1 a chunk arrives as preprocess made it; batched, its non-tensor values arrive as lists.
        candidates = inputs["candidate"] if isinstance(inputs["candidate"], list) else [inputs["candidate"]]
        videos = {"pixel_values_videos": inputs["pixel_values_videos"], "frame_mask": inputs["frame_mask"]}
        if candidates[0].direction == "texts":
            texts = inputs["text_inputs"]
            texts = [texts[0]] if isinstance(texts[0], dict) else [group[0] for group in texts]
            # Every video of a call has the same candidate texts: they are encoded once per batch of videos.
            if any(c.names != candidates[0].names for c in candidates):
                raise ValueError("The videos of one batch have different candidate labels.")
            outputs = self.model(**texts[0], **videos)
            logits = outputs.logits_per_video  # (videos, texts)
            if rerank:
                late = self.model.late_interaction_scores(outputs.text_concepts, outputs.video_embeds)
                logits = logits + self.model.logit_scale_value() * late.t()
        else:
            text = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
            # Chunk i pairs a candidate video with its input's text (the chunks of a batch may come from several
            # inputs): the logit of chunk i is the diagonal entry.
            outputs = self.model(**text, **videos)
            logits = outputs.logits_per_text.diagonal()  # (videos,)
            if rerank:
                late = self.model.late_interaction_scores(outputs.text_concepts, outputs.video_embeds).diagonal()
                logits = logits + self.model.logit_scale_value() * late
        # "logits" first: the pipeline reads the size of a batch from the first value.
        return {"logits": logits, "candidate": candidates, "is_last": inputs["is_last"]}

    def postprocess(self, model_outputs, top_k: int | None = None) -> list[dict[str, Any]]:
        # The chunks of one input: one (ranking texts) or one per candidate video (ranking videos).
        first = model_outputs[0]["candidate"]
        first = first[0] if isinstance(first, list) else first
        logits = torch.cat([output["logits"].reshape(-1) for output in model_outputs]).float()
        if first.direction == "texts":
            names = first.names
        else:
            names = [_single(output["candidate"]).names for output in model_outputs]
        scores = logits.softmax(dim=-1).tolist()
        logits = logits.tolist()
        order = sorted(range(len(scores)), key=lambda i: -logits[i])
        if top_k is not None:
            order = order[:top_k]
        if first.direction == "texts":
            return [{"label": names[i], "score": scores[i], "logit": logits[i]} for i in order]
        return [{"video": names[i], "index": i, "score": scores[i], "logit": logits[i]} for i in order]


class _Candidate:
    """What a chunk ranks (`direction`: "texts" or "videos") and the names of its candidates. Not a tensor, a dict
    or a list, so that the pipeline's collate step gathers it into a list and never tries to pad it."""

    def __init__(self, direction: str, names):
        self.direction = direction
        self.names = names


def _single(candidate):
    return candidate[0] if isinstance(candidate, list) else candidate


__all__ = ["TASK", "VideoTextRetrievalPipeline"]
