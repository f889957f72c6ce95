"""The frame cache: the same tensors as decoding through the processor, keyed by policy, and on_error."""

import logging
import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from s2ca_hf.data import (
    FrameCache,
    VideoTextCollator,
    build_frame_cache,
    corpus_videos,
    generate_synthetic_corpus,
    load_corpus,
)
from s2ca_hf.tiny import tiny_processor
from s2ca_hf.video_io import VideoDecodeError


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    # 12 s clips at 2 fps (24 frames), 32 px: 12 one-per-second candidates, sliced to max_frames.
    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    return generate_synthetic_corpus(out, num_videos=30, seed=3, size=32, num_frames=24, fps=2, num_proc=1)


@pytest.fixture
def processor(tmp_path):
    return tiny_processor(str(tmp_path / "tok"), max_frames=4)


def test_cache_equals_decoding_through_the_processor(corpus_dir, processor, tmp_path):
    train = load_corpus("synthetic", corpus_dir, "train")
    videos = corpus_videos(train)
    cache = build_frame_cache(train, processor, cache_dir=tmp_path / "cache", num_proc=2)
    assert len(cache) == len(videos) and not cache.failed
    assert len(cache.meta["shards"]) == 2  # built by two processes
    ids = list(videos["video_id"])
    cached = cache.video_inputs(ids, processor)
    direct = processor.video_processor(videos=list(videos["video_path"]), return_tensors="pt")
    assert cached["pixel_values_videos"].dtype == torch.float32
    assert cached["pixel_values_videos"].shape == (len(ids), 4, 3, 32, 32)
    assert torch.equal(cached["pixel_values_videos"], direct["pixel_values_videos"])
    assert torch.equal(cached["frame_mask"], direct["frame_mask"])
    # the uint8 frames are the processor's resized and cropped frames, before normalisation
    frames, mask = cache.frames(ids[:2])
    assert frames.dtype == torch.uint8 and frames.shape == (2, 4, 3, 32, 32)

    # the collate function gives the same batch from the cache as from the files, text included
    rows = [train[i] for i in range(0, len(train), 7)]
    from_cache = VideoTextCollator(processor, cache, return_video_index=True)(rows)
    from_files = VideoTextCollator(processor, return_video_index=True)(rows)
    assert sorted(from_cache) == ["attention_mask", "frame_mask", "input_ids", "pixel_values_videos", "video_index"]
    for key in from_cache:
        assert torch.equal(from_cache[key], from_files[key]), key
    assert from_cache["video_index"].tolist() == [row["video_index"] for row in rows]


def test_cache_is_reused_and_a_changed_policy_builds_a_new_one(corpus_dir, processor, tmp_path, monkeypatch):
    test = load_corpus("synthetic", corpus_dir, "test")
    first = build_frame_cache(test, processor, cache_dir=tmp_path, num_proc=1)

    def no_decoding(*args, **kwargs):
        raise AssertionError("an existing cache must not be decoded again")

    monkeypatch.setattr("s2ca_hf.data.cache.read_frames", no_decoding)
    again = build_frame_cache(test, processor, cache_dir=tmp_path, num_proc=1)
    assert again.path == first.path
    monkeypatch.undo()

    head = tiny_processor(str(tmp_path / "tok2"), max_frames=2, slice_framepos="head")
    second = build_frame_cache(test, head, cache_dir=tmp_path, num_proc=1)
    assert second.path != first.path
    assert second.policy.max_frames == 2 and second.policy.slice_framepos == "head"
    video_id = test[0]["video_id"]
    assert torch.equal(second.frames([video_id])[0][0, 0], first.frames([video_id])[0][0, 0])  # both keep second 0
    direct = head.video_processor(videos=[test[0]["video_path"]], return_tensors="pt")
    assert torch.equal(second.video_inputs([video_id], head)["pixel_values_videos"], direct["pixel_values_videos"])
    with pytest.raises(ValueError, match="policy or resolution differs"):
        second.video_inputs([video_id], processor)
    assert len({first.path, second.path, FrameCache(first.path).path}) == 2


def test_a_rewritten_video_file_builds_a_new_cache(corpus_dir, processor, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(os.path.join(corpus_dir, "videos"), videos)
    test = load_corpus("synthetic", corpus_dir, "test", video_dir=videos)
    first = build_frame_cache(test, processor, cache_dir=tmp_path / "cache", num_proc=1)
    # a regenerated corpus: same names, other content
    other = load_corpus("synthetic", corpus_dir, "train")[0]["video_path"]
    target = test[0]["video_path"]
    shutil.copyfile(other, target)
    os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 10**9))
    second = build_frame_cache(test, processor, cache_dir=tmp_path / "cache", num_proc=1)
    assert second.path != first.path
    direct = processor.video_processor(videos=[other], return_tensors="pt")
    assert torch.equal(
        second.video_inputs([test[0]["video_id"]], processor)["pixel_values_videos"], direct["pixel_values_videos"]
    )


