"""Shared by the publishing tests: a tiny trained checkpoint and results files in the shape `training/results.py`
writes."""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from s2ca_hf import S2CAModel
from s2ca_hf.tiny import IMAGE_SIZE, NUM_FRAMES, tiny_config, tiny_processor


REPO_ROOT = Path(__file__).resolve().parents[1]

# Every file the exported repository must hold, and nothing else.
EXPORTED_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "configuration_s2ca.py",
    "modeling_s2ca.py",
    "video_processing_s2ca.py",
    "frame_policy.py",
    "video_io.py",
    "processing_s2ca.py",
    "pipeline_s2ca.py",
    "handler.py",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}

METRICS = {"R@1": 44.1, "R@5": 71.0, "R@10": 80.9, "R@50": 95.0, "MdR": 2.0, "MnR": 15.3, "std_rank": 30.1}


def save_trained_tiny_model(folder: Path, steps: int = 2) -> Path:
    """A tiny S2CA model after `steps` AdamW steps on four random clip-caption pairs, saved with its processor as
    training saves a run (`save_pretrained` of both). Trained, so its weights are not the random initialisation."""
    processor = tiny_processor(str(folder.parent / f"{folder.name}-tokenizer"))
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0))
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8) for _ in range(4)]
    texts = ["the dog", "the cat", "a dog and a cat", "the sea"]
    batch = processor(text=texts, videos=videos, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch, return_loss=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_results(path: Path, sha256: str, corpus: str = "msrvtt", post_processing: bool = True, **changes) -> Path:
    """A results file in the shape training/evaluate_model.py writes."""
    t2v = dict(METRICS)
    v2t = {**METRICS, "R@1": 43.2, "MnR": 12.7}
    results = {
        "model": {"name_or_path": "runs/tiny/final", "revision": None, "sha256": sha256},
        "corpus": corpus,
        "split": "test",
        "protocol": {
            "captions_per_video": "single",
            "num_texts": 1000,
            "num_videos": 1000,
            "ties": "average",
            "video_to_text": "caption groups scored by their best caption (CLIP4Clip)",
            "post_processing": None,
            "corpus_options": {"train_csv": "9k"},
        },
        "counts": {"texts": 1000, "videos": 1000},
        "metrics": {"text_to_video": t2v, "video_to_text": v2t},
        "date": "2026-11-27T12:00:00+00:00",
        "versions": {"s2ca_hf": "0.1.0", "torch": "2.14.1", "transformers": "5.24.0"},
    }
    if post_processing:
        results["post_processing"] = {"dsl": {"text_to_video": {**t2v, "R@1": 49.5}, "video_to_text": v2t}}
    results.update(changes)
    path.write_text(json.dumps(results))
    return path
