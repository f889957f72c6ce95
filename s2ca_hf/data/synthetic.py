"""The built-in concept-video corpus: clips of coloured shapes in motion, captioned compositionally.

    python -m s2ca_hf.data.synthetic --out data/synthetic [--num-videos 2000] [--val-size 200] [--test-size 500]
        [--compositional-size 500] [--seed 0] [--size 64] [--num-frames 48]

Each clip shows one or two objects, each with a colour, a shape and a motion (left, right, up, down, grow, shrink,
rotate, blink, still), on a background, and has several captions worded differently ("a red circle slides to the
left on a striped background", "on a striped background, a red circle moves left", ...). Everything follows from
the seed: the same arguments write the same bytes.

The corpus is written in the MSR-VTT layout, so that `load_corpus("msrvtt", out, split)` reads it unchanged, plus
a held-out test and pretraining images:

    videos/video<i>.mp4                 real H.264 files encoded with PyAV
    MSRVTT_data.json                    every clip ("videos") and every caption ("sentences")
    MSRVTT_train.9k.csv                 the training clips
    MSRVTT_val.csv                      the validation clips (seen combinations), one caption each: every choice
                                        (checkpoint, hyper-parameters, defaults) is made on them
    MSRVTT_JSFUSION_test.csv            the test clips, one caption each (1k-A style), in-distribution combinations
    MSRVTT_compositional_test.csv       test clips whose (colour, shape, motion) combinations never occur in training
    frames/frame<i>.png, frames.json    one still image per training clip with a static caption ("a red circle on a
                                        striped background"), for pretraining a small CLIP
    synthetic.json                      the generation arguments, the held-out combinations, each clip's content

The val, test and compositional clips come in minimal-pair groups: a clip and up to four others that each differ
from it in exactly one thing (the colour, the shape or the motion of one object, the background, or, with two
objects, which colour goes with which shape), so that retrieving the right one takes fine-grained alignment.
`clip_difference` names what separates two clips (the benchmarks' attribute error breakdown). The compositional
combinations are held out in blocks of 2 colours x 2 shapes x 2 motions, so that they too have one-attribute
neighbours.

`load_corpus("synthetic", out, split)` uses it (generating it on first use) with the splits "train", "val",
"test", "compositional" and "frames".
"""

import argparse
import csv
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..video_io import encode_frames


COMPOSITIONAL_CSV = "MSRVTT_compositional_test.csv"
TRAIN_CSV = "MSRVTT_train.9k.csv"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
VAL_CSV = "MSRVTT_val.csv"
FRAMES_JSON = "frames.json"
META_JSON = "synthetic.json"
# 2: a val split, split sizes as arguments, minimal-pair groups, held-out combinations in blocks.
FORMAT_VERSION = 2
EVAL_SPLITS = ("val", "test", "compositional")
GROUP_SIZE = 5  # a minimal-pair group: one clip and up to four one-attribute variants

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 70, 230),
    "yellow": (235, 220, 40),
    "purple": (150, 50, 200),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
    "cyan": (40, 210, 220),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "rotate", "blink", "still")
BACKGROUNDS = ("black", "grey", "striped", "checkered", "gradient")
# Turning a circle or a ring shows nothing: those combinations do not exist.
ROTATION_SYMMETRIC = ("circle", "ring")

MOTION_PHRASES = {
    "left": ("slides to the left", "moves left", "drifts to the left", "travels leftward"),
    "right": ("slides to the right", "moves right", "drifts to the right", "travels rightward"),
    "up": ("rises", "moves up", "floats upward", "goes up"),
    "down": ("falls", "moves down", "sinks", "goes down"),
    "grow": ("grows", "gets bigger", "expands", "grows larger"),
    "shrink": ("shrinks", "gets smaller", "contracts", "becomes smaller"),
    "rotate": ("spins", "rotates", "turns around", "spins in place"),
    "blink": ("blinks", "flashes on and off", "flickers", "keeps blinking"),
    "still": ("stays still", "does not move", "sits still", "rests in place"),
}
BACKGROUND_PHRASES = {
    "black": ("on a black background", "against a black background", "in front of a dark background"),
    "grey": ("on a grey background", "on a plain grey background", "against a grey background"),
    "striped": ("on a striped background", "over a striped background", "in front of stripes"),
    "checkered": ("on a checkered background", "over a checkerboard", "on a chequered background"),
    "gradient": ("on a gradient background", "over a shaded background", "on a background fading from dark to light"),
}


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    motion: str
    x: float  # centre at the start, as a fraction of the frame width
    y: float  # and height

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)


