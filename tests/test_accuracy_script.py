"""benchmarks/accuracy.py end to end at tiny sizes: the rows, splits, seeds and statistics the issue asks for."""

import json

from helpers import load_benchmark_script, load_training_script


def test_accuracy_benchmark_at_tiny_size(tmp_path):
    from s2ca_hf.data import generate_synthetic_corpus

    pretrain_clip = load_training_script("pretrain_clip")
    corpus = generate_synthetic_corpus(
        tmp_path / "corpus", num_videos=24, size=16, num_frames=8, fps=2, captions_per_video=2, num_proc=1
    )
    clip_args = pretrain_clip.PretrainArguments(
        data_dir=str(corpus), output_dir=str(tmp_path / "clip"), image_size=16, patch_size=8, hidden_size=32,
        num_layers=1, num_heads=2, projection_dim=32, epochs=1, batch_size=8,
    )  # fmt: skip
    clip = pretrain_clip.ensure_pretrained_clip(clip_args, log=lambda *_: None)
    accuracy = load_benchmark_script("accuracy")
    methods = ["CLIP zero-shot (no fine-tuning)", "meanP", "S2CA (full)"]
    tiny = ["--max_frames", "4", "--num_concepts", "4", "--temporal_num_hidden_layers", "1"]
    tiny += ["--temporal_num_attention_heads", "2", "--report_to", "none", "--disable_tqdm", "true"]
    tiny += ["--frame_cache_dir", str(tmp_path / "frames")]
    report = accuracy.main(
        ["--seeds", "0", "1", "--methods", *methods, "--data_dir", str(corpus), "--clip", clip]
        + ["--synthetic_num_videos", "24", "--max_steps", "2", "--work_dir", str(tmp_path / "runs")]
        + ["--out", str(tmp_path / "results"), "--", *tiny]
    )
    saved = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))
    assert [(row["method"], row["split"]) for row in saved["rows"]] == [
        (method, split) for method in methods for split in ("test", "compositional")
    ]
    by_method = {row["method"]: row for row in saved["rows"] if row["split"] == "test"}
    assert by_method["meanP"]["seeds"] == [0, 1] and by_method["CLIP zero-shot (no fine-tuning)"]["seeds"] == [0]
    for row in saved["rows"]:
        for direction in ("text_to_video", "video_to_text"):
            assert set(row[direction]) >= {"R@1", "R@5", "R@10", "MdR", "MnR"}
            assert 0 <= row[direction]["R@1"] <= 100 and row[f"{direction}_std"]["R@1"] >= 0
    stats = saved["allocation"]["S2CA (full) / seed 1"]
    assert len(stats["video_tokens_per_concept"]) == 4 and 0 <= stats["text_empty_concept_rate"] <= 1
    assert 0 <= stats["prototype_abs_cosine"] <= 1
    assert "| S2CA (full) | compositional |" in (tmp_path / "results" / "accuracy.md").read_text()
    assert saved["command"].startswith("python benchmarks/accuracy.py") and saved["versions"]["torch"]