@pytest.fixture
def damaged_corpus(corpus_dir, tmp_path):
    """The compositional split (3 videos) with its first video corrupt and its second deleted after loading."""
    videos = tmp_path / "videos"
    videos.mkdir()
    test = load_corpus("synthetic", corpus_dir, "compositional")
    for path in test["video_path"]:
        (videos / os.path.basename(path)).write_bytes(open(path, "rb").read())
    dataset = load_corpus("synthetic", corpus_dir, "compositional", video_dir=videos)
    paths = corpus_videos(dataset)["video_path"]
    with open(paths[0], "r+b") as f:
        f.truncate(os.path.getsize(paths[0]) // 2)
    os.remove(paths[1])
    return dataset, paths


def test_on_error_raise_names_the_file(damaged_corpus, processor, tmp_path):
    dataset, paths = damaged_corpus
    with pytest.raises(VideoDecodeError, match=os.path.basename(paths[0])):
        build_frame_cache(dataset, processor, cache_dir=tmp_path / "cache", num_proc=1)
    assert not [name for name in os.listdir(tmp_path / "cache") if not name.startswith(".")]  # nothing half-built
    with pytest.raises(VideoDecodeError, match=os.path.basename(paths[0])):
        VideoTextCollator(processor)([dataset[0]])


def test_on_error_skip_logs_each_file_and_the_count(damaged_corpus, processor, tmp_path, caplog):
    dataset, paths = damaged_corpus
    with caplog.at_level(logging.WARNING):
        cache = build_frame_cache(dataset, processor, cache_dir=tmp_path / "cache", num_proc=1, on_error="skip")
    bad = corpus_videos(dataset)["video_id"][:2]
    assert sorted(cache.failed) == sorted(bad)
    assert all(f"Skipping video {video_id}" in caplog.text for video_id in bad)
    assert f"2 of {len(paths)} videos could not be decoded" in caplog.text
    assert bad[0] not in cache and corpus_videos(dataset)["video_id"][2] in cache
    with pytest.raises(KeyError, match="skipped"):
        cache.frames([bad[0]])

    kept = cache.filter_corpus(dataset)
    assert len(kept) == len(dataset) - 2 and set(kept["video_id"]).isdisjoint(bad)
    assert corpus_videos(kept)["video_index"] == list(range(len(paths) - 2))
    batch = cache.video_inputs(kept["video_id"], processor)
    assert batch["frame_mask"].all()

    # the collator skips the same rows, from the cache or from the files, and counts them
    for frame_cache in (cache, None):
        collator = VideoTextCollator(processor, frame_cache, on_error="skip", return_video_index=True)
        batches = list(DataLoader(dataset, batch_size=4, collate_fn=collator))
        assert collator.num_skipped == 2
        assert sum(len(b["video_index"]) for b in batches if b) == len(dataset) - 2


def test_random_caption_draw_without_sentence_expansion(corpus_dir, processor):
    train = load_corpus("synthetic", corpus_dir, "train", expand_sentences=False)
    row = train[0]
    collator = VideoTextCollator(processor, seed=0)
    drawn = {collator._text(row) for _ in range(50)}
    assert len(drawn) > 1 and drawn <= set(row["captions"])


FORK_AFTER_TORCH = """
import sys
import torch
from s2ca_hf.data import build_frame_cache, generate_synthetic_corpus, load_corpus
from s2ca_hf.tiny import tiny_processor

out = sys.argv[1]
corpus = generate_synthetic_corpus(out + "/corpus", num_videos=12, seed=3, size=64, num_frames=8, fps=2, num_proc=1)
processor = tiny_processor(out + "/tok", max_frames=4)
torch.set_num_threads(2)
x = torch.randn(4_000_000)
for _ in range(20):
    x = (x * 1.0001).contiguous().clone()  # parallel kernels: this process now has an OpenMP thread team
cache = build_frame_cache(load_corpus("synthetic", corpus, "train"), processor, cache_dir=out + "/cache", num_proc=2)
print("cached", len(cache))
"""


@pytest.mark.slow
def test_workers_forked_after_torch_ran_do_not_hang(tmp_path):
    # train.py pretrains the small CLIP (torch's OpenMP team is up), then builds the frame cache with forked
    # workers: their first parallel kernel used to wait forever for the parent's threads (a deadlock in libgomp).
    import subprocess
    import sys

    script = tmp_path / "fork_after_torch.py"
    script.write_text(FORK_AFTER_TORCH)
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=180
        )
    except subprocess.TimeoutExpired:
        pytest.fail("building the frame cache in forked workers after torch ran hung")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cached 8" in done.stdout  # 12 clips: 1 val, 1 test, 1 compositional, 1 open_vocab
