"""The built-in concept-video corpus: deterministic, compositional held-out split, read by the MSR-VTT loader."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from s2ca_hf.data import ensure_synthetic_corpus, generate_synthetic_corpus, load_corpus, read_frames
from s2ca_hf.data.synthetic import (
    BACKGROUND_PHRASES,
    COLOURS,
    MOTION_PHRASES,
    MOTIONS,
    SHAPES,
    Clip,
    SceneObject,
    clip_difference,
    main,
    plan_corpus,
    render_clip,
)


SMALL = dict(num_videos=12, size=32, num_frames=8, fps=2)


def tree(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_processes(tmp_path):
    one = tree(generate_synthetic_corpus(tmp_path / "a", seed=5, num_proc=1, **SMALL))
    two = tree(generate_synthetic_corpus(tmp_path / "b", seed=5, num_proc=2, **SMALL))
    assert one.keys() == two.keys() and "videos/video11.mp4" in one and "frames/frame0.png" in one
    assert one == two
    other = tree(generate_synthetic_corpus(tmp_path / "c", seed=6, num_proc=1, **SMALL))
    assert other["MSRVTT_data.json"] != one["MSRVTT_data.json"]
    assert other["videos/video0.mp4"] != one["videos/video0.mp4"]


@pytest.mark.slow
def test_same_bytes_after_the_process_decoded_and_trained(tmp_path):
    # The full suite once made libx264 write other bytes for the same frames (its threaded lookahead, and frames
    # without timestamps); whatever the process did before, the same seed must write the same bytes.
    import torch

    first = tree(generate_synthetic_corpus(tmp_path / "first", seed=5, num_proc=1, **SMALL))
    path = str(tmp_path / "first" / "videos" / "video0.mp4")
    for trial in range(3):
        read_frames(path)
        torch.randn(256, 256).matmul(torch.randn(256, 256)).sum().item()
        again = tree(generate_synthetic_corpus(tmp_path / f"again{trial}", seed=5, num_proc=1 + trial % 2, **SMALL))
        assert again == first, (trial, [k for k in first if first[k] != again.get(k)])


def test_rgb_to_yuv420p_is_bt601_limited_range():
    from s2ca_hf.video_io import rgb_to_yuv420p

    image = np.zeros((2, 4, 3), dtype=np.uint8)
    image[:, :2] = (255, 255, 255)
    image[:, 2:] = (255, 0, 0)
    planes = rgb_to_yuv420p(image)
    assert planes.shape == (3, 4)
    assert planes[:2].ravel().tolist() == [235, 235, 81, 81, 235, 235, 81, 81]  # Y: white 235, red 81
    assert planes[2].tolist() == [128, 90, 128, 240]  # Cb white, red; Cr white, red
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420p(np.zeros((3, 4, 3), dtype=np.uint8))


def test_compositional_split_shares_no_combination_with_train():
    clips, held_out = plan_corpus(1000, seed=0)
    by_split = {}
    for clip in clips:
        by_split.setdefault(clip.split, set()).update(o.combination for o in clip.objects)
    assert by_split["compositional"] <= set(held_out)
    assert by_split["train"].isdisjoint(by_split["compositional"])
    assert by_split["test"].isdisjoint(held_out)  # the 1k-A-style test is in distribution
    # every colour, shape and motion is seen in training: only the combinations are new
    for position, values in enumerate((COLOURS, SHAPES, MOTIONS)):
        assert {c[position] for c in by_split["train"]} == set(values)
    assert [c.split for c in clips].count("compositional") == 100 and [c.split for c in clips].count("test") == 100


def test_captions_name_what_the_clip_shows():
    clips, _ = plan_corpus(200, seed=1, captions_per_video=6)
    for clip in clips:
        assert len(clip.captions) == 6 and len(set(clip.captions)) > 1  # varied wording
        for caption in clip.captions:
            assert any(phrase in caption for phrase in BACKGROUND_PHRASES[clip.background]), caption
            for obj in clip.objects:
                assert obj.colour in caption and obj.shape in caption, caption
                assert any(phrase in caption for phrase in MOTION_PHRASES[obj.motion]), caption
        assert not any(p in clip.static_caption for phrases in MOTION_PHRASES.values() for p in phrases)


def object_pixels(frames: np.ndarray, colour: str) -> list[tuple[float, float, int]]:
    """Per frame: the centroid (x, y) and area of the pixels of a colour."""
    out = []
    for frame in frames:
        ys, xs = np.nonzero(np.all(frame == COLOURS[colour], axis=-1))
        out.append((xs.mean() if len(xs) else float("nan"), ys.mean() if len(ys) else float("nan"), len(xs)))
    return out


@pytest.mark.parametrize("motion", MOTIONS)
def test_rendered_motion(motion):
    shape = "circle" if motion != "rotate" else "square"
    clip = Clip("video0", "train", "black", (SceneObject("red", shape, motion, 0.5, 0.5),), ("",), "")
    frames = render_clip(clip, size=64, num_frames=12)
    track = object_pixels(frames, "red")
    (x0, y0, a0), (x1, y1, a1) = track[0], track[-1]
    checks = {
        "left": x1 < x0 - 10,
        "right": x1 > x0 + 10,
        "up": y1 < y0 - 10,
        "down": y1 > y0 + 10,
        "grow": a1 > 2 * a0,
        "shrink": a0 > 2 * a1,
        "rotate": a0 > 0 and not np.array_equal(frames[0], frames[2]),  # a quarter turn later the square is tilted
        "blink": [a > 0 for _, _, a in track[:6]] == [True, True, True, False, False, False],
        "still": all(np.array_equal(frames[0], f) for f in frames),
    }
    assert checks[motion], (motion, track)


def test_load_corpus_synthetic_generates_once_and_reads_through_msrvtt(tmp_path):
    root = tmp_path / "synthetic"
    train = load_corpus("synthetic", root, "train", seed=2, **SMALL)
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["arguments"]["seed"] == 2
    clips = {c["video_id"]: c for c in meta["clips"]}
    assert {clips[v]["split"] for v in train["video_id"]} == {"train"}
    assert len(train) == 8 * len(set(train["video_id"]))  # 8 captions per clip, expanded
    # the MSR-VTT loader reads the folder unchanged
    assert load_corpus("msrvtt", root, "train")["text"] == train["text"]
    test = load_corpus("synthetic", root, "test")
    compositional = load_corpus("synthetic", root, "compositional")
    assert test["video_index"] == list(range(len(test))) and len(compositional) == len(set(compositional["video_id"]))
    assert {clips[v]["split"] for v in compositional["video_id"]} == {"compositional"}
    assert set(train["video_id"]).isdisjoint(test["video_id"]) and set(train["video_id"]).isdisjoint(
        compositional["video_id"]
    )
    held_out = {tuple(c) for c in meta["held_out_combinations"]}
    for video_id in compositional["video_id"]:
        assert {(o["colour"], o["shape"], o["motion"]) for o in clips[video_id]["objects"]} <= held_out
    frames = load_corpus("synthetic", root, "frames")
    assert len(frames) == len(set(train["video_id"])) and frames[0]["video_path"].endswith(".png")
    assert os.path.isfile(frames[0]["video_path"])
    clip = read_frames(test[0]["video_path"])
    assert clip.frames.shape[1:] == (32, 32, 3) and clip.frame_mask.sum() == 4  # 8 frames at 2 fps: 4 seconds

    # a second call reuses the corpus; other arguments for the same folder are refused
    mtime = os.path.getmtime(root / "synthetic.json")
    load_corpus("synthetic", root, "test", seed=2)
    assert os.path.getmtime(root / "synthetic.json") == mtime
    with pytest.raises(ValueError, match="other arguments"):
        ensure_synthetic_corpus(root, seed=3)
    val = load_corpus("synthetic", root, "val")
    assert {clips[v]["split"] for v in val["video_id"]} == {"val"} and len(val) == len(set(val["video_id"]))
    with pytest.raises(ValueError, match="splits"):
        load_corpus("synthetic", root, "validation")


def test_an_old_format_corpus_is_refused_with_how_to_regenerate(tmp_path):
    root = tmp_path / "old"
    generate_synthetic_corpus(root, seed=2, num_proc=1, **SMALL)
    meta = json.loads((root / "synthetic.json").read_text())
    meta["format_version"] = 1
    (root / "synthetic.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 1.*delete the folder"):
        ensure_synthetic_corpus(root, seed=2)


def test_evaluation_splits_come_in_minimal_pair_groups():
    clips, held_out = plan_corpus(2000, seed=0, val_size=200, test_size=500, compositional_size=500)
    counts = {split: [c.split for c in clips].count(split) for split in ("train", "val", "test", "compositional")}
    assert counts == {"train": 800, "val": 200, "test": 500, "compositional": 500}
    assert all(c.group is None for c in clips if c.split == "train")
    for split in ("val", "test", "compositional"):
        groups: dict[int, list[Clip]] = {}
        for clip in clips:
            if clip.split == split:
                groups.setdefault(clip.group, []).append(clip)
        assert sum(len(g) for g in groups.values()) == counts[split]
        differences = [clip_difference(group[0], other) for group in groups.values() for other in group[1:]]
        # every variant differs from its group's first clip in exactly one thing, and every kind occurs
        assert set(differences) <= {"colour", "shape", "motion", "background", "binding"}
        assert {"colour", "shape", "motion", "background"} <= set(differences), split
        assert len(differences) >= 0.75 * counts[split]  # most clips have a partner, not only the group heads
    assert "binding" in {
        clip_difference(g[0], o) for g in [[c for c in clips if c.group == i] for i in range(60, 140)] for o in g[1:]
    }
    # held-out combinations come in 2 x 2 x 2 blocks: each has held-out neighbours in colour, shape and motion
    held = set(held_out)
    for colour, shape, motion in held_out:
        for position, value in enumerate((colour, shape, motion)):
            neighbours = [
                c
                for c in held
                if c[position] != value and sum(a != b for a, b in zip(c, (colour, shape, motion))) == 1
            ]
            assert neighbours, (colour, shape, motion, position)


def test_clip_difference_names_what_separates_two_clips():
    def clip(background, *objects):
        return Clip("v", "test", background, tuple(SceneObject(*o, 0.5, 0.5) for o in objects), (), "")

    red_circle = clip("black", ("red", "circle", "left"))
    assert clip_difference(red_circle, red_circle) == "none"
    assert clip_difference(red_circle, clip("black", ("blue", "circle", "left"))) == "colour"
    assert clip_difference(red_circle, clip("black", ("red", "square", "left"))) == "shape"
    assert clip_difference(red_circle, clip("black", ("red", "circle", "up"))) == "motion"
    assert clip_difference(red_circle, clip("grey", ("red", "circle", "left"))) == "background"
    assert clip_difference(red_circle, clip("grey", ("blue", "circle", "left"))) == "several"
    two = clip("black", ("red", "circle", "left"), ("blue", "square", "up"))
    assert clip_difference(red_circle, two) == "objects"
    assert clip_difference(two, clip("black", ("blue", "circle", "left"), ("red", "square", "up"))) == "binding"
    # the same two objects listed the other way round are the same scene
    assert clip_difference(two, clip("black", ("blue", "square", "up"), ("red", "circle", "left"))) == "none"
    assert clip_difference(two, clip("black", ("blue", "square", "down"), ("red", "circle", "left"))) == "motion"


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--num-videos", "5", "--seed", "1", "--size", "16", "--num-frames", "2"])
    assert "Wrote 5 clips" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "cli" / "videos")) == [f"video{i}.mp4" for i in range(5)]
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "cli")])
