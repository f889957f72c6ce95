"""Test-only helpers; the tiny model, tokenizer and clip builders live in `s2ca_hf.tiny`."""

import numpy as np


def numbered_frames(num_frames: int, height: int = 40, width: int = 48) -> np.ndarray:
    """`(n, H, W, 3)` uint8 frames whose brightness encodes their index, so a test can tell which were kept."""
    values = (np.arange(num_frames) * 255 // max(num_frames - 1, 1)).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).copy()
