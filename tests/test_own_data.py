"""Your own videos and captions: CSV and JSON-lines files, a `datasets` folder, relative paths, bad rows counted and
named, and training end to end from a generated CSV (`train.py --train_file ... --validation_file ...`)."""

import csv
import json
import logging
import os
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from helpers import tiny_corpus_and_clip

from s2ca_hf.data import CorpusFormatError, load_pairs
from s2ca_hf.video_io import write_video


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(str(folder / name), num_frames=8, fps=4, size=32)
    return folder


def write_csv(path, rows, header=("video", "caption")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_a_csv_of_pairs_resolves_paths_and_names_the_rows_it_leaves_out(tmp_path, clips, caplog):
    absolute = str(clips / "c.mp4")
    path = write_csv(
        tmp_path / "train.csv",
        [
            ("clips/a.mp4", "a man is cooking"),
            ("clips/a.mp4", "someone stirs a pot"),
            ("clips/b.mp4", ""),  # row 3: no caption
            ("clips/missing.mp4", "nothing there"),  # row 4: no such file
            ("clips/notes.txt", "not a video"),  # row 5
            (absolute, "a dog runs on a beach"),
        ],
    )
    with caplog.at_level(logging.WARNING):
        pairs = load_pairs(path)
    assert pairs["text"] == ["a man is cooking", "someone stirs a pot", "a dog runs on a beach"]
    assert pairs["video_path"] == [str(clips / "a.mp4"), str(clips / "a.mp4"), absolute]  # relative to the file
    assert pairs["video_index"] == [0, 0, 1] and pairs["video_id"][0] == "clips/a.mp4"
    warning = caplog.text
    assert "3 of 6 rows left out" in warning and "1 with no caption (rows 3)" in warning
    assert "1 with video file not found (rows 4)" in warning and "1 with not a video file name (rows 5)" in warning


def test_json_lines_other_columns_and_a_video_dir(tmp_path, clips):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps({"file": f, "sentence": s}) for f, s in [("a.mp4", "x"), ("b.mp4", "y")]))
    pairs = load_pairs(str(path), video_column="file", caption_column="sentence", video_dir=str(clips))
    assert pairs["video_path"] == [str(clips / "a.mp4"), str(clips / "b.mp4")]
    with pytest.raises(CorpusFormatError, match="no column 'video' .--video_column.; the columns are"):
        load_pairs(str(path))
    with pytest.raises(CorpusFormatError, match="no usable row: 2 with video file not found"):
        load_pairs(str(path), video_column="file", caption_column="sentence")  # relative to the file's folder
    (tmp_path / "pairs.xlsx").write_bytes(b"PK")
    with pytest.raises(CorpusFormatError, match="not a CSV, JSON-lines or Parquet file"):
        load_pairs(str(tmp_path / "pairs.xlsx"))
    with pytest.raises(CorpusFormatError, match="the file does not exist"):
        load_pairs(str(tmp_path / "typo.csv"))


def test_a_datasets_folder_with_splits(tmp_path, clips):
    splits = DatasetDict(
        train=Dataset.from_dict({"video": ["a.mp4", "b.mp4"], "caption": ["one", "two"]}),
        validation=Dataset.from_dict({"video": ["c.mp4"], "caption": ["three"]}),
    )
    splits.save_to_disk(str(tmp_path / "mine"))
    val = load_pairs(str(tmp_path / "mine"), "validation", video_dir=str(clips))
    assert val["text"] == ["three"] and val["video_path"] == [str(clips / "c.mp4")]


@pytest.mark.slow
def test_training_on_your_own_csv_end_to_end(tmp_path):
    import train

    corpus, clip = tiny_corpus_and_clip(tmp_path, 24, size=16, clip_epochs=1)
    # The built-in corpus's clips and captions, written as a user's own CSV files with paths relative to them.
    data = json.loads((Path(corpus) / "MSRVTT_data.json").read_text())
    captions = {}
    for sentence in data["sentences"]:
        captions.setdefault(sentence["video_id"], []).append(sentence["caption"])
    videos = sorted(captions)
    own = tmp_path / "own"
    own.mkdir()
    os.symlink(Path(corpus) / "videos", own / "videos")
    rows = [(f"videos/{v}.mp4", c) for v in videos for c in captions[v]]
    write_csv(own / "train.csv", rows[: 2 * 16])
    write_csv(own / "val.csv", rows[2 * 16 : 2 * 20 : 2])
    summary = train.main([
        "--train_file", str(own / "train.csv"), "--validation_file", str(own / "val.csv"), "--clip", clip,
        "--max_frames", "4", "--num_concepts", "4", "--temporal_num_hidden_layers", "1",
        "--temporal_num_attention_heads", "2", "--per_device_train_batch_size", "8", "--max_steps", "2",
        "--eval_strategy", "steps", "--eval_steps", "2", "--report_to", "none", "--quiet",
        "--frame_cache_dir", str(tmp_path / "frames"), "--output_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    assert summary["recipe"] == "own_data" and summary["selection"].startswith("val ")
    assert set(summary["final_metrics"]) == {"val"} and (tmp_path / "run" / "final" / "handler.py").is_file()
    assert 0 <= summary["final_metrics"]["val"]["text_to_video"]["R@1"] <= 100
