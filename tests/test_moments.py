"""Moments (`s2ca-index --window SECONDS --stride SECONDS`): fixed windows of long videos indexed as items of their
own, on a generated clip whose content changes half-way (a red square, then a blue circle)."""

import json
import shutil

import numpy as np
import pytest
import torch

from s2ca_hf.frame_policy import FramePolicy
from s2ca_hf.retrieval import sources
from s2ca_hf.retrieval.build import decode_for_index, load_model_and_processor
from s2ca_hf.retrieval.cli import index_main, search_main
from s2ca_hf.retrieval.errors import VideoIndexError
from s2ca_hf.retrieval.evaluation import encode_videos
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.sources import VideoItem, check_windows, window_count, window_items, window_spans
from s2ca_hf.retrieval.store import read_manifest
from s2ca_hf.video_io import encode_frames


# The fixture saved_model (a tiny random model and its processor, saved), shared with the other index tests.
pytest_plugins = ["index_helpers"]

av = pytest.importorskip("av")

FPS = 5
SIZE = 32
HALF = 8  # seconds: the long clip is a red square for 8 s, then a blue circle for 8 s


def square(rng):
    image = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    image[8:24, 8:24] = (220, 30, 30)
    return np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)


def circle(rng):
    image = np.full((SIZE, SIZE, 3), 40, dtype=np.uint8)
    y, x = np.mgrid[:SIZE, :SIZE]
    image[(y - 16) ** 2 + (x - 16) ** 2 <= 100] = (30, 60, 230)
    return np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)


def write_clip(path, seconds_of_each, seed=0):
    """`seconds_of_each`: [(frame maker, seconds), ...] played one after the other at FPS."""
    rng = np.random.default_rng(seed)
    frames = [make(rng) for make, seconds in seconds_of_each for _ in range(seconds * FPS)]
    return encode_frames(str(path), frames, FPS, "libx264")


@pytest.fixture(scope="module")
def moments(saved_model, tmp_path_factory):
    """An index of 4-second windows every 4 seconds of a 16-second clip (square, then circle), a 2-second clip and
    a corrupt file."""
    videos = tmp_path_factory.mktemp("long-videos")
    write_clip(videos / "long.mp4", [(square, HALF), (circle, HALF)])
    write_clip(videos / "short.mp4", [(circle, 2)], seed=1)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    queries = tmp_path_factory.mktemp("queries")
    write_clip(queries / "circle.mp4", [(circle, 4)], seed=2)
    write_clip(queries / "square.mp4", [(square, 4)], seed=3)
    out = str(tmp_path_factory.mktemp("moments") / "idx")
    argv = ["--model", saved_model, "--videos", str(videos), "--out", out, "--window", "4", "--stride", "4"]
    assert index_main([*argv, "--quiet", "--batch-size", "3"]) == 0
    return out, videos, queries, argv


# --------------------------------------------------------------------------------------------------------------
# The arithmetic of windows, ids and spans
# --------------------------------------------------------------------------------------------------------------


def test_window_spans_cover_the_video_with_fixed_windows():
    assert window_spans(16, 4, 4) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert window_spans(16, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (8, 12), (10, 14), (12, 16)]
    # Windows that stop short of the end: one more window of the same length, ending with the video.
    assert window_spans(10, 4, 4) == [(0, 4), (4, 8), (6, 10)]
    assert window_spans(10, 2, 5) == [(0, 2), (5, 7), (8, 10)]  # a stride past the window leaves gaps
    # A video no longer than one window is one item covering all of it.
    assert window_spans(3.2, 4, 1) == [(0, 3.2)]
    assert window_spans(4, 4, 1) == [(0, 4)]
    # A tail window starts on a whole second (frames are read per second): it may be longer than the others.
    assert window_spans(10.5, 4, 4) == [(0, 4), (4, 8), (6, 10.5)]
    assert window_spans(23.4, 10, 5) == [(0, 10), (5, 15), (10, 20), (13, 23.4)]
    for duration, window, stride in [(16, 4, 2), (10.5, 4, 4), (9.999, 3, 2), (3.2, 4, 1), (1e5, 1, 1), (7, 1, 9)]:
        assert window_count(duration, window, stride) == len(window_spans(duration, window, stride))


