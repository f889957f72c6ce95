"""Encode once, score by blocks: the evaluation loop shared by `training/evaluate.py` and `training/train.py`.

Every text and every unique video is encoded once into the vectors phi and psi (`S2CAModel.get_text_features` /
`get_video_features`), whose dot product is the model's score; the metrics then read `phi @ psi.T` block by block.
"""

from collections.abc import Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .metrics import retrieval_metrics


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
        embeds = model.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))
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
            chunks.append(model.get_video_features(pixels, frame_mask).float().cpu())
            bar.update(pixels.shape[0])
    if not chunks:
        raise ValueError("No video to encode.")
    return torch.cat(chunks)


def processor_video_batches(processor, videos: Sequence, batch_size: int = 16) -> Iterator[dict]:
    """Model-ready batches from video file paths or decoded frames, through the processor (decodes on the fly)."""
    for start in range(0, len(videos), batch_size):
        yield processor(videos=list(videos[start : start + batch_size]), return_tensors="pt")


def evaluate_embeddings(text_embeds: torch.Tensor, video_embeds: torch.Tensor, text_to_video, **metric_kwargs) -> dict:
    """Retrieval metrics of `text_embeds @ video_embeds.T` (never materialised whole; see `retrieval_metrics`)."""
    return retrieval_metrics(
        text_to_video=text_to_video, text_embeds=text_embeds, video_embeds=video_embeds, **metric_kwargs
    )


__all__ = ["encode_texts", "encode_videos", "evaluate_embeddings", "processor_video_batches"]
