"""The parity check of an export: a fresh process in which `s2ca_hf` cannot be imported loads the folder with
`trust_remote_code=True` (`parity_child.py`), and its processed inputs, text and video features, logits and pipeline
ranking on a fixed input must equal the in-memory model's.

Both sides compute their outputs with the one function `model_outputs`. The child imports this module, so it must
stay importable without `s2ca_hf`: the package is imported only inside `check_parity`, which runs in the exporter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch


if TYPE_CHECKING:
    from s2ca_hf import S2CAModel, S2CAProcessor

PARITY_TEXTS = ["a man is cooking in a kitchen", "a dog runs along the beach", "two people are dancing"]
CHILD_SCRIPT = Path(__file__).resolve().with_name("parity_child.py")


class ParityError(RuntimeError):
    """The exported folder, loaded as remote code, does not reproduce the in-memory model."""


def parity_videos(processor: S2CAProcessor) -> list[np.ndarray]:
    """Two fixed clips of random frames: one filling every frame slot, one shorter (so padding is checked too),
    a little larger than the crop so resizing and cropping run."""
    video_processor = processor.video_processor
    crop = video_processor.crop_size
    height, width = crop["height"] + 8, crop["width"] + 16
    rng = np.random.default_rng(0)
    counts = [video_processor.max_frames, max(1, video_processor.max_frames // 2)]
    return [rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8) for n in counts]


def model_outputs(model, processor, pipe, texts: list[str], videos: list) -> dict:
    """What a model, its processor and its "video-text-retrieval" pipeline give on the parity input: the exporter's
    in-memory (s2ca_hf) objects and the child's remote-code ones go through this same function."""
    model.eval()
    inputs = processor(text=texts, videos=videos, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        video = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    ranking = pipe(videos[0], candidate_labels=texts)
    return {
        **dict(inputs),
        "text_embeds": text,
        "video_embeds": video,
        "logits_per_text": out.logits_per_text,
        "pipeline_logits": torch.tensor([r["logit"] for r in ranking]),
        "pipeline_labels": [r["label"] for r in ranking],
    }


def compare_outputs(expected: dict, actual: dict, atol: float = 0.0) -> dict[str, float]:
    """Max absolute difference per output; raises `ParityError` listing every output that differs."""
    differences, failures = {}, []
    for key, value in expected.items():
        other = actual.get(key)
        if not isinstance(value, torch.Tensor):
            if other != value:
                failures.append(f"  {key}: {other!r} != expected {value!r}")
            continue
        if not isinstance(other, torch.Tensor) or other.shape != value.shape:
            shape = getattr(other, "shape", None)
            failures.append(f"  {key}: shape {tuple(shape) if shape is not None else None} != {tuple(value.shape)}")
            continue
        diff = (other.double() - value.double()).abs().max().item() if value.numel() else 0.0
        differences[key] = diff
        if not diff <= atol:  # also catches NaN
            failures.append(f"  {key}: max |difference| = {diff:.3g} (allowed {atol:g})")
    if failures:
        raise ParityError(
            "Parity check failed: the exported folder, loaded with trust_remote_code=True in a process without "
            "s2ca_hf, does not reproduce the in-memory model:\n" + "\n".join(failures) + "\nNothing was uploaded."
        )
    return differences


def check_parity(
    model: S2CAModel, processor: S2CAProcessor, folder: str | os.PathLike, atol: float = 0.0, timeout: float = 900
) -> dict[str, float]:
    """Loads `folder` as remote code in a fresh process and compares it with the in-memory model on a fixed input.

    Returns the max absolute difference of every compared output; raises `ParityError` when one exceeds `atol`
    (0: bit-identical, which the same code on the same machine gives) or the folder cannot be loaded at all.
    """
    from s2ca_hf import VideoTextRetrievalPipeline  # here, not at the top: the child imports this module

    videos = parity_videos(processor)
    pipe = VideoTextRetrievalPipeline(model=model, processor=processor)
    expected = model_outputs(model, processor, pipe, PARITY_TEXTS, videos)
    with tempfile.TemporaryDirectory(prefix="s2ca-parity-") as work:
        paths = []
        for index, frames in enumerate(videos):
            paths.append(os.path.join(work, f"video_{index}.npy"))
            np.save(paths[-1], frames)
        with open(os.path.join(work, "spec.json"), "w") as f:
            json.dump({"texts": PARITY_TEXTS, "videos": paths}, f)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",  # the folder is local: nothing may be fetched
            "HF_MODULES_CACHE": os.path.join(work, "modules"),  # no stale copy of the code from an earlier export
        }
        # A script's own folder (training/) is on the child's sys.path, the current directory is not; cwd=work all
        # the same, so that nothing the child writes lands in a checkout.
        result = subprocess.run(
            [sys.executable, str(CHILD_SCRIPT), str(Path(folder).resolve()), work],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise ParityError(
                f"Parity check failed: {folder} could not be loaded and run with trust_remote_code=True in a "
                f"process without s2ca_hf (exit {result.returncode}):\n{result.stderr[-4000:]}\nNothing was uploaded."
            )
        actual = torch.load(os.path.join(work, "remote.pt"), weights_only=True)  # tensors and plain values only
    return compare_outputs(expected, actual, atol)