def test_a_window_reads_frames_from_inside_it_only():
    from s2ca_hf.frame_policy import clip4clip_frame_indices

    # 10 fps, window 1-2 s: the first frame of seconds 1 and 2.
    assert clip4clip_frame_indices(30, 10, start_time=1, end_time=2) == [10, 20]
    # Half a frame a second: frame i is on screen from 2i to 2i + 2 s. The window 4-8 s shows frames 2 and 3 only
    # (CLIP4Clip's integer rate, 1, took frames 4 to 8: 8 to 18 s, outside it).
    assert clip4clip_frame_indices(10, 0.5, start_time=4, end_time=8) == [2, 3]
    assert clip4clip_frame_indices(10, 0.5) == list(range(10))
    assert clip4clip_frame_indices(5, 0.1, start_time=4, end_time=8) == [0]  # one frame covers the whole window


def test_a_video_that_would_give_too_many_windows_is_refused_naming_it():
    from s2ca_hf.retrieval.sources import MAX_WINDOWS_PER_VIDEO

    long = [VideoItem("day.mp4", "/v/day.mp4")]
    with pytest.raises(VideoIndexError, match=r"/v/day.mp4 \(86400 s\) would give 86400 windows .*larger --stride"):
        window_items(long, 1, 1, durations={"/v/day.mp4": 86400.0})
    assert len(window_items(long, 10, 10, durations={"/v/day.mp4": 86400.0})) == 8640 < MAX_WINDOWS_PER_VIDEO


