"""The video index and search (`s2ca_hf.retrieval`, `s2ca-index`, `s2ca-search`) on generated clips: building,
resuming and growing an index, several processes, the commands and the Python API against the model itself."""

import json
import os
import subprocess
import sys
import types

import pytest
import torch
from index_helpers import (
    NUM_VIDEOS,
    TEXTS,
    add_videos,
    assert_same_index,
    direct_scores,
    index_by_id,
    index_model_config,
    video_name,
    write_noise_video,
)

from s2ca_hf import S2CAModel
from s2ca_hf.retrieval import build as build_module
from s2ca_hf.retrieval.build import build_index, load_model_and_processor
from s2ca_hf.retrieval.cli import index_main, search_main
from s2ca_hf.retrieval.errors import ModelMismatchError
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.store import read_manifest
from s2ca_hf.tiny import tiny_config, tiny_processor


# The fixtures saved_model, video_folder and built, shared with the other index test module.
pytest_plugins = ["index_helpers"]

av = pytest.importorskip("av")

# --------------------------------------------------------------------------------------------------------------


def test_search_command_returns_the_ranking_of_phi_psi(built, saved_model, capsys):
    out, folder = built
    capsys.readouterr()
    assert search_main(["--index", out, "--json", "-k", str(NUM_VIDEOS), *TEXTS]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["direction"] == "text-to-video"

    paths = [str(folder / video_name(i)) for i in range(NUM_VIDEOS)]
    phi, psi = direct_scores(saved_model, paths, TEXTS)
    scores = phi @ psi.T
    # The index stores psi in float16: its ranking is that of phi @ psi.T with psi rounded so, exactly. Where two
    # videos score within float16 rounding of each other the float32 order may differ; the scores must agree.
    stored_scores = phi @ psi.half().float().T
    for query, result, row, stored_row in zip(TEXTS, printed["results"], scores, stored_scores):
        assert result["query"] == query
        expected = [video_name(int(i)) for i in torch.argsort(stored_row, descending=True)]
        assert [hit["id"] for hit in result["hits"]] == expected
        by_id = {hit["id"]: hit["score"] for hit in result["hits"]}
        got = torch.tensor([by_id[video_name(i)] for i in range(NUM_VIDEOS)])
        torch.testing.assert_close(got, stored_row, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got, row, atol=2e-3, rtol=2e-3)
        bound = (phi[TEXTS.index(query)].abs() @ psi.abs().T).max() * 2**-11  # float16 relative rounding
        order = torch.argsort(row, descending=True)
        for a, b in zip(order[:-1], order[1:]):  # clear gaps keep the float32 order
            if row[a] - row[b] > 2 * bound:
                assert expected.index(video_name(int(a))) < expected.index(video_name(int(b)))

    # The table holds the container's metadata.
    hit = next(h for h in printed["results"][0]["hits"] if h["id"] == video_name(3))
    assert hit["num_frames"] == 12 + 7 * 3 and hit["fps"] == 10.0 and hit["duration"] == pytest.approx(3.3)
    assert hit["path"] == paths[3]


def test_video_query_and_reverse_direction_match_the_model(built, saved_model, capsys):
    out, folder = built
    paths = [str(folder / video_name(i)) for i in range(NUM_VIDEOS)]
    phi, psi = direct_scores(saved_model, paths, TEXTS)

    capsys.readouterr()
    assert search_main(["--index", out, "--video", paths[2], "--json", "-k", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["direction"] == "video-to-video"
    expected = [video_name(int(i)) for i in torch.argsort(psi @ psi[2], descending=True)[:3]]
    assert [hit["id"] for hit in result["results"][0]["hits"]] == expected

    texts_file = folder.parent / "texts.txt"
    texts_file.write_text("\n".join(TEXTS[1:]) + "\n\n")
    for query in (["--video", paths[4]], ["--video-id", video_name(4)]):
        assert (
            search_main(["--index", out, *query, "--texts", TEXTS[0], "--texts-file", str(texts_file), "--json"]) == 0
        )
        result = json.loads(capsys.readouterr().out)
        assert result["direction"] == "video-to-text"
        expected = [TEXTS[int(i)] for i in torch.argsort(phi @ psi[4], descending=True)]
        assert [entry["text"] for entry in result["results"]] == expected

    index = VideoIndex.load(out)
    hits = index.search_by_video(paths[1], k=1)
    assert hits[0].id == video_name(1)  # a video is nearest to itself

    # Plain output names the results too.
    assert search_main(["--index", out, "the dog", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "videos for 'the dog':" and len(lines) == 3


def test_corrupt_video_is_skipped_and_listed(built):
    out, folder = built
    manifest = read_manifest(out)
    assert manifest["count"] == NUM_VIDEOS
    assert [entry["id"] for entry in manifest["skipped"]] == ["broken.mp4"]
    assert manifest["skipped"][0]["path"] == str(folder / "broken.mp4")
    assert "Could not decode video" in manifest["skipped"][0]["reason"]
    assert "broken.mp4" not in VideoIndex.load(out).ids
    assert manifest["dimension"] == manifest["model"]["dimension"] == tiny_config().embedding_dim
    assert manifest["frame_policy"]["max_frames"] == 4 and manifest["source"]["kind"] == "folder"


def test_python_api_searches_texts_and_vectors(built):
    out, _ = built
    index = VideoIndex.load(out)
    by_text = index.search(TEXTS[:2], k=3)
    by_vector = index.search(index.encode_texts(TEXTS[:2]), k=3)
    assert [[h.id for h in hits] for hits in by_text] == [[h.id for h in hits] for hits in by_vector]
    assert len(by_text) == 2 and [h.rank for h in by_text[0]] == [1, 2, 3]
    streamed = VideoIndex.load(out, in_memory=False).search(TEXTS[:2], k=3)
    assert [[(h.id, h.score) for h in hits] for hits in streamed] == [
        [(h.id, h.score) for h in hits] for hits in by_text
    ]


@pytest.mark.slow
def test_interrupted_and_resumed_and_grown_index_equal_one_full_run(saved_model, tmp_path, monkeypatch):
    model, processor, fingerprint = load_model_and_processor(saved_model)
    folder = tmp_path / "videos"
    add_videos(folder, range(NUM_VIDEOS))
    common = dict(fingerprint=fingerprint, batch_size=2, shard_size=2, progress=False)
    full = tmp_path / "full"
    build_index(model, processor, str(folder), full, **common)
    assert len(os.listdir(full / "shards")) == 3

    decoded = []
    real_decode = build_module.decode_for_index
    monkeypatch.setattr(
        build_module,
        "decode_for_index",
        lambda processor, path, *a: decoded.append(path) or real_decode(processor, path, *a),
    )

    # Interrupted after its first shard: the completed shard stays, nothing is committed.
    real_write = build_module.write_shard
    calls = []

    def write_then_die(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_write(*args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(build_module, "write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, processor, str(folder), resumed, **common)
    monkeypatch.setattr(build_module, "write_shard", real_write)
    assert len(os.listdir(resumed / "shards")) == 1 and not (resumed / "manifest.json").exists()
    decoded.clear()
    build_index(model, processor, str(folder), resumed, **common)
    assert len(decoded) == NUM_VIDEOS - 2  # only the videos no shard holds
    assert_same_index(resumed, full)

    # Grown: the first half indexed, the rest added to the folder later, then indexed again.
    grown_folder = tmp_path / "grown-videos"
    add_videos(grown_folder, range(3))
    grown = tmp_path / "grown"
    build_index(model, processor, str(grown_folder), grown, **common)
    add_videos(grown_folder, range(3, NUM_VIDEOS))
    decoded.clear()
    manifest = build_index(model, processor, str(grown_folder), grown, **common)
    assert sorted(os.path.basename(p) for p in decoded) == [f"v{i}.mp4" for i in range(3, NUM_VIDEOS)]
    assert manifest["count"] == NUM_VIDEOS
    full_of_grown = tmp_path / "full-of-grown"
    build_index(model, processor, str(grown_folder), full_of_grown, **common)
    assert_same_index(grown, full_of_grown)

    # Nothing new: nothing encoded. A removed video leaves the index; a changed one is encoded again.
    decoded.clear()
    build_index(model, processor, str(grown_folder), grown, **common)
    assert decoded == []
    os.remove(grown_folder / video_name(0))
    write_noise_video(grown_folder / video_name(1), num_frames=30, seed=99)
    manifest = build_index(model, processor, str(grown_folder), grown, **common)
    assert [os.path.basename(p) for p in decoded] == ["v1.mp4"]
    assert manifest["count"] == NUM_VIDEOS - 1 and video_name(0) not in VideoIndex.load(grown).ids
    table = index_by_id(grown)
    assert table[video_name(1)][1]["num_frames"] == 30
    assert all(name.startswith("shard-") for name in os.listdir(grown / "shards"))  # no leftover temporary file


def test_searches_during_an_update_read_the_old_snapshot_until_the_commit(saved_model, tmp_path, monkeypatch):
    model, processor, fingerprint = load_model_and_processor(saved_model)
    folder = tmp_path / "videos"
    add_videos(folder, range(4))
    out = tmp_path / "index"
    common = dict(fingerprint=fingerprint, batch_size=2, shard_size=2, progress=False)
    build_index(model, processor, str(folder), out, **common)
    before = [hit.id for hit in VideoIndex.load(out).search("the dog", k=4)[0]]
    # A changed video (its shard is rewritten without it) and two new ones: the run prunes, encodes, commits.
    write_noise_video(folder / video_name(1), num_frames=30, seed=99)
    add_videos(folder, [4, 5])
    seen_during = []
    real_encode = build_module._encode_chunks

    def search_then_encode(*args, **kwargs):
        # A reader in the middle of the update (after the prune, before the commit): the committed snapshot.
        seen_during.append([hit.id for hit in VideoIndex.load(out).search("the dog", k=4)[0]])
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(build_module, "_encode_chunks", search_then_encode)
    manifest = build_index(model, processor, str(folder), out, **common)
    assert seen_during == [before]
    listed = sorted(os.path.basename(shard["file"]) for shard in manifest["shards"])
    assert sorted(os.listdir(out / "shards")) == listed  # the replaced shard is gone after the commit
    index = VideoIndex.load(out)
    assert len(index) == 6 and index_by_id(out)[video_name(1)][1]["num_frames"] == 30

    # Interrupted between the prune and the commit: the old and the rewritten shard are both on disk; the next run
    # keeps one of each video and removes the rest.
    write_noise_video(folder / video_name(2), num_frames=25, seed=98)

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "_encode_chunks", die)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, processor, str(folder), out, **common)
    assert len(VideoIndex.load(out).search("the dog", k=6)[0]) == 6  # still the last commit
    monkeypatch.setattr(build_module, "_encode_chunks", real_encode)
    manifest = build_index(model, processor, str(folder), out, **common)
    listed = sorted(os.path.basename(shard["file"]) for shard in manifest["shards"])
    assert sorted(os.listdir(out / "shards")) == listed and manifest["count"] == 6
    assert index_by_id(out)[video_name(2)][1]["num_frames"] == 25


# Runs in a fresh interpreter: forking a process whose torch thread pool is already running (as pytest's is, once a
# test has encoded anything) deadlocks the children. Each rank appends the shards it writes to a log.
TWO_PROCESS_SCRIPT = """
import os, sys
from accelerate import PartialState, debug_launcher
from s2ca_hf.retrieval import build as build_module
from s2ca_hf.retrieval.cli import index_main

log, argv = sys.argv[1], sys.argv[2:]
real_write = build_module.write_shard

def logged_write(*args, **kwargs):
    name = real_write(*args, **kwargs)
    with open(log, "a") as handle:
        handle.write(str(PartialState().process_index) + " " + name + "\\n")
    return name

build_module.write_shard = logged_write
debug_launcher(index_main, args=(argv,), num_processes=2)
"""


@pytest.mark.slow
def test_two_processes_each_encode_their_share(saved_model, video_folder, tmp_path):
    pytest.importorskip("accelerate")
    single, double, log = tmp_path / "single", tmp_path / "double", tmp_path / "writers.txt"
    argv = ["--videos", str(video_folder), "--model", saved_model, "--batch-size", "2", "--shard-size", "2"]
    argv += ["--num-workers", "0", "--quiet"]
    assert index_main([*argv, "--out", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", TWO_PROCESS_SCRIPT, str(log), *argv, "--out", str(double)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    writers = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert writers == ["0", "0", "1"]  # 3 chunks of 2 videos, round robin over 2 ranks
    assert_same_index(double, single)


def test_a_model_that_does_not_match_is_refused(built, saved_model, tmp_path, capsys):
    out, folder = built
    index = VideoIndex.load(out)
    model, processor, fingerprint = load_model_and_processor(saved_model)
    index.set_model(model, processor, fingerprint)  # the right one is accepted

    vocab = len(processor.tokenizer)
    other_dimension = S2CAModel(tiny_config(vocab_size=vocab, num_concepts=2)).eval()
    with pytest.raises(ModelMismatchError, match="dimensional vectors"):
        index.set_model(other_dimension, processor)
    other_config = S2CAModel(index_model_config(vocab, concept_eps=0.5)).eval()
    other_config.load_state_dict(model.state_dict())  # same weights and dimension, another config
    with pytest.raises(ModelMismatchError, match="config"):
        index.set_model(other_config, processor)
    other_weights = S2CAModel(index_model_config(vocab)).eval()
    with pytest.raises(ModelMismatchError, match="weights"):
        index.set_model(other_weights, processor)
    with pytest.raises(ModelMismatchError, match="dimension"):
        index.search(torch.randn(1, 7))

    # Through the command: --model with another checkpoint is refused with the reason.
    other_folder = tmp_path / "other"
    other_dimension.save_pretrained(other_folder)
    processor.save_pretrained(other_folder)
    capsys.readouterr()
    assert search_main(["--index", out, "--model", str(other_folder), "the dog"]) == 2
    assert "dimensional vectors" in capsys.readouterr().err
    # And adding to the index with it is refused too.
    assert index_main(["--model", str(other_folder), "--videos", str(folder), "--out", out, "--quiet"]) == 2
    assert "already holds an index built with other settings" in capsys.readouterr().err


def test_an_empty_folder_gives_a_clear_message(saved_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "nested").mkdir(parents=True)
    (empty / "readme.txt").write_text("no video here")
    assert index_main(["--model", saved_model, "--videos", str(empty), "--out", str(tmp_path / "idx")]) == 2
    error = capsys.readouterr().err
    assert f"No video file found in {empty}" in error and "nothing to index" in error
    assert (
        index_main(["--model", saved_model, "--videos", str(tmp_path / "missing"), "--out", str(tmp_path / "i")]) == 2
    )
    assert "Video folder not found" in capsys.readouterr().err

    # Only unreadable videos: an empty index, listed skips, and search says so.
    (empty / "bad.mkv").write_bytes(b"")
    assert index_main(["--model", saved_model, "--videos", str(empty), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    assert read_manifest(tmp_path / "idx")["count"] == 0
    assert search_main(["--index", str(tmp_path / "idx"), "the dog"]) == 2
    assert "holds no video" in capsys.readouterr().err
    assert search_main(["--index", str(tmp_path / "nowhere"), "the dog"]) == 2
    assert "No video index at" in capsys.readouterr().err


def test_corpus_source_uses_load_corpus_lazily(saved_model, video_folder, tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    out = str(tmp_path / "idx")
    # Without s2ca_hf.data the corpus path says what is missing; folders never need it.
    monkeypatch.setitem(sys.modules, "s2ca_hf.data", None)
    assert index_main(["--model", saved_model, "--videos", f"corpus:msrvtt:{tmp_path}:test", "--out", out]) == 2
    assert "s2ca_hf.data.load_corpus" in capsys.readouterr().err
    assert index_main(["--model", saved_model, "--videos", "corpus:msrvtt", "--out", out]) == 2
    assert "corpus:NAME:DATA_DIR:SPLIT" in capsys.readouterr().err

    calls = []

    def load_corpus(name, data_dir, split, video_dir=None, allow_missing=False):
        calls.append((name, data_dir, split, video_dir))
        rows = [  # two captions of one video, and a second video cut to a window
            ("clip0", video_name(0), "a", None, None),
            ("clip0", video_name(0), "b", None, None),
            ("clip3", video_name(3), "c", 1.0, 3.0),
        ]
        return datasets.Dataset.from_dict(
            {
                "video_id": [r[0] for r in rows],
                "video_path": [str(video_folder / r[1]) for r in rows],
                "text": [r[2] for r in rows],
                "video_index": [0, 0, 1],
                "start": [r[3] for r in rows],
                "end": [r[4] for r in rows],
            }
        )

    monkeypatch.setitem(sys.modules, "s2ca_hf.data", types.SimpleNamespace(load_corpus=load_corpus))
    spec = f"corpus:toy:{tmp_path}:val"
    assert index_main(["--model", saved_model, "--videos", spec, "--video-dir", str(video_folder), "--out", out]) == 0
    assert calls == [("toy", str(tmp_path), "val", str(video_folder))]
    index = VideoIndex.load(out)
    assert index.ids == ["clip0", "clip3@1.0-3.0"]
    rows = index.table.to_pylist()
    assert rows[1]["start"] == 1.0 and rows[1]["end"] == 3.0
    assert rows[1]["sampled_frames"] == 3  # seconds 1, 2 and 3 of the window, one frame each
    assert index.manifest["source"] == {
        "kind": "corpus",
        "name": "toy",
        "data_dir": str(tmp_path),
        "split": "val",
        "video_dir": str(video_folder),
    }


def test_one_video_file_is_an_index_of_one_and_a_non_video_is_named(saved_model, video_folder, tmp_path, capsys):
    from s2ca_hf.retrieval.cli import index_main

    video = next(video_folder.rglob("*.mp4"))
    out = tmp_path / "one"
    assert index_main(["--model", saved_model, "--videos", str(video), "--out", str(out), "--quiet"]) == 0
    index = VideoIndex.load(out)
    assert index.ids == [video.name] and index.search("the dog", k=1)[0][0].path == str(video)
    notes = video_folder / "notes.txt"
    assert index_main(["--model", saved_model, "--videos", str(notes), "--out", str(tmp_path / "x")]) == 2
    assert "notes.txt is not a video file" in capsys.readouterr().err


def test_paths_are_stored_relative_to_the_indexed_folder_and_resolved_where_the_videos_are(
    saved_model, video_folder, tmp_path, capsys
):
    import json
    import shutil

    from s2ca_hf.retrieval.cli import index_main, search_main

    videos = shutil.copytree(video_folder, tmp_path / "place" / "videos")
    out = tmp_path / "place" / "index"
    assert index_main(["--model", saved_model, "--videos", str(videos), "--out", str(out), "--quiet"]) == 0
    stored = VideoIndex.load(out).table.column("path").to_pylist()
    assert all(not os.path.isabs(path) for path in stored) and "sub/dir/v1.mp4" in stored

    def hit_paths(index):
        return [hit.path for hit in index.search("the dog", k=3)[0]]

    here = hit_paths(VideoIndex.load(out))
    assert all(path.startswith(str(videos)) and os.path.isfile(path) for path in here)
    # Moved together (the indexed folder no longer exists): the paths follow, seen from the index.
    shutil.move(str(tmp_path / "place"), str(tmp_path / "moved"))
    moved = hit_paths(VideoIndex.load(tmp_path / "moved" / "index"))
    assert moved == [path.replace(str(tmp_path / "place"), str(tmp_path / "moved")) for path in here]
    assert all(os.path.isfile(path) for path in moved)
    # The index alone elsewhere, its videos somewhere else: --videos_root says where.
    shutil.move(str(tmp_path / "moved" / "videos"), str(tmp_path / "elsewhere"))
    capsys.readouterr()
    argv = ["--index", str(tmp_path / "moved" / "index"), "the dog", "-k", "3", "--json"]
    assert search_main([*argv, "--videos-root", str(tmp_path / "elsewhere")]) == 0
    found = [hit["path"] for hit in json.loads(capsys.readouterr().out)["results"][0]["hits"]]
    assert found == [path.replace(str(tmp_path / "place" / "videos"), str(tmp_path / "elsewhere")) for path in here]
    assert all(os.path.isfile(path) for path in found)


def test_an_index_with_absolute_paths_loads_as_it_is(built):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    out, folder = built
    index = VideoIndex.load(out)
    # What an index written before relative paths holds: absolute paths in the table, no videos_root.
    table = index.table.set_column(
        index.table.schema.get_field_index("path"),
        "path",
        pa.array([index.video_path(p) for p in index.table.column("path").to_pylist()], pa.string()),
    )
    old = os.path.join(os.path.dirname(out), "old-index")
    import shutil

    shutil.copytree(out, old)
    pq.write_table(table, os.path.join(old, "videos.parquet"))
    manifest = json.load(open(os.path.join(old, "manifest.json")))
    del manifest["videos_root"], manifest["videos_root_from_index"]
    json.dump(manifest, open(os.path.join(old, "manifest.json"), "w"))
    loaded = VideoIndex.load(old)
    assert [h.path for h in loaded.search("the dog", k=3)[0]] == [h.path for h in index.search("the dog", k=3)[0]]
    assert all(os.path.isabs(h.path) for h in loaded.search("the dog", k=3)[0])


def test_rerank_reorders_the_shortlist_by_the_late_interaction_score(video_folder, tmp_path, capsys):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    processor = tiny_processor(str(folder))
    config = tiny_config(vocab_size=len(processor.tokenizer), allocation="expert_choice", late_interaction_weight=1.0)
    S2CAModel(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    out = str(tmp_path / "index")
    assert index_main(["--model", str(folder), "--videos", str(video_folder), "--out", out, "--quiet"]) == 0
    index = VideoIndex.load(out, device="cpu")
    model, processor = index.load_model()
    psi = index.vectors  # as stored (float16, read as float32)
    with torch.inference_mode():
        encoded = model.encode_text(**processor(text=TEXTS, return_tensors="pt"))
        expected = encoded.embeds @ psi.t() + model.late_interaction_scores(encoded.concepts, psi)
    everything = index.search(TEXTS, k=NUM_VIDEOS, rerank=NUM_VIDEOS)
    for hits, row in zip(everything, expected):
        assert [hit.row for hit in hits] == row.argsort(descending=True).tolist()
        torch.testing.assert_close(torch.tensor([hit.score for hit in hits]), row.sort(descending=True).values)
    # A shortlist of 3: the first stage's best 3, reordered; the rest never enters.
    first = index.search(TEXTS, k=3)
    short = index.search(TEXTS, k=3, rerank=3)
    for plain, reranked in zip(first, short):
        assert sorted(h.row for h in plain) == sorted(h.row for h in reranked)
    streamed = VideoIndex.load(out, device="cpu", in_memory=False)
    streamed.load_model()
    assert [[h.row for h in hits] for hits in streamed.search(TEXTS, k=3, rerank=5)] == [
        [h.row for h in hits] for hits in index.search(TEXTS, k=3, rerank=5)
    ]
    capsys.readouterr()
    assert search_main(["--index", out, "--json", "-k", "2", "--rerank", "5", TEXTS[0]]) == 0
    printed = json.loads(capsys.readouterr().out)["results"][0]["hits"]
    assert [hit["id"] for hit in printed] == [h.id for h in index.search(TEXTS[:1], k=2, rerank=5)[0]]


def test_rerank_needs_a_model_with_a_re_ranker(built):
    index = VideoIndex.load(built[0], device="cpu")
    with pytest.raises(ValueError, match="no late-interaction re-ranker"):
        index.search(TEXTS[:1], k=2, rerank=4)
