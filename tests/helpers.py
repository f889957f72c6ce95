"""Test-only helpers; the tiny model and tokenizer live in `s2ca_hf.tiny`, the clip writer in `s2ca_hf.video_io`."""

import socket

import numpy as np


def numbered_frames(num_frames: int, height: int = 40, width: int = 48) -> np.ndarray:
    """`(n, H, W, 3)` uint8 frames whose brightness encodes their index, so a test can tell which were kept."""
    values = (np.arange(num_frames) * 255 // max(num_frames - 1, 1)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()


BRIGHTNESS_STEP = 6  # frame i of a numbered video has brightness 6 * i: 43 frames fit in a byte


def write_numbered_video(
    path, num_frames: int, fps: float = 4, size: int = 32, codec: str = "libx264", gop: int | None = None,
    faststart: bool = False,
):  # fmt: skip
    """Encodes a clip whose frame i is uniformly grey at brightness `6 * i`, so decoded frames can be identified."""
    from fractions import Fraction

    from s2ca_hf.video_io import encode_frames

    if num_frames * BRIGHTNESS_STEP > 255 + BRIGHTNESS_STEP:
        raise ValueError(f"At most {255 // BRIGHTNESS_STEP + 1} numbered frames fit in a byte.")
    numbered = (np.full((size, size, 3), BRIGHTNESS_STEP * i, dtype=np.uint8) for i in range(num_frames))
    options = {"g": str(gop)} if gop is not None else None
    container_options = {"movflags": "faststart"} if faststart else {}
    encode_frames(path, numbered, Fraction(fps).limit_denominator(1000), codec, options, **container_options)
    return path


def frame_numbers(frames) -> list[int]:
    """The frame index drawn into each of `(n, H, W, 3)` frames by `write_numbered_video`."""
    frames = np.asarray(frames, dtype=np.float64)
    return [int(round(frame.mean() / BRIGHTNESS_STEP)) for frame in frames]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a launcher or a local server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The first lines of a child process that must run where `s2ca_hf` cannot be imported (remote code, the metric).
WITHOUT_S2CA = """
import sys
sys.modules["s2ca_hf"] = None  # the package is installed here: make sure it cannot be used
try:
    import s2ca_hf
    raise SystemExit("s2ca_hf was importable")
except ImportError:
    pass
"""


def tiny_corpus_and_clip(root, num_videos: int, size: int, clip_epochs: int) -> tuple[str, str]:
    """A tiny built-in corpus (2 captions per clip, 8 frames) and a tiny CLIP pretrained on its frames, under root."""
    import pretrain_clip

    from s2ca_hf.data import generate_synthetic_corpus

    corpus = generate_synthetic_corpus(
        root / "corpus", num_videos=num_videos, size=size, num_frames=8, fps=2, captions_per_video=2, num_proc=1
    )
    clip_args = pretrain_clip.PretrainArguments(
        data_dir=str(corpus), output_dir=str(root / "clip"), image_size=size, patch_size=8, hidden_size=32,
        num_layers=1, num_heads=2, projection_dim=32, epochs=clip_epochs, batch_size=8,
    )  # fmt: skip
    return str(corpus), pretrain_clip.ensure_pretrained_clip(clip_args, log=lambda *_: None)