def test_window_items_ids_and_settings():
    items = [VideoItem("a/long.mp4", "/v/a/long.mp4"), VideoItem("b.mp4", "/v/b.mp4")]
    cut = window_items(items, 4, 3, durations={"/v/a/long.mp4": 10.0, "/v/b.mp4": 2.5})
    assert [(i.id, i.path, i.start, i.end) for i in cut] == [
        ("a/long.mp4@0-4", "/v/a/long.mp4", 0, 4),
        ("a/long.mp4@3-7", "/v/a/long.mp4", 3, 7),
        ("a/long.mp4@6-10", "/v/a/long.mp4", 6, 10),
        ("b.mp4@0-2.5", "/v/b.mp4", 0, 2.5),
    ]
    # A file whose duration cannot be read stays one item, so that decoding it fails and it is listed as skipped.
    assert window_items([VideoItem("gone.mp4", "/nowhere/gone.mp4")], 4, 4) == [
        VideoItem("gone.mp4", "/nowhere/gone.mp4")
    ]
    # One skipped whole by a previous run and unchanged since is not read again (it would fail again).
    assert window_items([VideoItem("bad.mp4", "/v/bad.mp4")], 4, 4, {"/v/bad.mp4": 8.0}, {"/v/bad.mp4"}) == [
        VideoItem("bad.mp4", "/v/bad.mp4")
    ]
    # A corpus clip already has a window of its own.
    with pytest.raises(VideoIndexError, match="already a clip"):
        window_items([VideoItem("v@1-5", "/v/v.mp4", 1, 5)], 2, 2, durations={"/v/v.mp4": 9.0})

    assert check_windows(None, None) is None
    assert check_windows(4, None) == {"window": 4.0, "stride": 4.0}
    assert check_windows(4, 2) == {"window": 4.0, "stride": 2.0}
    with pytest.raises(ValueError, match="--stride needs --window"):
        check_windows(None, 2)
    # Sub-second and fractional lengths (a stride of 1e-9 s once listed 23 GB of windows), and non-numbers.
    for bad in (0, -1, 0.5, 1.5, 1e-9, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--window must be a whole number of seconds >= 1"):
            check_windows(bad, None)
        with pytest.raises(ValueError, match="--stride must be a whole number of seconds >= 1"):
            check_windows(4, bad)


# --------------------------------------------------------------------------------------------------------------
# Building and searching moments
# --------------------------------------------------------------------------------------------------------------


def test_windows_are_items_with_their_span_and_their_own_frames(moments, saved_model):
    out, videos, _, _ = moments
    manifest = read_manifest(out)
    assert manifest["windows"] == {"window": 4.0, "stride": 4.0}
    # A file that cannot be read is one skipped entry under its own id, with the reason.
    assert [(entry["id"], "broken.mp4" in entry["reason"]) for entry in manifest["skipped"]] == [("broken.mp4", True)]
    index = VideoIndex.load(out, device="cpu")
    table = index.table.to_pylist()
    rows = {row["id"]: row for row in table}
    position = {row["id"]: i for i, row in enumerate(table)}  # row order is vector order
    expected = {f"long.mp4@{s}-{s + 4}": (s, s + 4) for s in (0, 4, 8, 12)} | {"short.mp4@0-2": (0, 2)}
    assert sorted(rows) == sorted(expected)
    model, processor, _ = load_model_and_processor(saved_model)
    policy = FramePolicy.from_processor(processor)
    vectors = torch.cat(list(index.iter_shards())).float()
    for item_id, (start, end) in expected.items():
        row = rows[item_id]
        assert row["path"] == item_id.split("@")[0]  # relative to the indexed folder
        assert index.video_path(row["path"]) == str(videos / item_id.split("@")[0])
        assert (row["start"], row["end"]) == (start, end)
        # The frames of the policy inside the window (CLIP4Clip: the first frame of each second of it).
        assert row["sampled_frames"] == len(policy.frame_indices(row["num_frames"], FPS, start, end))
        pixels, mask, _ = decode_for_index(processor, index.video_path(row["path"]), start, end)
        psi = encode_videos(model, [{"pixel_values_videos": pixels, "frame_mask": mask}], progress=False)[0]
        torch.testing.assert_close(vectors[position[item_id]], psi, atol=2e-3, rtol=2e-3)
    # Windows of one video differ: each is encoded from its own frames, not from the whole video.
    first, last = vectors[position["long.mp4@0-4"]], vectors[position["long.mp4@12-16"]]
    assert not torch.allclose(first, last, atol=1e-2)


def test_a_query_for_the_second_half_returns_a_window_in_the_second_half(moments, capsys):
    out, videos, queries, _ = moments
    index = VideoIndex.load(out, device="cpu")
    hits = index.search(index.encode_video(str(queries / "circle.mp4")).unsqueeze(0), k=5)[0]
    long_hits = [hit for hit in hits if hit.id.startswith("long.mp4@")]
    assert long_hits[0].metadata["start"] >= HALF, [(h.id, h.score) for h in long_hits]
    # And the other way: the square is found in the first half.
    hits = index.search(index.encode_video(str(queries / "square.mp4")).unsqueeze(0), k=5)[0]
    long_hits = [hit for hit in hits if hit.id.startswith("long.mp4@")]
    assert long_hits[0].metadata["end"] <= HALF, [(h.id, h.score) for h in long_hits]

    # The command prints the video and the time span; --json carries start and end.
    capsys.readouterr()
    assert search_main(["--index", out, "--video", str(queries / "circle.mp4"), "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    top_long = next(line for line in lines[1:] if "long.mp4@" in line)
    start = int(top_long.split("long.mp4@")[1].split("-")[0])
    assert start >= HALF and f"({start}-{start + 4} s of 16.0 s)" in top_long
    assert f"  {videos / 'long.mp4'}  " in top_long  # the video's path
    assert search_main(["--index", out, "--video", str(queries / "circle.mp4"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"][0]["hits"]
    assert all({"start", "end", "path", "id"} <= set(hit) for hit in results)
    assert next(h for h in results if h["id"].startswith("long.mp4@"))["start"] >= HALF


def test_resuming_with_other_window_settings_is_refused(moments, saved_model, tmp_path, capsys, monkeypatch):
    built, videos, _, argv = moments
    out = str(tmp_path / "idx")
    shutil.copytree(built, out)
    argv = [out if arg == built else arg for arg in argv]
    before = read_manifest(out)

    # The same settings: nothing to encode, the same index; the unchanged files' durations come from the shards
    # (no file is read again to cut it into windows).
    def no_probe(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(sources, "video_duration", no_probe)
    assert index_main([*argv, "--quiet"]) == 0
    monkeypatch.undo()
    assert read_manifest(out)["content_id"] == before["content_id"]

    capsys.readouterr()
    assert index_main([*argv[:-2], "--stride", "2", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--window 4 --stride 4, not --window 4 --stride 2" in error and "--overwrite" in error
    assert index_main([*argv[:-4], "--quiet"]) == 2  # no --window at all
    assert "--window 4 --stride 4, not whole videos (no --window)" in capsys.readouterr().err
    assert read_manifest(out)["content_id"] == before["content_id"]  # nothing was written

    # A whole-video index is not extended with moments either.
    whole = str(tmp_path / "whole")
    assert index_main(["--model", saved_model, "--videos", str(videos), "--out", whole, "--quiet"]) == 0
    assert read_manifest(whole)["windows"] is None
    assert index_main(["--model", saved_model, "--videos", str(videos), "--out", whole, "--window", "4"]) == 2
    assert "whole videos (no --window), not --window 4 --stride 4" in capsys.readouterr().err
    # --overwrite rebuilds with the new settings.
    assert index_main([*argv[:-2], "--stride", "6", "--overwrite", "--quiet"]) == 0
    ids = VideoIndex.load(out, device="cpu").ids
    assert sorted(ids) == ["long.mp4@0-4", "long.mp4@12-16", "long.mp4@6-10", "short.mp4@0-2"]

    assert index_main(["--model", saved_model, "--videos", str(videos), "--out", whole, "--stride", "2"]) == 2
    assert "--stride needs --window" in capsys.readouterr().err