@dataclass(frozen=True)
class Clip:
    video_id: str
    split: str  # "train", "val", "test" or "compositional"
    background: str
    objects: tuple[SceneObject, ...]
    captions: tuple[str, ...]
    static_caption: str
    group: int | None = None  # the minimal-pair group of an evaluation clip


# --- what each clip shows -------------------------------------------------------------------------------------


def all_combinations() -> list[tuple[str, str, str]]:
    return [
        (colour, shape, motion)
        for colour in COLOURS
        for shape in SHAPES
        for motion in MOTIONS
        if not (motion == "rotate" and shape in ROTATION_SYMMETRIC)
    ]


def held_out_combinations(seed: int, fraction: float = 0.1) -> list[tuple[str, str, str]]:
    """The (colour, shape, motion) combinations reserved for the compositional test: every colour, shape and motion
    still occurs in training, only these combinations of them do not.

    They are drawn in blocks of 2 colours x 2 shapes x 2 motions (at least `fraction` of all combinations), so that
    each held-out combination has held-out neighbours that differ from it in one attribute: the compositional split
    has minimal pairs too."""
    combinations = set(all_combinations())
    target = max(1, round(fraction * len(combinations)))
    rng = np.random.default_rng([seed, 1])
    held_out: set[tuple[str, str, str]] = set()
    while len(held_out) < target:
        colours = rng.choice(list(COLOURS), size=2, replace=False)
        shapes = rng.choice(list(SHAPES), size=2, replace=False)
        motions = rng.choice(list(MOTIONS), size=2, replace=False)
        block = {(str(c), str(s), str(m)) for c in colours for s in shapes for m in motions}
        if block <= combinations and block.isdisjoint(held_out):
            held_out |= block
    return sorted(held_out)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: SceneObject, rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        return f"{_article(obj.shape)} {obj.shape} in {obj.colour}"
    return f"{_article(obj.colour)} {obj.colour} {obj.shape}"


def _caption(objects: tuple[SceneObject, ...], background: str, rng: np.random.Generator) -> str:
    where = str(rng.choice(BACKGROUND_PHRASES[background]))
    clauses = [f"{_noun_phrase(o, rng)} {rng.choice(MOTION_PHRASES[o.motion])}" for o in objects]
    if len(clauses) == 1:
        (clause,) = clauses
        form = int(rng.integers(4))
        if form == 0:
            return f"{clause} {where}"
        if form == 1:
            return f"{where}, {clause}"
        if form == 2:
            return f"there is {_that(clause)} {where}"
        return f"{clause[clause.index(' ') + 1 :]} {where}"  # no article: "red circle moves left on ..."
    joiner = str(rng.choice(("while", "and", "as")))
    if rng.random() < 0.3:
        return f"{where}, {clauses[0]} {joiner} {clauses[1]}"
    return f"{clauses[0]} {joiner} {clauses[1]} {where}"


def _that(clause: str) -> str:
    # "a red circle rises" -> "a red circle that rises"; "a circle in red rises" -> "a circle in red that rises"
    for phrases in MOTION_PHRASES.values():
        for phrase in phrases:
            if clause.endswith(" " + phrase):
                return f"{clause[: -len(phrase) - 1]} that {phrase}"
    return clause


def _static_caption(objects: tuple[SceneObject, ...], background: str, rng: np.random.Generator) -> str:
    where = str(rng.choice(BACKGROUND_PHRASES[background]))
    things = " and ".join(_noun_phrase(o, rng) for o in objects)
    return f"{things} {where}" if rng.random() < 0.7 else f"{where}, {things}"


def split_sizes(
    num_videos: int, val_size: int | None = None, test_size: int | None = None, compositional_size: int | None = None
) -> dict[str, int]:
    """Clips per split: each evaluation split 10% of `num_videos` unless given; training gets the rest."""
    sizes = {}
    for split, size in (("val", val_size), ("test", test_size), ("compositional", compositional_size)):
        size = max(1, round(0.1 * num_videos)) if size is None else size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"`{split}_size` must be an integer >= 1, got {size!r}.")
        sizes[split] = size
    train = num_videos - sum(sizes.values())
    if train < 1:
        raise ValueError(f"{num_videos} videos leave no training clip after the evaluation splits {sizes}.")
    return {"train": train, **sizes}


