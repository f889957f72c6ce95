"""Shared by the index tests (test_index.py, test_index_integrity.py): a tiny saved model, a folder of generated
clips, an index built from them with the s2ca-index command, and comparisons against the model itself. The
fixtures are module-scoped: each test module builds its own."""

import shutil

import numpy as np
import pytest
import torch

from s2ca_hf import S2CAModel
from s2ca_hf.retrieval.build import load_model_and_processor
from s2ca_hf.retrieval.cli import index_main
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.store import read_manifest
from s2ca_hf.tiny import tiny_config, tiny_processor
from s2ca_hf.video_io import encode_frames


NUM_VIDEOS = 6
TEXTS = ["the dog", "a cat runs", "the cat"]


def write_noise_video(path, num_frames: int, seed: int, fps: int = 10, size: int = 40) -> str:
    """A clip whose frames are a seeded random image plus noise, so every clip gives a different psi."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3))
    noisy = (
        np.clip(base + rng.integers(-60, 60, (size, size, 3)), 0, 255).astype(np.uint8) for _ in range(num_frames)
    )
    encode_frames(path, noisy, fps, "mpeg4")
    return str(path)


def video_name(i: int) -> str:
    return f"v{i}.mp4" if i % 2 == 0 else f"sub/dir/v{i}.mp4"  # nested folders: the search is recursive


def add_videos(folder, indices) -> None:
    for i in indices:
        path = folder / video_name(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_noise_video(path, num_frames=12 + 7 * i, seed=i)


def index_model_config(vocab_size: int, **overrides):
    """The config of the index tests' models: no re-ranker, since these tests are of the first stage (the
    re-ranker's tests build their own model)."""
    return tiny_config(vocab_size=vocab_size, prototype_init_std=1.0, late_interaction_weight=0.0, **overrides)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    processor = tiny_processor(str(folder))
    model = S2CAModel(index_model_config(len(processor.tokenizer))).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    add_videos(folder, range(NUM_VIDEOS))
    (folder / "notes.txt").write_text("not a video, and not named like one: ignored")
    return folder


@pytest.fixture(scope="module")
def built(saved_model, video_folder, tmp_path_factory):
    """An index of the generated clips plus a corrupt one, built through the s2ca-index command."""
    folder = tmp_path_factory.mktemp("with-corrupt")
    shutil.copytree(video_folder, folder, dirs_exist_ok=True)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    out = str(tmp_path_factory.mktemp("index") / "idx")
    assert index_main(["--model", saved_model, "--videos", str(folder), "--out", out, "--batch-size", "4"]) == 0
    return out, folder


def direct_scores(model_folder, video_paths, texts):
    """phi @ psi.T straight from the model and the processor, with no index involved."""
    model, processor, _ = load_model_and_processor(model_folder)
    with torch.inference_mode():
        text_inputs = processor(text=texts, return_tensors="pt")
        phi = model.get_text_features(text_inputs["input_ids"], text_inputs["attention_mask"]).pooler_output
        video_inputs = processor(videos=list(video_paths), return_tensors="pt")
        psi = model.get_video_features(video_inputs["pixel_values_videos"], video_inputs["frame_mask"]).pooler_output
    return phi, psi


def index_by_id(path):
    """id -> (float16 vector, table row without the shard bookkeeping), for comparing indexes built differently."""
    index = VideoIndex.load(path, device="cpu")
    rows = index.table.to_pylist()
    vectors = torch.cat(list(index.iter_shards())) if len(index) else torch.empty(0, index.dimension)
    return {
        row["id"]: (vectors[i], {k: v for k, v in row.items() if k not in ("shard", "shard_row")})
        for i, row in enumerate(rows)
    }


def assert_same_index(left, right):
    a, b = index_by_id(left), index_by_id(right)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key][1] == b[key][1], key
        # float16 storage of the same computation; a different batch composition may move the last float32 bit.
        torch.testing.assert_close(a[key][0].float(), b[key][0].float(), atol=2e-3, rtol=2e-3)
    assert read_manifest(left)["skipped"] == read_manifest(right)["skipped"]
