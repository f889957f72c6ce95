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