def _scene(pool: list, rng: np.random.Generator) -> tuple[tuple[SceneObject, ...], str]:
    """One or two objects from `pool` (distinct in colour or shape, so each caption names them unambiguously), in
    places where they never overlap, and a background."""
    count = 1 if rng.random() < 0.7 else 2
    combinations = []
    while len(combinations) < count:
        combination = pool[int(rng.integers(len(pool)))]
        if all(combination[:2] != other[:2] for other in combinations):
            combinations.append(combination)
    if count == 1:
        places = [(0.5, 0.5)]
    else:  # one object in each half
        places = [(0.5, 0.27), (0.5, 0.73)] if rng.random() < 0.5 else [(0.27, 0.5), (0.73, 0.5)]
    objects = tuple(
        SceneObject(colour, shape, motion, x, y) for (colour, shape, motion), (x, y) in zip(combinations, places)
    )
    return objects, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]


def _variant(objects, background: str, attribute: str, pool: set, rng: np.random.Generator):
    """The scene changed in `attribute` alone ("colour", "shape", "motion" of one object, "background", or
    "binding": two objects swap colours), with every combination still in `pool`; None where none exists."""
    if attribute == "background":
        others = [b for b in BACKGROUNDS if b != background]
        return objects, others[int(rng.integers(len(others)))]
    if attribute == "binding":
        if len(objects) != 2 or objects[0].colour == objects[1].colour or objects[0].shape == objects[1].shape:
            return None
        swapped = (replace(objects[0], colour=objects[1].colour), replace(objects[1], colour=objects[0].colour))
        return (swapped, background) if all(o.combination in pool for o in swapped) else None
    index = int(rng.integers(len(objects)))
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS)}[attribute]
    for value in rng.permutation(values):
        changed = replace(objects[index], **{attribute: str(value)})
        if changed == objects[index] or changed.combination not in pool:
            continue
        if any(changed.combination[:2] == o.combination[:2] for i, o in enumerate(objects) if i != index):
            continue  # the two objects must stay distinguishable
        return tuple(changed if i == index else o for i, o in enumerate(objects)), background
    return None


def _minimal_pair_group(pool: list, pool_set: set, rng: np.random.Generator, size: int) -> list:
    """A scene and up to `size - 1` variants of it, each different from it in exactly one attribute."""
    objects, background = _scene(pool, rng)
    group = [(objects, background)]
    # Binding first where there are two objects: it is the pair that only concept-level matching can tell apart.
    attributes = (["binding"] if len(objects) == 2 else []) + list(rng.permutation(["colour", "shape", "motion"]))
    for attribute in [*attributes, "background"]:
        if len(group) >= size:
            break
        variant = _variant(objects, background, str(attribute), pool_set, rng)
        if variant is not None:
            group.append(variant)
    return group


def plan_corpus(
    num_videos: int,
    seed: int,
    captions_per_video: int = 8,
    val_size: int | None = None,
    test_size: int | None = None,
    compositional_size: int | None = None,
    held_out_fraction: float = 0.1,
) -> tuple[list[Clip], list[tuple[str, str, str]]]:
    """The content of every clip (no pixels yet): which split, objects, background and captions.

    Training clips are drawn independently; the clips of each evaluation split come in minimal-pair groups of up to
    `GROUP_SIZE` (`Clip.group`)."""
    if num_videos < 4:
        raise ValueError(
            f"The synthetic corpus needs 4 videos or more (train, val, test, held-out), got {num_videos}."
        )
    sizes = split_sizes(num_videos, val_size, test_size, compositional_size)
    held_out = held_out_combinations(seed, held_out_fraction)
    held_out_set = set(held_out)
    seen = [c for c in all_combinations() if c not in held_out_set]
    scenes = []  # (split, group, objects, background)
    rng = np.random.default_rng([seed, 2])
    for _ in range(sizes["train"]):
        scenes.append(("train", None, *_scene(seen, rng)))
    group_id = 0
    for split in EVAL_SPLITS:
        pool = held_out if split == "compositional" else seen
        pool_set, made = set(pool), 0
        while made < sizes[split]:
            group = _minimal_pair_group(pool, pool_set, rng, min(GROUP_SIZE, sizes[split] - made))
            scenes += [(split, group_id, objects, background) for objects, background in group]
            made, group_id = made + len(group), group_id + 1
    clips = []
    for i, (split, group, objects, background) in enumerate(scenes):
        wording = np.random.default_rng([seed, 3, i])
        captions = tuple(_caption(objects, background, wording) for _ in range(captions_per_video))
        static_caption = _static_caption(objects, background, wording)
        clips.append(Clip(f"video{i}", split, background, objects, captions, static_caption, group))
    return clips, held_out


