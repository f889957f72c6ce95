import pytest
import torch

from s2ca_hf import S2CAModel
from s2ca_hf.tiny import IMAGE_SIZE, NUM_FRAMES, tiny_config, tiny_processor


# The index tests import their shared helpers (and fixtures) before pytest would see them: rewrite their asserts too.
pytest.register_assert_rewrite("index_helpers")


# The hard allocation of the paper's abstract (docs/method.md §3) with concepts pooled over the clip and no
# re-ranker: the one-hot allocations, empty concepts and loss terms the reference computations of test_modeling.py
# check. The default's expert choice, tracks and re-ranker have tests of their own.
HARD_GUMBEL = dict(allocation="gumbel", concept_tracks=False, late_interaction_weight=0.0)


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def model():
    # Prototypes wider than the default 0.02 spread the tiny random tokens over several concepts, so that concept
    # weights differ between items and the tests see more than one non-empty concept per text.
    # Hard Gumbel allocation, which the reference computations of test_modeling.py are written from (docs/method.md).
    torch.manual_seed(0)
    return S2CAModel(tiny_config(prototype_init_std=1.0, **HARD_GUMBEL)).eval()


@pytest.fixture
def processor(tmp_path):
    return tiny_processor(str(tmp_path / "tokenizer"))


def make_inputs(batch: int = 3, seq_len: int = 7, num_frames: int = NUM_FRAMES, vocab_size: int = 99, seed: int = 0):
    """Right-padded token ids (start, words, end-of-text, padding) and videos with a varying number of real frames."""
    generator = torch.Generator().manual_seed(seed)
    bos, eos = vocab_size - 2, vocab_size - 1
    input_ids = torch.full((batch, seq_len), eos)
    attention_mask = torch.zeros(batch, seq_len, dtype=torch.long)
    frame_mask = torch.zeros(batch, num_frames, dtype=torch.long)
    for i in range(batch):
        words = 1 + (seq_len - 3 + i) % (seq_len - 2)  # 1 .. seq_len - 2 words
        input_ids[i, 0] = bos
        input_ids[i, 1 : 1 + words] = torch.randint(0, vocab_size - 2, (words,), generator=generator)
        attention_mask[i, : words + 2] = 1
        frame_mask[i, : num_frames - i % num_frames] = 1
    pixel_values_videos = torch.randn(batch, num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values_videos": pixel_values_videos,
        "frame_mask": frame_mask,
    }


@pytest.fixture
def inputs():
    return make_inputs()
