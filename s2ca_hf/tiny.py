"""Tiny S2CA building blocks that need no download: CLIP towers of width 32, a byte-level CLIP tokenizer and clips
encoded with PyAV. The demo, the tests and offline smoke runs use them; they are not a trained model."""

from transformers import CLIPTokenizer

from .clip_bpe import byte_symbols, save_bpe_files
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
    merges = [("t", "h"), ("th", "e</w>"), ("o", "g</w>"), ("d", "og</w>"), ("c", "a"), ("ca", "t</w>")]
    save_bpe_files(folder, byte_symbols() + ["".join(pair) for pair in merges], merges)


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