def clip_difference(query: Clip, other: Clip) -> str:
    """What tells `other` apart from `query`: "colour", "shape", "motion" (of one object), "background", "binding"
    (two objects with their colours swapped), "objects" (another number of objects), "several", or "none"."""
    if len(query.objects) != len(other.objects):
        return "objects"
    same_background = query.background == other.background
    if len(query.objects) == 2 and same_background:
        colours = sorted(o.colour for o in query.objects) == sorted(o.colour for o in other.objects)
        rest = sorted((o.shape, o.motion) for o in query.objects) == sorted((o.shape, o.motion) for o in other.objects)
        combos = sorted(o.combination for o in query.objects) != sorted(o.combination for o in other.objects)
        if colours and rest and combos:
            return "binding"
    pairings = [list(zip(query.objects, other.objects))]
    if len(query.objects) == 2:
        pairings.append(list(zip(query.objects, other.objects[::-1])))
    changes = min(
        (
            [a for x, y in pairing for a in ("colour", "shape", "motion") if getattr(x, a) != getattr(y, a)]
            for pairing in pairings
        ),
        key=len,
    )
    changes += [] if same_background else ["background"]
    if not changes:
        return "none"
    return changes[0] if len(changes) == 1 else "several"


def load_clips(data_dir: str | os.PathLike) -> dict[str, Clip]:
    """Every clip of a generated corpus by video id, from its `synthetic.json`."""
    with open(os.path.join(os.fspath(data_dir), META_JSON), encoding="utf-8") as f:
        meta = json.load(f)
    clips = {}
    for record in meta["clips"]:
        objects = tuple(SceneObject(**o) for o in record["objects"])
        clips[record["video_id"]] = Clip(
            record["video_id"], record["split"], record["background"], objects, (), "", record.get("group")
        )
    return clips


# --- drawing ----------------------------------------------------------------------------------------------------


