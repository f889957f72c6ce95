"""The video index's search kernels (chunked exact top-k, FAISS) and its integrity: damaged or corrupt files,
file modes, the writer's lock, temporary files, a video in two shards, clip windows, refused metrics."""

import copy
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from index_helpers import TEXTS

from s2ca_hf import S2CAProcessor
from s2ca_hf.retrieval import build as build_module
from s2ca_hf.retrieval import store as store_module
from s2ca_hf.retrieval.build import load_model_and_processor
from s2ca_hf.retrieval.cli import index_main, search_main
from s2ca_hf.retrieval.errors import EmptyCollectionError, ModelMismatchError, VideoIndexError
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.search import build_faiss_index, exact_search, faiss_search
from s2ca_hf.retrieval.store import read_manifest
from s2ca_hf.tiny import tiny_processor
from s2ca_hf.utils import file_sha256


# The fixtures saved_model, video_folder and built, shared with the other index test module.
pytest_plugins = ["index_helpers"]

av = pytest.importorskip("av")

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
    from s2ca_hf.retrieval.sources import folder_videos
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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_query_vectors_are_refused_by_every_search(built, bad, tmp_path):
    out = shutil.copytree(built[0], tmp_path / "idx")
    index = VideoIndex.load(out, device="cpu")
    queries = index.encode_texts(TEXTS).clone()
    queries[1, 3] = bad
    for backend in ("exact", "faiss"):
        with pytest.raises(ValueError, match=r"Query vector\(s\) 1 of 3 hold NaN or infinite values"):
            index.search(queries, k=2, backend=backend)
    with pytest.raises(ValueError, match="NaN or infinite"):
        exact_search(queries[1], index.vectors, k=2)  # one (E,) query
    with pytest.raises(ValueError, match="NaN or infinite"):
        faiss_search(build_faiss_index(index.vectors, index.dimension, "Flat"), queries, k=2)
    index.build_first_stage(factory="Flat", progress=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        VideoIndex.load(out, device="cpu").search(queries, k=2, backend="two_stage")


def test_an_nprobe_below_one_is_refused_with_a_message(built, tmp_path):
    out, _ = built
    copy_ = shutil.copytree(out, tmp_path / "probe")
    index = VideoIndex.load(copy_, device="cpu")
    for nprobe in (0, -3, 1.5):
        with pytest.raises(ValueError, match="nprobe .* must be an integer >= 1"):
            index.build_first_stage(factory="IVF2,Flat", nprobe=nprobe, progress=False)
        with pytest.raises(ValueError, match="nprobe .* must be an integer >= 1"):
            faiss_search(build_faiss_index(index.vectors, index.dimension, "Flat"), index.vectors[:1], nprobe=nprobe)
    index.build_first_stage(factory="IVF2,Flat", progress=False)
    settings_file = Path(copy_) / "first_stage" / "settings.json"
    settings = json.loads(settings_file.read_text())
    settings["nprobe"] = 0  # a hand-edited or damaged settings file
    settings_file.write_text(json.dumps(settings))
    with pytest.raises(VideoIndexError, match="settings.json: nprobe .* got 0. rebuild it"):
        VideoIndex.load(copy_, device="cpu").search("a dog", k=2)


def test_bad_queries_get_a_message_not_a_traceback(built, tmp_path, capsys):
    import torch

    out, _ = built
    bad_file = tmp_path / "texts.txt"
    bad_file.write_bytes(b"a dog\n\xff\xfe not utf-8\n")
    cases = [
        (["--index", out, "   "], "text 1 is empty"),
        (["--index", out, "a dog", "caf\udce9"], "text 2 is not valid UTF-8"),
        (["--index", out, "a dog", "--nprobe", "0"], "--nprobe must be >= 1"),
        (["--index", out, "a dog", "--nprobe", "4"], "has no first stage"),
        (["--index", out, "a dog", "--exact", "--nprobe", "4"], "not to exact search"),
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
    # ... and on resume, which says to delete it; deleted, the next run re-encodes its videos and commits them
    arguments = ["--model", saved_model, "--videos", str(folder), "--out", str(copy)]
    assert index_main(arguments) == 2
    path.unlink()
    assert index_main(arguments) == 0
    repaired, original = VideoIndex.load(copy), VideoIndex.load(out)
    assert sorted(repaired.ids) == sorted(original.ids)
    assert [h.id for h in repaired.search("a dog", k=4)[0]] == [h.id for h in original.search("a dog", k=4)[0]]
    assert index_main(arguments) == 0  # and the repaired index stays valid for the next run
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


@pytest.mark.slow  # about 8 s on 2 cores: a second process holds the lock, and the waiting run waits it out
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
    (original,) = store_module.scan_shards(str(copy / "shards"))
    # a shard folder changed by hand: a copy of a shard under another name claims the same videos
    twin = "shard-" + "f" * 20 + ".safetensors"
    shutil.copy(copy / "shards" / original, copy / "shards" / twin)
    headers = store_module.scan_shards(str(copy / "shards"))
    manifest = read_manifest(copy)
    settings = {key: manifest[key] for key in ("model", "encoding_dtype", "frame_policy", "source")}
    video_id = headers[original]["rows"][0]["id"]
    with pytest.raises(
        VideoIndexError, match=f"{video_id!r} is in two shards.*({original}.*{twin}|{twin}.*{original})"
    ):
        store_module.commit_index(str(copy), headers, settings, {})
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


def test_cosine_is_refused_when_norms_differ_and_ranks_as_the_inner_product_when_they_do_not():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(50, 8, generator=generator)
    queries = torch.randn(3, 8, generator=generator)
    with pytest.raises(ValueError, match="norms range from .* to .*sqrt.1 . lambda_e."):
        exact_search(queries, vectors, k=5, metric="cosine")
    with pytest.raises(ValueError, match="norms range from"):
        build_faiss_index(vectors, 8, metric="cosine")
    with pytest.raises(ValueError, match="normalises the vectors"):
        build_faiss_index(vectors, 8, "L2norm,Flat")
    with pytest.raises(ValueError, match="metric='euclidean' is not supported"):
        exact_search(queries, vectors, k=5, metric="euclidean")
    # One norm, as psi has with usage weights (sqrt 2 for lambda_e = 1): cosine is allowed and ranks alike.
    same = torch.nn.functional.normalize(vectors, dim=1) * 2**0.5
    ip_scores, ip_rows = exact_search(queries, same, k=5)
    cos_scores, cos_rows = exact_search(queries, same, k=5, metric="cosine")
    assert torch.equal(cos_rows, ip_rows)
    expected = torch.nn.functional.cosine_similarity(queries[:, None], same[cos_rows], dim=-1)
    torch.testing.assert_close(cos_scores, expected, atol=1e-5, rtol=1e-5)
    chunks = [same[:20].half(), same[20:].half()]  # streamed float16 chunks: within the tolerance of one norm
    assert torch.equal(exact_search(queries, chunks, k=5, metric="cosine")[1], ip_rows)
    build_faiss_index(same, 8, metric="cosine")
