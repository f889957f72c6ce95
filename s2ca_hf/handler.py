"""The custom handler of Hugging Face Inference Endpoints for an S2CA model: every saved model folder carries this
file as `handler.py`, so a repository deploys as an endpoint as it is (hosted inference does not run custom code).

    POST {"inputs": {"text": ["a man is cooking", ...], "videos": ["https://.../a.mp4", "<base64 bytes>", ...]}}

returns the scores of every text against every video, and each text's videos and each video's texts ranked:

    {"logits_per_text": [[...]], "text_to_video": [[{"video": 1, "score": 0.93, "logit": 24.1}, ...]],
     "video_to_text": [[{"text": 0, "score": ..., "logit": ...}, ...]]}

`score` is the softmax of the logits over the candidates (per text over the videos, per video over the texts);
`logit` is the scaled dot product phi . psi, comparable across calls; with `"parameters": {"rerank": true}` and a
model that has the late-interaction re-ranker, the late-interaction score is added to it (scaled alike). Videos are
`http(s)` URLs (fetched with the processor's size cap and deadline), base64-encoded file bytes, or paths on the
endpoint's machine; every one is opened with the processor's safe set of container formats. This file imports only
torch, transformers and the standard library: it runs where the package is not installed, loading the folder's own
model code.
"""

import base64
import binascii
import os
import tempfile
from typing import Any

import torch
from transformers import AutoModel, AutoProcessor


VIDEO_BATCH = 16  # videos through the vision tower at a time: any number of candidates fits in memory


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.model = AutoModel.from_pretrained(path or ".", trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(path or ".", trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        inputs = data.get("inputs", data) if isinstance(data, dict) else None
        if not isinstance(inputs, dict):
            raise ValueError('Send {"inputs": {"text": [...], "videos": [...]}}.')
        texts, videos = inputs.get("text"), inputs.get("videos")
        texts = [texts] if isinstance(texts, str) else texts
        videos = [videos] if isinstance(videos, str) else videos
        for name, values in (("text", texts), ("videos", videos)):
            if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise ValueError(f'"inputs.{name}" must be a non-empty list of non-empty strings.')
        rerank = (data.get("parameters") or {}).get("rerank", False)
        if not isinstance(rerank, bool):
            raise ValueError(f'"parameters.rerank" must be true or false, got {rerank!r}.')
        if rerank and not self.model.config.has_late_interaction:
            raise ValueError('"parameters.rerank": this model has no late-interaction re-ranker.')
        with torch.inference_mode():
            encoded = self.processor(text=texts, return_tensors="pt")
            text = self.model.encode_text(encoded["input_ids"], encoded["attention_mask"])
            phi = text.embeds
            psi = []
            with tempfile.TemporaryDirectory(prefix="s2ca-endpoint-") as folder:
                files = [_video_file(video, folder, index) for index, video in enumerate(videos)]
                for start in range(0, len(files), VIDEO_BATCH):
                    batch = self.processor(videos=files[start : start + VIDEO_BATCH], return_tensors="pt")
                    features = self.model.get_video_features(batch["pixel_values_videos"], batch["frame_mask"])
                    psi.append(features.pooler_output)
            psi = torch.cat(psi)
            scores = phi @ psi.t()
            if rerank:
                scores = scores + self.model.late_interaction_scores(text.concepts, psi)
            logits = scores * self.model.logit_scale_value()
        return {
            "logits_per_text": logits.tolist(),
            "text_to_video": [_ranked(row, "video") for row in logits],
            "video_to_text": [_ranked(column, "text") for column in logits.t()],
        }


def _video_file(video: str, folder: str, index: int) -> str:
    """A URL or a path as it is (the processor fetches and opens it); base64 bytes written to a file first."""
    if video.startswith(("http://", "https://")) or os.path.isfile(video):
        return video
    try:
        content = base64.b64decode(video, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"Video {index} is neither an http(s) URL, a file here, nor base64 bytes.") from None
    path = os.path.join(folder, f"video-{index}")  # no extension: the bytes, not a name, say what the file is
    with open(path, "wb") as handle:
        handle.write(content)
    return path


def _ranked(logits: torch.Tensor, key: str) -> list[dict[str, float]]:
    scores = logits.softmax(-1)
    order = torch.argsort(logits, descending=True, stable=True).tolist()
    return [{key: i, "score": float(scores[i]), "logit": float(logits[i])} for i in order]