def _background(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    stripe = max(size // 16, 2)
    if kind == "black":
        grey = np.zeros((size, size))
    elif kind == "grey":
        grey = np.full((size, size), 96.0)
    elif kind == "striped":
        grey = np.where((xx // stripe) % 2 == 0, 40.0, 100.0)
    elif kind == "checkered":
        grey = np.where(((xx // (2 * stripe)) + (yy // (2 * stripe))) % 2 == 0, 40.0, 100.0)
    else:  # gradient
        grey = xx / max(size - 1, 1) * 120.0
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside a shape of radius `r`, in coordinates `(u, v)` centred on it and already rotated."""
    if shape == "circle":
        return u**2 + v**2 <= r**2
    if shape == "ring":
        d2 = u**2 + v**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "cross":
        arm = 0.35 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    # triangle pointing up (v grows downwards in image coordinates)
    return (v <= 0.5 * r) & (v >= -r + 1.7 * np.abs(u))


def render_clip(clip: Clip, size: int, num_frames: int) -> np.ndarray:
    """`(num_frames, size, size, 3)` uint8 frames of a clip."""
    background = _background(clip.background, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.repeat(background[None], num_frames, axis=0)
    base = size / 8
    travel = 0.5 if len(clip.objects) == 1 else 0.3  # fraction of the frame crossed by a moving object
    for frame_index in range(num_frames):
        t = frame_index / max(num_frames - 1, 1)
        for obj in clip.objects:
            x, y, r, angle = obj.x * size, obj.y * size, base, 0.0
            if obj.motion == "left":
                x += (0.5 - t) * travel * size
            elif obj.motion == "right":
                x += (t - 0.5) * travel * size
            elif obj.motion == "up":
                y += (0.5 - t) * travel * size
            elif obj.motion == "down":
                y += (t - 0.5) * travel * size
            elif obj.motion == "grow":
                r = base * (0.5 + t)
            elif obj.motion == "shrink":
                r = base * (1.5 - t)
            elif obj.motion == "rotate":
                angle = 2 * np.pi * t
            # Three frames on, three off: out of step with one-frame-per-second sampling at 4 fps, so that sampled
            # frames show both states.
            if obj.motion == "blink" and (frame_index // 3) % 2 == 1:
                continue
            dx, dy = xx - x, yy - y
            cos, sin = np.cos(angle), np.sin(angle)
            mask = _shape_mask(obj.shape, cos * dx + sin * dy, -sin * dx + cos * dy, r)
            frames[frame_index][mask] = COLOURS[obj.colour]
    return frames


def encode_video(path: str, frames: np.ndarray, fps: int) -> None:
    """Writes frames as an H.264 mp4 with PyAV, so that the bytes depend only on the frames."""
    # A keyframe every 2 s keeps seeking useful. `threads=1` alone was not enough: x264's lookahead still ran in a
    # thread of its own and the same frames gave other bytes in about one run in forty (the flaky same-seed test);
    # with the lookahead and macroblock-tree rate control off, 160 repeated encodings under load were identical.
    params = "threads=1:lookahead-threads=1:sync-lookahead=0:rc-lookahead=0:mbtree=0"
    encode_frames(path, frames, fps, "libx264", {"g": str(2 * fps), "threads": "1", "x264-params": params})


def _write_clip(job: tuple[Clip, str, int, int, int, str | None]) -> None:
    clip, path, size, num_frames, fps, frame_path = job
    frames = render_clip(clip, size, num_frames)
    encode_video(path, frames, fps)
    if frame_path is not None:
        from PIL import Image

        Image.fromarray(frames[num_frames // 2]).save(frame_path, format="PNG", optimize=False)


# --- the corpus on disk ---------------------------------------------------------------------------------------


def generate_synthetic_corpus(
    out: str | os.PathLike,
    num_videos: int = 1000,
    seed: int = 0,
    val_size: int | None = None,
    test_size: int | None = None,
    compositional_size: int | None = None,
    size: int = 64,
    num_frames: int = 48,
    fps: int = 4,
    captions_per_video: int = 8,
    num_proc: int | None = None,
) -> str:
    """Writes the corpus into `out` (created; it must not hold a corpus already) and returns `out`.

    Args:
        num_videos: clips in all; training gets what the evaluation splits leave.
        seed: everything (content, wording, held-out combinations) follows from it.
        val_size, test_size, compositional_size: clips of each evaluation split (default: 10% of `num_videos`
            each). The default run uses 2000 clips with 200 / 500 / 500, so that training keeps 800.
        size: frame width and height in pixels (even, for H.264's 4:2:0 chroma).
        num_frames, fps: clip length; the default 48 frames at 4 fps last 12 s, so that CLIP4Clip's one frame per
            second fills `max_frames=12`.
        captions_per_video: captions of each clip in `MSRVTT_data.json`.
        num_proc: processes drawing and encoding clips (default: all cores).
    """
    if size < 16 or size % 2:
        raise ValueError(f"`size` must be even and >= 16, got {size}.")
    if num_frames < 1 or fps < 1:
        raise ValueError(f"`num_frames` and `fps` must be >= 1, got {num_frames}, {fps}.")
    out = os.fspath(out)
    clips, held_out = plan_corpus(num_videos, seed, captions_per_video, val_size, test_size, compositional_size)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    os.makedirs(os.path.join(out, "frames"), exist_ok=True)

    jobs = []
    for clip in clips:
        frame_path = os.path.join(out, "frames", f"frame{clip.video_id[5:]}.png") if clip.split == "train" else None
        jobs.append((clip, os.path.join(out, "videos", f"{clip.video_id}.mp4"), size, num_frames, fps, frame_path))
    num_proc = min(num_proc or os.cpu_count() or 1, len(jobs))
    if num_proc > 1:
        with ProcessPoolExecutor(num_proc) as pool:
            list(pool.map(_write_clip, jobs, chunksize=max(1, len(jobs) // (8 * num_proc))))
    else:
        for job in jobs:
            _write_clip(job)

    duration = num_frames / fps
    data = {
        "info": {
            "year": "2024",
            "version": str(FORMAT_VERSION),
            "description": f"s2ca_hf synthetic concept-video corpus, seed {seed}",
            "contributor": "s2ca_hf.data.synthetic",
            "data_created": "generated",
        },
        "videos": [
            {
                "category": 0,
                "url": "",
                "video_id": clip.video_id,
                "start time": 0.0,
                "end time": duration,
                "split": {"train": "train", "val": "validate"}.get(clip.split, "test"),
                "id": i,
            }
            for i, clip in enumerate(clips)
        ],
        "sentences": [],
    }
    for clip in clips:
        for caption in clip.captions:
            data["sentences"].append({"caption": caption, "video_id": clip.video_id, "sen_id": len(data["sentences"])})
    _write_json(os.path.join(out, "MSRVTT_data.json"), data)
    _write_csv(os.path.join(out, TRAIN_CSV), ["video_id"], [[c.video_id] for c in clips if c.split == "train"])
    for name, split in ((VAL_CSV, "val"), (TEST_CSV, "test"), (COMPOSITIONAL_CSV, "compositional")):
        rows = [c for c in clips if c.split == split]
        _write_csv(
            os.path.join(out, name),
            ["key", "vid_key", "video_id", "sentence"],
            [[f"ret{n}", f"msr{c.video_id[5:]}", c.video_id, c.captions[0]] for n, c in enumerate(rows)],
        )
    frames = [
        {"image": f"frame{c.video_id[5:]}.png", "caption": c.static_caption, "video_id": c.video_id}
        for c in clips
        if c.split == "train"
    ]
    _write_json(os.path.join(out, FRAMES_JSON), frames)
    meta = {
        "format_version": FORMAT_VERSION,
        "arguments": {
            "num_videos": num_videos,
            "seed": seed,
            "val_size": val_size,
            "test_size": test_size,
            "compositional_size": compositional_size,
            "size": size,
            "num_frames": num_frames,
            "fps": fps,
            "captions_per_video": captions_per_video,
        },
        "held_out_combinations": [list(c) for c in held_out],
        "clips": [
            {
                "video_id": c.video_id,
                "split": c.split,
                "background": c.background,
                "group": c.group,
                "objects": [asdict(o) for o in c.objects],
            }
            for c in clips
        ],
    }
    # Written last: its presence marks a complete corpus.
    _write_json(os.path.join(out, META_JSON), meta)
    return out


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def _write_csv(path: str, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def ensure_synthetic_corpus(data_dir: str | os.PathLike, **arguments) -> str:
    """Generates the corpus into `data_dir` unless it holds one already; an existing corpus must have been made
    with the `arguments` given (`num_videos`, `seed`, `size`, `num_frames`, ...)."""
    data_dir = os.fspath(data_dir)
    meta_path = os.path.join(data_dir, META_JSON)
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{data_dir} holds a synthetic corpus of format {meta.get('format_version')}; this version writes "
                f"format {FORMAT_VERSION} (a val split, minimal-pair groups): delete the folder to regenerate it."
            )
        existing = meta.get("arguments", {})
        different = {k: (existing.get(k), v) for k, v in arguments.items() if existing.get(k) != v}
        if different:
            raise ValueError(
                f"{data_dir} holds a synthetic corpus made with other arguments (existing, asked): {different}; "
                "use another folder."
            )
        return data_dir
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        raise FileExistsError(f"{data_dir} is not empty and holds no synthetic corpus ({META_JSON} is missing).")
    parent = os.path.dirname(os.path.abspath(data_dir))
    os.makedirs(parent, exist_ok=True)
    # Generate next to the target and rename, so that an interrupted run never leaves a half-written corpus.
    staging = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        generate_synthetic_corpus(staging, **arguments)
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)
        os.replace(staging, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write (created)")
    parser.add_argument("--num-videos", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-size", type=int, default=None, help="val clips (default 10%% of --num-videos)")
    parser.add_argument("--test-size", type=int, default=None, help="test clips (default 10%%)")
    parser.add_argument("--compositional-size", type=int, default=None, help="compositional clips (default 10%%)")
    parser.add_argument("--size", type=int, default=64, help="frame width and height in pixels")
    parser.add_argument("--num-frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--fps", type=int, default=4)
    parser.add_argument("--captions-per-video", type=int, default=8)
    parser.add_argument("--num-proc", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    if os.path.exists(os.path.join(args.out, META_JSON)):
        parser.error(f"{args.out} already holds a synthetic corpus")
    generate_synthetic_corpus(
        args.out,
        num_videos=args.num_videos,
        seed=args.seed,
        val_size=args.val_size,
        test_size=args.test_size,
        compositional_size=args.compositional_size,
        size=args.size,
        num_frames=args.num_frames,
        fps=args.fps,
        captions_per_video=args.captions_per_video,
        num_proc=args.num_proc,
    )
    print(f"Wrote {args.num_videos} clips to {args.out}")


if __name__ == "__main__":
    main()


__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "all_combinations",
    "clip_difference",
    "load_clips",
    "split_sizes",
    "ensure_synthetic_corpus",
    "generate_synthetic_corpus",
    "held_out_combinations",
    "plan_corpus",
    "render_clip",
]
