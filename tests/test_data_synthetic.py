"""The built-in concept-video corpus: deterministic, no indistinguishable evaluation clips, captions that name part of
a scene with every correct answer listed, held-out and open-vocabulary splits, read by the MSR-VTT loader."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from s2ca_hf.data import corpus_info, ensure_synthetic_corpus, generate_synthetic_corpus, load_corpus
from s2ca_hf.data.synthetic import (
    ALL_COLOURS,
    BACKGROUND_PHRASES,
    COLOURS,
    EVAL_SPLITS,
    MOTION_PHRASES,
    MOTIONS,
    PRETRAIN_COLOURS,
    PRETRAIN_SHAPES,
    QUERY_TYPES,
    SHAPES,
    Clip,
    Query,
    SceneObject,
    main,
    oracle_r1,
    plan_corpus,
    plan_stills,
    query_error,
    render_clip,
    render_still,
)
from s2ca_hf.data.synthetic_scenes import (
    POSITION_PHRASES,
    REVERSED,
    _ContentIndex,
    caption_text,
    foil_query,
    random_query,
)
from s2ca_hf.video_io import read_frames


SMALL = dict(num_videos=12, size=32, num_frames=8, fps=2)


def tree(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_seed_same_bytes_whatever_the_processes(tmp_path):
    one = tree(generate_synthetic_corpus(tmp_path / "a", seed=5, num_proc=1, **SMALL))
    two = tree(generate_synthetic_corpus(tmp_path / "b", seed=5, num_proc=2, **SMALL))
    assert one.keys() == two.keys() and "videos/video11.mp4" in one and "stills/still0.png" in one
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


@pytest.fixture(scope="module")
def plan():
    return plan_corpus(2500, seed=0, val_size=200, test_size=500, compositional_size=500, open_vocab_size=300)


def by_split(clips) -> dict[str, list[Clip]]:
    out: dict[str, list[Clip]] = {}
    for clip in clips:
        out.setdefault(clip.split, []).append(clip)
    return out


def test_held_out_and_open_vocabulary_splits(plan):
    clips, held_out = plan
    splits = by_split(clips)
    assert {s: len(c) for s, c in splits.items()} == {
        "train": 1000, "val": 200, "test": 500, "compositional": 500, "open_vocab": 300
    }  # fmt: skip
    combinations = {s: {o.combination for c in cs for o in c.objects} for s, cs in splits.items()}
    assert combinations["compositional"] <= set(held_out)
    assert combinations["train"].isdisjoint(held_out) and combinations["test"].isdisjoint(held_out)
    # every colour, shape and motion is seen in training: only the combinations are new
    for position, values in enumerate((COLOURS, SHAPES, MOTIONS)):
        assert {c[position] for c in combinations["train"]} == set(values)
    # the open vocabulary: every object has a colour or a shape that no clip outside the split shows
    for colour, shape, _ in combinations["open_vocab"]:
        assert colour in PRETRAIN_COLOURS or shape in PRETRAIN_SHAPES
    for split in ("train", "val", "test", "compositional"):
        assert all(c in COLOURS and s in SHAPES for c, s, _ in combinations[split]), split


def test_scenes_have_one_to_four_objects_anywhere(plan):
    clips, _ = plan
    counts = {len(c.objects) for c in clips}
    assert counts == {1, 2, 3, 4}
    singles = [c.objects[0] for c in clips if len(c.objects) == 1]
    assert len({(round(o.x, 1), round(o.y, 1)) for o in singles}) > 20  # not only the centre
    for clip in clips:
        pairs = [(o.colour, o.shape) for o in clip.objects]
        assert len(set(pairs)) == len(pairs)  # "the red circle" names one object


def object_masks(clip: Clip, size: int, num_frames: int) -> list[np.ndarray]:
    """Each object rendered alone on black: where it is, frame by frame."""
    masks = []
    for obj in clip.objects:
        alone = Clip("v", "train", "black", (obj,), (), "")
        masks.append(render_clip(alone, size, num_frames).any(axis=-1))
    return masks


def test_trajectories_never_overlap_and_stay_in_the_frame(plan):
    clips, _ = plan
    many = [c for c in clips if len(c.objects) >= 3][:25]
    for clip in many:
        masks = object_masks(clip, 64, 12)
        total = sum(m.astype(int) for m in masks)
        assert total.max() <= 1, clip.video_id
        for obj, mask in zip(clip.objects, masks):
            centred = Clip("v", "train", "black", (SceneObject(obj.colour, obj.shape, "still", 0.5, 0.5),), (), "")
            if obj.motion in ("left", "right", "up", "down", "still"):  # same size all along: nothing cut off
                full = render_clip(centred, 64, 1).any(axis=-1).sum()
                # (rasterised at other sub-pixel offsets, a shape's area varies a little)
                assert all(abs(int(frame.sum()) - int(full)) <= 0.2 * full for frame in mask), clip.video_id


def test_object_labels_mark_exactly_each_objects_pixels(plan):
    from s2ca_hf.data.synthetic_render import object_labels

    clips, _ = plan
    for clip in [c for c in clips if len(c.objects) >= 2][:10]:
        frames = [0, 5, 11]
        labels = object_labels(clip, 64, 12, frames)
        for number, mask in enumerate(object_masks(clip, 64, 12)):
            assert np.array_equal(labels == number, mask[frames]), clip.video_id
        assert ((labels >= 0) == (render_clip(clip, 64, 12)[frames] != render_clip(
            Clip("v", "train", clip.background, (), (), ""), 64, 12)[frames]).any(-1)).all()  # fmt: skip


def test_training_captions_name_part_of_what_the_clip_shows():
    rng = np.random.default_rng(0)
    clips, _ = plan_corpus(300, seed=1, captions_per_video=6)
    train = [c for c in clips if c.split == "train"]
    partial = without_background = 0
    for clip in train:
        for _ in range(6):
            query = random_query(clip.objects, clip.background, rng)
            assert query.satisfied_by(clip)
            partial += len(query.objects) < len(clip.objects)
            without_background += query.background is None
            text = caption_text(query, [1, 2])
            for colour, shape, motion in query.objects:
                assert colour in text and shape in text and any(p in text for p in MOTION_PHRASES[motion]), text
            if query.background is not None:
                assert any(phrase in text for phrase in BACKGROUND_PHRASES[query.background]), text
        assert len(clip.captions) == 6
    assert partial > 0.2 * 6 * len(train) and without_background > 0.2 * 6 * len(train)
    assert any(len(set(c.captions)) > 1 for c in train)  # varied wording


def test_foils_are_false_and_differ_from_the_caption_by_a_swap(plan):
    clips, _ = plan
    train = [c for c in clips if c.split == "train"]
    assert sum(foil is not None for c in train for foil in c.foils) > 5 * len(train)
    # the answers of every training caption and foil are every training clip that shows all it says
    for clip in train[:100]:
        assert len(clip.captions) == len(clip.foils) == len(clip.caption_positives) == len(clip.foil_positives)
        assert all(clip.video_id in positives for positives in clip.caption_positives)
        assert all(clip.video_id not in positives for positives in clip.foil_positives)
    assert any(len(positives) > 1 for c in train for positives in c.caption_positives)
    fits = _ContentIndex(train)
    rng = np.random.default_rng(1)
    for clip in train[:200]:
        query = random_query(clip.objects, clip.background, rng)
        assert fits(query) == tuple(o.video_id for o in train if query.satisfied_by(o))
    assert any(positives for c in train for positives in c.foil_positives)  # a foil can be true of a group's twin
    rng = np.random.default_rng(0)
    kinds = set()
    for clip in train[:300]:
        query = random_query(clip.objects, clip.background, rng)
        foil = foil_query(query, clip.objects, rng)
        if foil is None:
            continue
        assert not foil.satisfied_by(clip) and foil.background == query.background
        changed = [(a, b) for a, b in zip(query.objects, foil.objects) if a != b]
        if len(changed) == 1:
            ((a, b),) = changed
            assert a[:2] == b[:2] and REVERSED[a[2]] == b[2]
            kinds.add("direction")
        else:
            assert len(changed) == 2 and sorted(x for a, _ in changed for x in a) == sorted(
                x for _, b in changed for x in b
            )
            kinds.add("swap")
        # worded from the same seed, a foil differs from its caption in the swapped words only
        words = caption_text(query, [7]).split(), caption_text(foil, [7]).split()
        assert len(words[0]) == len(words[1]) or "direction" in kinds
    assert kinds == {"direction", "swap"}


def test_evaluation_splits_have_no_twins_and_list_every_correct_answer(plan):
    clips, _ = plan
    for split, members in by_split(clips).items():
        if split == "train":
            continue
        assert len({c.content for c in members}) == len(members), split  # no two clips show the same content
        for clip in members:
            assert clip.video_id in clip.positives and len(clip.captions) == 1
            assert set(clip.positives) == {o.video_id for o in members if clip.query.satisfied_by(o)}
            # the caption rules out the rest of its minimal-pair group
            group = [o for o in members if o.group == clip.group and o is not clip]
            assert not any(o.video_id in clip.positives for o in group), clip.video_id
        assert {c.query_type for c in members} == set(QUERY_TYPES), split
        assert any(len(c.positives) > 1 for c in members)  # partial captions: several correct clips
        ceilings = oracle_r1(members)
        assert ceilings["everything"] == 100.0
        assert ceilings["no frame order"] < 95 and ceilings["no motion"] < ceilings["no frame order"]
        assert ceilings["no binding"] < 90


def test_minimal_pair_groups_in_every_split(plan):
    clips, _ = plan
    for split, members in by_split(clips).items():
        groups: dict[int, list[Clip]] = {}
        for clip in members:
            groups.setdefault(clip.group, []).append(clip)
        assert len(groups) < 0.3 * len(members), split  # most clips have partners
        kinds = set()
        for group in groups.values():
            anchor = group[0]
            for other in group[1:]:
                a, b = anchor.content, other.content
                if a[0] != b[0]:
                    assert a[1] == b[1]
                    kinds.add("background")
                    continue
                removed, added = a[1] - b[1], b[1] - a[1]
                assert 1 <= len(removed) == len(added) <= 2
                if len(removed) == 2:  # binding: the same words, bound differently
                    words = lambda objs: sorted(x for o in objs for x in o)  # noqa: E731
                    assert words(removed) == words(added)
                    kinds.add("binding")
                else:
                    (old,), (new,) = removed, added
                    changed = [k for k in range(3) if old[k] != new[k]]
                    assert len(changed) == 1
                    kinds.add(("colour", "shape", "motion")[changed[0]])
        assert kinds == {"binding", "motion", "colour", "shape", "background"}, split


def test_query_error_names_what_the_wrong_answer_fails():
    def clip(background, *objects):
        return Clip("v", "test", background, tuple(SceneObject(*o, 0.5, 0.5) for o in objects), (), "")

    query = Query((("red", "circle", "left"),), "black")
    assert query_error(query, clip("black", ("red", "circle", "left"), ("blue", "ring", "up"))) == "none"
    assert query_error(query, clip("black", ("blue", "circle", "left"))) == "colour"
    assert query_error(query, clip("black", ("red", "square", "left"))) == "shape"
    assert query_error(query, clip("black", ("red", "circle", "up"))) == "motion"
    assert query_error(query, clip("black", ("red", "circle", "right"))) == "direction"
    assert query_error(query, clip("grey", ("red", "circle", "left"))) == "background"
    assert query_error(query, clip("grey", ("blue", "circle", "left"))) == "several"
    # every word of the caption is in the scene, on the wrong objects
    assert query_error(query, clip("black", ("red", "square", "up"), ("blue", "circle", "left"))) == "binding"
    two = Query((("red", "circle", "left"), ("blue", "square", "up")), None)
    assert query_error(two, clip("grey", ("blue", "circle", "left"), ("red", "square", "up"))) == "binding"
    assert query_error(two, clip("grey", ("blue", "square", "up"), ("red", "circle", "left"))) == "none"


def object_pixels(frames: np.ndarray, colour: str) -> list[tuple[float, float, int]]:
    """Per frame: the centroid (x, y) and area of the pixels of a colour."""
    out = []
    for frame in frames:
        ys, xs = np.nonzero(np.all(frame == ALL_COLOURS[colour], axis=-1))
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
        "left": x1 < x0 - 15,
        "right": x1 > x0 + 15,
        "up": y1 < y0 - 15,
        "down": y1 > y0 + 15,
        "grow": a1 > 2 * a0,
        "shrink": a0 > 2 * a1,
        "rotate": a0 > 0 and not np.array_equal(frames[0], frames[2]),  # a quarter turn later the square is tilted
        "blink": [a > 0 for _, _, a in track[:6]] == [True, True, True, False, False, False],
        "still": all(np.array_equal(frames[0], f) for f in frames),
    }
    assert checks[motion], (motion, track)


def test_stills_show_a_wider_world_and_say_where_things_are():
    stills = plan_stills(400, seed=0)
    colours = {o.colour for s in stills for o in s.objects}
    shapes = {o.shape for s in stills for o in s.objects}
    assert set(PRETRAIN_COLOURS) <= colours and set(PRETRAIN_SHAPES) <= shapes
    assert {round(o.radius, 2) for s in stills for o in s.objects} == {0.07, 0.1, 0.14}
    for still in stills[:100]:
        image = render_still(still, 64)
        for obj in still.objects:
            # the caption says where the object is: "... red circle at the top left ..."
            where = POSITION_PHRASES[(min(int(obj.y * 3), 2), min(int(obj.x * 3), 2))]
            assert f"{obj.shape} {where}" in still.caption or f"{obj.shape} in {obj.colour} {where}" in still.caption
            x, y, area = object_pixels(image[None], obj.colour)[0]
            assert area > 0, still.caption
            alone = [o.colour for o in still.objects].count(obj.colour) == 1
            if alone and obj.shape in ("circle", "square", "ring", "cross", "diamond"):  # symmetric: centroid = centre
                assert abs(x - obj.x * 64) < 1.5 and abs(y - obj.y * 64) < 1.5, still.caption


def test_load_corpus_synthetic_generates_once_and_reads_through_msrvtt(tmp_path):
    root = tmp_path / "synthetic"
    train = load_corpus("synthetic", root, "train", seed=2, **SMALL)
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["arguments"]["seed"] == 2
    clips = {c["video_id"]: c for c in meta["clips"]}
    assert {clips[v]["split"] for v in train["video_id"]} == {"train"}
    assert len(train) == 8 * len(set(train["video_id"]))  # 8 captions per clip, expanded
    assert train["group"] == [clips[v]["group"] for v in train["video_id"]]
    assert corpus_info(train)["corpus"] == "synthetic" and corpus_info(train)["split"] == "train"
    # each caption row carries its own answers, its foil and what the foil is true of, as ids and as video_index
    index_of = dict(zip(train["video_id"], train["video_index"]))
    for n, row in enumerate(train):
        caption = clips[row["video_id"]]["captions"][n % 8]
        assert row["positive_video_ids"] == caption["positives"] and row["video_id"] in caption["positives"]
        assert row["positive_video_indices"] == [index_of[v] for v in caption["positives"]]
        assert row["foils"] == ([] if caption["foil"] is None else [caption["foil"]])
        assert row["foil_positive_video_indices"] == [[index_of[v] for v in caption["foil_positives"]]] * len(
            row["foils"]
        )
        assert row["video_id"] not in caption["foil_positives"]
    # the MSR-VTT loader reads the folder unchanged
    assert load_corpus("msrvtt", root, "train")["text"] == train["text"]
    for split in EVAL_SPLITS:
        rows = load_corpus("synthetic", root, split)
        assert rows["video_index"] == list(range(len(rows))) and {clips[v]["split"] for v in rows["video_id"]} == {
            split
        }
        assert set(train["video_id"]).isdisjoint(rows["video_id"])
        assert rows["positive_video_ids"] == [clips[v]["positives"] for v in rows["video_id"]]
        assert set(rows["query_type"]) <= set(QUERY_TYPES)
    held_out = {tuple(c) for c in meta["held_out_combinations"]}
    for video_id in load_corpus("synthetic", root, "compositional")["video_id"]:
        assert {(o["colour"], o["shape"], o["motion"]) for o in clips[video_id]["objects"]} <= held_out
    frames = load_corpus("synthetic", root, "frames")
    assert len(frames) == 100 and frames[0]["video_path"].endswith(".png")  # at least 100 stills
    assert os.path.isfile(frames[0]["video_path"])
    clip = read_frames(load_corpus("synthetic", root, "test")[0]["video_path"])
    assert clip.frames.shape[1:] == (32, 32, 3) and clip.frame_mask.sum() == 4  # 8 frames at 2 fps: 4 seconds

    # a second call reuses the corpus; other arguments for the same folder are refused
    mtime = os.path.getmtime(root / "synthetic.json")
    load_corpus("synthetic", root, "test", seed=2)
    assert os.path.getmtime(root / "synthetic.json") == mtime
    with pytest.raises(ValueError, match="other arguments"):
        ensure_synthetic_corpus(root, seed=3)
    with pytest.raises(ValueError, match="splits"):
        load_corpus("synthetic", root, "validation")


def test_an_old_format_corpus_is_refused_with_how_to_regenerate(tmp_path):
    root = tmp_path / "old"
    generate_synthetic_corpus(root, seed=2, num_proc=1, **SMALL)
    meta = json.loads((root / "synthetic.json").read_text())
    meta["format_version"] = 2
    (root / "synthetic.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 2.*delete the folder"):
        ensure_synthetic_corpus(root, seed=2)


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--num-videos", "6", "--seed", "1", "--size", "16", "--num-frames", "2"])
    assert "Wrote 6 clips" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "cli" / "videos")) == sorted(f"video{i}.mp4" for i in range(6))
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "cli")])
