"""training/evaluate_model.py on a tiny model and a tiny generated corpus: its results match a direct computation."""

import hashlib
import json

import pytest
import torch
from evaluate_model import main as evaluate_main
from results import check_results_for_model, load_results

from s2ca_hf import S2CAModel
from s2ca_hf.data import generate_synthetic_corpus, load_corpus
from s2ca_hf.retrieval import retrieval_metrics
from s2ca_hf.retrieval.evaluation import encode_texts, encode_videos, processor_video_batches
from s2ca_hf.tiny import tiny_config, tiny_processor


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    processor = tiny_processor(str(root / "tokenizer"), max_text_length=32)
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0)).eval()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    corpus = generate_synthetic_corpus(root / "corpus", num_videos=30, size=32, num_frames=8, fps=2, num_proc=1)
    return root, model, processor, corpus


def direct_metrics(model, processor, dataset, **kwargs):
    """phi and psi straight from the model and the processor (decoding the files), then the metrics."""
    videos = {}
    for video_index, path in zip(dataset["video_index"], dataset["video_path"]):
        videos.setdefault(video_index, path)
    paths = [videos[i] for i in range(len(videos))]
    with torch.no_grad():
        phi = encode_texts(model, processor, list(dataset["text"]), progress=False)
        psi = encode_videos(model, processor_video_batches(processor, paths, batch_size=4), progress=False)
    return retrieval_metrics(phi @ psi.t(), list(dataset["video_index"]), **kwargs)


def test_results_file_matches_a_direct_computation(saved_model, tmp_path):
    root, model, processor, corpus = saved_model
    out = tmp_path / "results"
    args = ["--model", str(root / "model"), "--corpus", "synthetic", "--data_dir", corpus, "--split", "test"]
    args += ["--output_dir", str(out), "--frame_cache", "none", "--batch_size", "4", "--dsl", "--no_progress"]
    evaluate_main(args)
    results = json.loads((out / "synthetic-test.json").read_text())
    dataset = load_corpus("synthetic", corpus, "test")
    expected = direct_metrics(model, processor, dataset)
    for direction in ("text_to_video", "video_to_text"):
        for key, value in expected[direction].items():
            assert results["metrics"][direction][key] == pytest.approx(value, abs=1e-6), (direction, key)
    dsl = direct_metrics(model, processor, dataset, post_processing="dsl")
    assert results["post_processing"]["dsl"]["text_to_video"]["R@1"] == pytest.approx(dsl["text_to_video"]["R@1"])
    weights = (root / "model" / "model.safetensors").read_bytes()
    assert results["model"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert results["counts"] == {"texts": len(dataset), "videos": len(set(dataset["video_index"])),
                                 "skipped_videos": 0, "skipped_texts": 0}  # fmt: skip
    assert results["corpus"] == "synthetic" and results["split"] == "test"
    assert results["protocol"]["frame_policy"]["max_frames"] == 4 and results["versions"]["torch"]
    table = (out / "synthetic-test.md").read_text()
    assert "| plain | text to video |" in table and "dsl (post-processed)" in table


def test_frame_cache_gives_the_same_numbers(saved_model, tmp_path):
    root, _, _, corpus = saved_model
    common = ["--model", str(root / "model"), "--corpus", "synthetic", "--data_dir", corpus, "--split", "test"]
    common += ["--batch_size", "4", "--no_progress", "--cache_dir", str(tmp_path / "cache")]
    decoded = evaluate_main([*common, "--frame_cache", "none", "--output_dir", str(tmp_path / "a")])
    cached = evaluate_main([*common, "--frame_cache", "build", "--output_dir", str(tmp_path / "b")])
    assert cached["protocol"]["frame_cache"] is not None
    assert cached["metrics"] == decoded["metrics"]
    auto = evaluate_main([*common, "--frame_cache", "auto", "--output_dir", str(tmp_path / "c")])
    assert auto["protocol"]["frame_cache"] == cached["protocol"]["frame_cache"]  # found the cache built above


def test_push_to_hub_accepts_the_results_file(saved_model, tmp_path):
    root, _, _, corpus = saved_model
    args = ["--model", str(root / "model"), "--corpus", "synthetic", "--data_dir", corpus, "--split", "test"]
    evaluate_main([*args, "--frame_cache", "none", "--output_dir", str(tmp_path), "--no_progress"])
    results = load_results(tmp_path / "synthetic-test.json")
    weights = hashlib.sha256((root / "model" / "model.safetensors").read_bytes()).hexdigest()
    check_results_for_model(results, weights)  # raises for another model's file
