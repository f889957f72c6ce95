"""Tiny S2CA building blocks that need no download: CLIP towers of width 32, a byte-level CLIP tokenizer and clips
encoded with PyAV. The demo, the tests and offline smoke runs use them; they are not a trained model."""

import itertools
import json
import os
from collections.abc import Iterable

import numpy as np
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from .configuration_s2ca import S2CAConfig
from .processing_s2ca import S2CAProcessor
from .video_processing_s2ca import S2CAVideoProcessor


IMAGE_SIZE = 32
NUM_FRAMES = 4


def text_config(vocab_size: int = 99, **overrides) -> dict:
    config = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=32,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return {**config, **overrides}


def vision_config(**overrides) -> dict:
    config = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    return {**config, **overrides}


def tiny_config(vocab_size: int = 99, **overrides) -> S2CAConfig:
    fields = dict(
        text_config=text_config(vocab_size),
        vision_config=vision_config(),
        projection_dim=32,
        num_frames=NUM_FRAMES,
        temporal_num_hidden_layers=2,
        temporal_num_attention_heads=4,
        temporal_intermediate_size=37,
        temporal_max_position_embeddings=16,
        num_concepts=4,
    )
    return S2CAConfig(**{**fields, **overrides})


def write_tokenizer_files(folder: str) -> None:
    """A byte-level CLIP BPE vocabulary (every byte, alone and word-final) with a few merges, in CLIP's file layout."""
    symbols = list(bytes_to_unicode().values())
    merges = [("t", "h"), ("th", "e</w>"), ("o", "g</w>"), ("d", "og</w>"), ("c", "a"), ("ca", "t</w>")]
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
    save_bpe_files(folder, vocab_list, merges)


def save_bpe_files(folder: str, vocab: list[str], merges: list[tuple[str, str]]) -> None:
    """Writes `vocab.json` (each token's id is its position; CLIP's start and end tokens are appended) and
    `merges.txt` in CLIP's layout, which `CLIPTokenizer.from_pretrained(folder)` reads."""
    vocab = [*vocab, "<|startoftext|>", "<|endoftext|>"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")


def tiny_processor(folder: str, max_text_length: int = 16, **video_overrides) -> S2CAProcessor:
    write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    video_fields = dict(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        max_frames=NUM_FRAMES,
    )
    video_processor = S2CAVideoProcessor(**{**video_fields, **video_overrides})
    return S2CAProcessor(video_processor=video_processor, tokenizer=tokenizer, max_text_length=max_text_length)


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """RGB uint8 `(H, W, 3)` (H and W even) to the planar yuv420p layout `(3H/2, W)`: ITU-R BT.601 limited range,
    the colour space decoders assume for untagged H.264; chroma from the mean of each 2x2 block. Plain float64
    arithmetic with rounding, so every machine and process computes the same bytes."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}.")
    rgb = image.astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 16.0 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255.0
    block = rgb.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    red, green, blue = block[..., 0], block[..., 1], block[..., 2]
    cb = 128.0 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255.0
    cr = 128.0 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255.0
    planes = [luma.ravel(), cb.ravel(), cr.ravel()]
    return np.clip(np.round(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def encode_frames(
    path, frames: Iterable[np.ndarray], fps, codec: str = "libx264", options: dict | None = None, **container_options
) -> str:
    """Encodes RGB uint8 frames `(H, W, 3)` into a video file with PyAV (yuv420p); `options` go to the encoder
    (`{"g": "8"}` for a keyframe every 8 frames), `container_options` to the container. Returns the path."""
    import av  # PyAV comes with the `train` and `dev` extras

    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if options:
            stream.options = options
        height, width = first.shape[:2]
        for index, image in enumerate(itertools.chain([first], frames)):
            # The pixels are copied into frame buffers that PyAV owns. `VideoFrame.from_ndarray(array)` can point at
            # the array's memory instead, and a temporary array is freed before the encoder reads the frame: the
            # same frames then gave other bytes from run to run (the flaky same-seed test of the full suite).
            planes = rgb_to_yuv420p(image)
            frame = av.VideoFrame(width, height, "yuv420p")
            chroma = planes[height:].reshape(2, height // 2, width // 2)
            for plane, data in zip(frame.planes, (planes[:height], chroma[0], chroma[1])):
                rows = np.zeros((data.shape[0], plane.line_size), dtype=np.uint8)  # zeroed row padding
                rows[:, : data.shape[1]] = data
                plane.update(rows.tobytes())
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def write_video(path: str, num_frames: int, fps: int = 10, size: int = 48, codec: str = "mpeg4") -> str:
    """Encodes a grey clip with PyAV; frame i has brightness 8 * (i mod 32), so decoded frames can be identified."""
    grey = (np.full((size, size, 3), 8 * (i % 32), dtype=np.uint8) for i in range(num_frames))
    return encode_frames(path, grey, fps, codec)
