"""The video index and search (`s2ca_hf.retrieval.index`, `s2ca-index`, `s2ca-search`) on generated clips."""

import copy
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from s2ca_hf import S2CAModel, S2CAProcessor
from s2ca_hf.retrieval import build as build_module
from s2ca_hf.retrieval import store as store_module
from s2ca_hf.retrieval.cli import index_main, search_main
from s2ca_hf.retrieval.index import (
    EmptyCollectionError,
    ModelMismatchError,
    VideoIndex,
    VideoIndexError,
    build_faiss_index,
    build_index,
    exact_search,
    faiss_search,
    load_model_and_processor,
    read_manifest,
)
from s2ca_hf.tiny import tiny_config, tiny_processor
from s2ca_hf.utils import file_sha256
from s2ca_hf.video_io import encode_frames


av = pytest.importorskip("av")

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


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    processor = tiny_processor(str(folder))
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0)).eval()
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
    real_write = build_module._write_shard
    calls = []

    def write_then_die(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_write(*args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(build_module, "_write_shard", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, processor, str(folder), resumed, **common)
    monkeypatch.setattr(build_module, "_write_shard", real_write)
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


# Runs in a fresh interpreter: forking a process whose torch thread pool is already running (as pytest's is, once a
# test has encoded anything) deadlocks the children. Each rank appends the shards it writes to a log.
TWO_PROCESS_SCRIPT = """
import os, sys
from accelerate import PartialState, debug_launcher
from s2ca_hf.retrieval import build as build_module
from s2ca_hf.retrieval.cli import index_main

log, argv = sys.argv[1], sys.argv[2:]
real_write = build_module._write_shard

def logged_write(*args, **kwargs):
    name = real_write(*args, **kwargs)
    with open(log, "a") as handle:
        handle.write(str(PartialState().process_index) + " " + name + "\\n")
    return name

build_module._write_shard = logged_write
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
    other_config = S2CAModel(tiny_config(vocab_size=vocab, prototype_init_std=1.0, concept_eps=0.5)).eval()
    other_config.load_state_dict(model.state_dict())  # same weights and dimension, another config
    with pytest.raises(ModelMismatchError, match="config"):
        index.set_model(other_config, processor)
    other_weights = S2CAModel(tiny_config(vocab_size=vocab, prototype_init_std=1.0)).eval()
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


# --------------------------------------------------------------------------------------------------------------
# Search kernels


def reference_topk(queries, vectors, k):
    scores = queries.float() @ vectors.float().T
    top = scores.topk(k, dim=1)
    return top.values, top.indices


def test_chunked_exact_search_equals_unchunked():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(1000, 48, generator=generator).half()
    queries = torch.randn(7, 48, generator=generator)
    expected_scores, expected_rows = reference_topk(queries, vectors, 10)

    whole = exact_search(queries, vectors, k=10, chunk_size=len(vectors))
    chunked = exact_search(queries, vectors, k=10, chunk_size=37, query_batch_size=3)
    listed = exact_search(queries, list(vectors.split(101)), k=10)
    half = exact_search(queries, vectors, k=10, chunk_size=64, half_products=True)  # the GPU path, re-scored
    for scores, rows in (whole, chunked, listed, half):
        assert torch.equal(rows, expected_rows)
        torch.testing.assert_close(scores, expected_scores)

    # k past the number of rows gives every row; equal scores come in row order whatever the chunking.
    tied = torch.cat([vectors[:5], vectors[:5]])
    scores, rows = exact_search(queries[:1], tied, k=50, chunk_size=3)
    assert rows.shape == (1, 10)
    assert all(rows[0, 2 * i] < rows[0, 2 * i + 1] for i in range(5))
    with pytest.raises(TypeError, match="re-iterable"):
        exact_search(queries, iter(list(vectors.split(100))), k=3)


def test_faiss_returns_the_exact_top_k(built):
    pytest.importorskip("faiss")
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(2000, 64, generator=generator).half()
    queries = torch.randn(20, 64, generator=generator)
    exact_scores, exact_rows = exact_search(queries, vectors, k=10)
    for factory, nprobe in (("SQfp16", None), ("Flat", None), ("IVF8,Flat", 8)):  # IVF probing every list is exact
        index = build_faiss_index(list(vectors.split(300)), 64, factory, train_size=1000, add_batch=256)
        scores, rows = faiss_search(index, queries, k=10, nprobe=nprobe)
        assert torch.equal(rows, exact_rows), factory
        torch.testing.assert_close(scores, exact_scores, atol=1e-4, rtol=1e-4)

    out, _ = built
    video_index = VideoIndex.load(out)
    exact = video_index.search(TEXTS, k=4)
    with_faiss = video_index.search(TEXTS, k=4, backend="faiss")
    assert [[h.id for h in hits] for hits in with_faiss] == [[h.id for h in hits] for hits in exact]


def test_a_damaged_index_is_reported(built, tmp_path):
    out, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = read_manifest(copy)
    os.remove(copy / manifest["shards"][0]["file"])
    with pytest.raises(VideoIndexError, match="is missing"):
        VideoIndex.load(copy)
    shutil.copy(os.path.join(out, manifest["shards"][0]["file"]), copy / manifest["shards"][0]["file"])
    manifest["content_id"] = "0" * 32
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VideoIndexError, match="interrupted commit"):
        VideoIndex.load(copy)
    assert issubclass(EmptyCollectionError, VideoIndexError)


def test_symlink_loops_are_walked_once(tmp_path):
    # A link back to an ancestor used to index the same clip once per lap (41 times) and walk for minutes.
    import time

    from s2ca_hf.data.annotation_files import VideoFiles
    from s2ca_hf.retrieval.index import folder_videos
    from s2ca_hf.video_io import write_video

    root = tmp_path / "videos"
    (root / "a" / "b").mkdir(parents=True)
    write_video(str(root / "a" / "b" / "clip.mp4"), num_frames=4)
    os.symlink(root, root / "a" / "b" / "loop")  # b/loop -> videos/
    os.symlink(root / "a", root / "a2")  # a second name for a real folder
    started = time.time()
    items = folder_videos(root)
    assert [item.id for item in items] == ["a/b/clip.mp4"] and time.time() - started < 10
    assert VideoFiles(str(root)).by_stem == {"clip": [str(root / "a" / "b" / "clip.mp4")]}


def test_every_index_file_has_one_mode_and_overwrite_deletes_only_index_shards(built, saved_model, tmp_path, capsys):
    out, folder = built
    files = [Path(out) / store_module.MANIFEST_FILE] + sorted((Path(out) / "shards").glob("shard-*.safetensors"))
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}
    assert len(set(modes.values())) == 1 and all(mode & 0o044 for mode in modes.values()), modes  # readable by others
    # --overwrite on a folder that is no index, whose shards/ holds a user's file named like a shard: the file is
    # kept (only the index's own shards are ever deleted) and the build stops naming it
    target = tmp_path / "not-an-index"
    (target / "shards").mkdir(parents=True)
    user_file = target / "shards" / "shard-notes.safetensors"
    user_file.write_bytes(b"my own notes, not an index shard")
    code = index_main(["--model", saved_model, "--videos", str(folder), "--out", str(target), "--overwrite"])
    assert code != 0 and "shard-notes.safetensors" in capsys.readouterr().err
    assert user_file.read_bytes() == b"my own notes, not an index shard"
    # a real index is still replaced by --overwrite
    again = tmp_path / "again"
    shutil.copytree(out, again)
    assert index_main(["--model", saved_model, "--videos", str(folder), "--out", str(again), "--overwrite"]) == 0
    assert VideoIndex.load(str(again)).ids == VideoIndex.load(out).ids


def test_bad_queries_get_a_message_not_a_traceback(built, tmp_path, capsys):
    import torch

    out, _ = built
    bad_file = tmp_path / "texts.txt"
    bad_file.write_bytes(b"a dog\n\xff\xfe not utf-8\n")
    cases = [
        (["--index", out, "   "], "text 1 is empty"),
        (["--index", out, "a dog", "caf\udce9"], "text 2 is not valid UTF-8"),
        (["--index", out, "a dog", "--nprobe", "0"], "--nprobe must be >= 1"),
        (["--index", out, "a dog", "--nprobe", "4"], "apply to --backend faiss only"),
        (
            ["--index", out, "a dog", "--backend", "faiss", "--faiss-factory", "garbage"],
            "cannot build the index factory",
        ),
        (["--index", out, "a dog", "--backend", "faiss", "--faiss-factory", "IVF64,SQfp16"], "could not train"),
        (["--index", out, "a dog", "--backend", "faiss", "--nprobe", "4"], "nprobe applies to IVF indexes only"),
        (["--index", out, "--video-id", "x", "--texts-file", str(bad_file)], "is not UTF-8"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--index", out, "a dog", "--device", "cuda"], "no CUDA device"))
    for argv, message in cases:
        try:
            code = search_main(argv)
        except SystemExit as exit_:  # argparse's error
            code = exit_.code
        assert code == 2, argv
        assert message in capsys.readouterr().err, argv


def test_corrupt_shards_and_manifests_give_errors_naming_the_file_never_a_ranking(built, saved_model, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out, folder = built
    shard = read_manifest(out)["shards"][0]
    assert len(shard["sha256"]) == 64  # every shard's checksum is in the manifest

    def damaged_copy(name):
        copy = tmp_path / name
        shutil.copytree(out, copy)
        return copy, copy / shard["file"]

    # flipped bytes in the vectors: the checksum catches them on load (and search never runs on them)
    copy, path = damaged_copy("flipped")
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(255 - b for b in data[-8:])
    path.write_bytes(bytes(data))
    with pytest.raises(VideoIndexError, match=f"{path.name}.*checksum"):
        VideoIndex.load(copy).search(["a dog"], k=3)
    # ... and on resume
    assert index_main(["--model", saved_model, "--videos", str(folder), "--out", str(copy)]) == 2
    # a truncated shard
    copy, path = damaged_copy("truncated")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(VideoIndexError, match=path.name):
        _ = VideoIndex.load(copy).vectors
    # NaN vectors in a well-formed shard whose checksum was updated too: still refused
    copy, path = damaged_copy("nan")
    tensors = load_file(path)
    tensors["vectors"][0] = float("nan")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, path, metadata=metadata)
    manifest = read_manifest(copy)
    manifest["shards"][0]["sha256"] = file_sha256(str(path))
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VideoIndexError, match=f"{path.name}.*non-finite"):
        VideoIndex.load(copy, in_memory=False).vector(VideoIndex.load(copy).ids[0])
    # a manifest that is not JSON
    copy, _ = damaged_copy("manifest")
    (copy / "manifest.json").write_text('{"format": "s2ca')
    with pytest.raises(VideoIndexError, match="manifest.json cannot be read"):
        VideoIndex.load(copy)


def test_the_text_side_is_checked_too(built, saved_model):
    # Same weights, another max_text_length or tokenizer: the queries would rank differently, so it is refused.
    out, _ = built
    model, processor, fingerprint = load_model_and_processor(saved_model)
    index = VideoIndex.load(out)
    assert read_manifest(out)["text"]["max_text_length"] == processor.max_text_length
    index.set_model(model, processor, fingerprint)  # the processor saved with the model is accepted
    shorter = S2CAProcessor(processor.video_processor, processor.tokenizer, max_text_length=5)
    with pytest.raises(ModelMismatchError, match="max_text_length 5"):
        index.set_model(model, shorter, fingerprint)
    other_tokenizer = copy.deepcopy(processor)
    other_tokenizer.tokenizer.add_tokens(["zebra"])
    with pytest.raises(ModelMismatchError, match="tokenizer_sha256"):
        index.set_model(model, other_tokenizer, fingerprint)


# Holds the index lock as a second s2ca-index run would, until its stdin closes.
HOLD_LOCK_SCRIPT = """
import sys
from s2ca_hf.retrieval.store import IndexLock
lock = IndexLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


def test_a_second_writer_is_refused_naming_the_holder_and_can_wait(built, saved_model, tmp_path, capsys):
    out, folder = built
    copy = tmp_path / "locked"
    shutil.copytree(out, copy)
    # the other writer's temporary file, which a starting run used to delete under it
    in_progress = copy / "shards" / ("shard-" + "0" * 20 + ".safetensors.99999.tmp")
    in_progress.write_bytes(b"half-written")
    before = read_manifest(copy)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_SCRIPT, str(copy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        argv = ["--model", saved_model, "--videos", str(folder), "--out", str(copy), "--shard-size", "3"]
        assert index_main(argv) == 2
        error = capsys.readouterr().err
        assert f"process {holder.pid}" in error and "being written by another s2ca-index run" in error
        started = time.monotonic()
        assert index_main([*argv, "--lock-timeout", "1"]) == 2
        assert time.monotonic() - started >= 1.0 and "after waiting 1 s" in capsys.readouterr().err
        assert in_progress.exists() and read_manifest(copy) == before  # nothing touched while locked
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # the holder is gone: its temporary file is stale and removed; another shard size adds no duplicate row
    assert index_main(argv) == 0
    assert not in_progress.exists()
    ids = VideoIndex.load(copy).ids
    assert len(ids) == len(set(ids)) == before["count"]


def test_only_the_packages_own_temporary_files_are_removed(built, saved_model, tmp_path):
    out, folder = built
    copy = tmp_path / "tmp-files"
    shutil.copytree(out, copy)
    stale = [copy / "shards" / ("shard-" + "a" * 20 + ".safetensors.123.tmp"), copy / "manifest.json.77.tmp"]
    users = [copy / "shards" / "notes.tmp", copy / "my-list.tmp", copy / "shards" / "shard-x.safetensors.1.tmp"]
    for path in [*stale, *users]:
        path.write_bytes(b"x")
    assert index_main(["--model", saved_model, "--videos", str(folder), "--out", str(copy)]) == 0
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in users)


def test_a_video_in_two_shards_is_never_committed(built, tmp_path):
    out, _ = built
    copy = tmp_path / "duplicated"
    shutil.copytree(out, copy)
    (original,) = store_module._scan_shards(str(copy / "shards"))
    # a shard folder changed by hand: a copy of a shard under another name claims the same videos
    twin = "shard-" + "f" * 20 + ".safetensors"
    shutil.copy(copy / "shards" / original, copy / "shards" / twin)
    headers = store_module._scan_shards(str(copy / "shards"))
    manifest = read_manifest(copy)
    settings = {key: manifest[key] for key in ("model", "encoding_dtype", "frame_policy", "source")}
    video_id = headers[original]["rows"][0]["id"]
    with pytest.raises(
        VideoIndexError, match=f"{video_id!r} is in two shards.*({original}.*{twin}|{twin}.*{original})"
    ):
        store_module._commit(str(copy), headers, settings, {})
    assert read_manifest(copy) == manifest  # nothing was committed


def test_the_index_and_the_frame_cache_take_the_same_frames_of_a_clip_window(tmp_path):
    # X-Pool with a time window (a DiDeMo / ActivityNet clip): the index used to ignore the window.
    from helpers import BRIGHTNESS_STEP, write_numbered_video

    from s2ca_hf.data.cache import _decode_video

    path = str(write_numbered_video(tmp_path / "numbered.mp4", num_frames=40, fps=4))
    processor = tiny_processor(str(tmp_path / "tok"), max_frames=4, frame_sampling="xpool")
    start, end = 5.0, 8.0  # frames 20-31 at 4 fps

    pixels, frame_mask, _ = build_module.decode_for_index(processor, path, start, end)
    row = {"video_id": "v", "video_path": path, "start": start, "end": end}
    video_processor = processor.video_processor
    cached = _decode_video(row, video_processor.frame_policy.to_dict(), video_processor.to_dict(), "raise")
    frames = torch.frombuffer(bytearray(cached["frames"]), dtype=torch.uint8).view(4, 3, *pixels.shape[-2:])
    # the cache holds uint8 frames before scaling: scale them as the processor does, then compare
    mean = torch.tensor(video_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(video_processor.image_std).view(1, 3, 1, 1)
    torch.testing.assert_close(pixels[0], (frames.float() / 255 - mean) / std, atol=1e-5, rtol=0)
    assert frame_mask.tolist() == [cached["frame_mask"]] == [[1, 1, 1, 1]]
    brightness = (frames.float().mean(dim=(1, 2, 3)) / BRIGHTNESS_STEP).round().tolist()
    assert all(20 <= b <= 31 for b in brightness), brightness  # inside the window


def test_a_cosine_or_normalising_search_is_refused():
    vectors = torch.randn(5, 8)
    with pytest.raises(ValueError, match="not unit vectors"):
        exact_search(vectors[:1], vectors, k=2, metric="cosine")
    with pytest.raises(ValueError, match="normalises the vectors"):
        build_faiss_index(vectors, 8, "L2norm,Flat")
    with pytest.raises(ValueError, match="not unit vectors"):
        build_faiss_index(vectors, 8, metric="cosine")
