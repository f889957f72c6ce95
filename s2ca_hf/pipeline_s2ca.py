"""The `"video-text-retrieval"` pipeline: rank texts for a video, or videos for a text, with an S2CA model.

    pipe = pipeline(model="org/s2ca-msrvtt", trust_remote_code=True, revision=REVISION)
    pipe("clip.mp4", candidate_labels=["a man is cooking", "a dog runs"])  # texts ranked for the video
    pipe("a man is cooking", videos=["a.mp4", "b.mp4"])                   # videos ranked for the text

The first form has the shape of zero-shot video classification (a list of `{"label", "score"}`, best first), which
is what the Hub's inference widget shows. Scores are the softmax of the model's logits over the candidates; the raw
logit (`exp(logit_scale) * score`) is kept next to each, since a softmax hides how good the best match is.

This file is shipped next to the weights as Hub custom code, so it imports only torch, transformers and the
standard library.
"""

import os
import tempfile
from typing import Any

import torch
from transformers import Pipeline


TASK = "video-text-retrieval"


def _split_labels(candidate_labels: str | list[str] | tuple[str, ...]) -> list[str]:
    # The Hub widget sends candidate labels as one comma-separated string, as for zero-shot classification.
    if isinstance(candidate_labels, str):
        labels = [label.strip() for label in candidate_labels.split(",")]
        labels = [label for label in labels if label]
    else:
        labels = list(candidate_labels)
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"`candidate_labels` must be a non-empty list of strings, got {candidate_labels!r}.")
    return labels


class VideoTextRetrievalPipeline(Pipeline):
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

    `score` is the softmax of the logits over the candidates of one call, so it sums to 1 and depends on which
    candidates were given; `logit` does not.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Retrieval must be deterministic: in training mode the Gumbel allocation would add noise to every score.
        self.model.eval()

    def __call__(self, inputs: Any, candidate_labels: Any = None, videos: Any = None, **kwargs: Any):
        if (candidate_labels is None) == (videos is None):
            raise ValueError(
                "Call the video-text-retrieval pipeline as `pipe(video, candidate_labels=[...])` to rank texts for a "
                "video, or as `pipe(text, videos=[...])` to rank videos for a text: give exactly one of the two."
            )
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        else:
            kwargs["videos"] = videos
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, videos=None, hypothesis_template=None, top_k=None, **kwargs):
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
        return preprocess_params, {}, postprocess_params

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
            return self.processor(videos=items, return_tensors="pt")

    def preprocess(self, inputs, candidate_labels=None, videos=None, hypothesis_template: str = "{}"):
        if candidate_labels is not None:
            labels = _split_labels(candidate_labels)
            texts = [hypothesis_template.format(label) for label in labels]
            model_inputs = dict(self.processor(text=texts, return_tensors="pt"))
            model_inputs.update(self._process_videos([inputs]))
            names = labels
            direction = "texts"
        else:
            if not isinstance(inputs, str):
                raise TypeError(f"With `videos=[...]` the pipeline ranks videos for a text: got {type(inputs)}.")
            videos = list(videos)
            if not videos:
                raise ValueError("`videos` must hold at least one video.")
            model_inputs = dict(self.processor(text=[hypothesis_template.format(inputs)], return_tensors="pt"))
            model_inputs.update(self._process_videos(videos))
            names = [os.fspath(v) if isinstance(v, (str, os.PathLike)) else i for i, v in enumerate(videos)]
            direction = "videos"
        model_inputs["pixel_values_videos"] = model_inputs["pixel_values_videos"].to(self.model.dtype)
        return {"model_inputs": model_inputs, "names": names, "direction": direction}

    def _forward(self, inputs):
        outputs = self.model(**inputs["model_inputs"])
        # One video against many texts, or one text against many videos: either way one row of logits.
        logits = outputs.logits_per_video[0] if inputs["direction"] == "texts" else outputs.logits_per_text[0]
        return {"logits": logits, "names": inputs["names"], "direction": inputs["direction"]}

    def postprocess(self, model_outputs, top_k: int | None = None) -> list[dict[str, Any]]:
        logits = model_outputs["logits"].float()
        scores = logits.softmax(dim=-1).tolist()
        logits = logits.tolist()
        order = sorted(range(len(scores)), key=lambda i: -logits[i])
        if top_k is not None:
            order = order[:top_k]
        names = model_outputs["names"]
        if model_outputs["direction"] == "texts":
            return [{"label": names[i], "score": scores[i], "logit": logits[i]} for i in order]
        return [{"video": names[i], "index": i, "score": scores[i], "logit": logits[i]} for i in order]


__all__ = ["TASK", "VideoTextRetrievalPipeline"]
