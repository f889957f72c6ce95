"""The built-in concept-video corpus: clips of coloured shapes in motion, captioned compositionally.

    python -m s2ca_hf.data.synthetic --out data/synthetic [--num-videos 1000] [--seed 0] [--size 64] [--num-frames 48]

Each clip shows one or two objects, each with a colour, a shape and a motion (left, right, up, down, grow, shrink,
rotate, blink, still), on a background, and has several captions worded differently ("a red circle slides to the
left on a striped background", "on a striped background, a red circle moves left", ...). Everything follows from
the seed: the same arguments write the same bytes.

The corpus is written in the MSR-VTT layout, so that `load_corpus("msrvtt", out, split)` reads it unchanged, plus
a held-out test and pretraining images:

    videos/video<i>.mp4                 real H.264 files encoded with PyAV
    MSRVTT_data.json                    every clip ("videos") and every caption ("sentences")
    MSRVTT_train.9k.csv                 the training clips
    MSRVTT_JSFUSION_test.csv            the test clips, one caption each (1k-A style), in-distribution combinations
    MSRVTT_compositional_test.csv       test clips whose (colour, shape, motion) combinations never occur in training
    frames/frame<i>.png, frames.json    one still image per training clip with a static caption ("a red circle on a
                                        striped background"), for pretraining a small CLIP
    synthetic.json                      the generation arguments, the held-out combinations, each clip's content

`load_corpus("synthetic", out, split)` uses it (generating it on first use) with the splits "train", "test",
"compositional" and "frames".
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from ..tiny import encode_frames


COMPOSITIONAL_CSV = "MSRVTT_compositional_test.csv"
TRAIN_CSV = "MSRVTT_train.9k.csv"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
FRAMES_JSON = "frames.json"
META_JSON = "synthetic.json"
FORMAT_VERSION = 1

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
    split: str  # "train", "test" or "compositional"
    background: str
    objects: tuple[SceneObject, ...]
    captions: tuple[str, ...]
    static_caption: str


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
    still occurs in training, only these combinations of them do not."""
    combinations = all_combinations()
    rng = np.random.default_rng([seed, 1])
    count = max(1, round(fraction * len(combinations)))
    chosen = rng.choice(len(combinations), size=count, replace=False)
    return sorted(combinations[i] for i in chosen)


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


def plan_corpus(
    num_videos: int, seed: int, captions_per_video: int = 8, test_fraction: float = 0.1, held_out_fraction: float = 0.1
) -> tuple[list[Clip], list[tuple[str, str, str]]]:
    """The content of every clip (no pixels yet): which split, objects, background and captions."""
    if num_videos < 3:
        raise ValueError(f"The synthetic corpus needs 3 videos or more (train, test, held-out), got {num_videos}.")
    held_out = held_out_combinations(seed, held_out_fraction)
    held_out_set = set(held_out)
    seen = [c for c in all_combinations() if c not in held_out_set]
    num_held_out_clips = max(1, round(test_fraction * num_videos))
    num_test = max(1, round(test_fraction * num_videos))
    num_train = num_videos - num_test - num_held_out_clips
    if num_train < 1:
        raise ValueError(f"{num_videos} videos leave no training clip; use more videos or smaller fractions.")
    splits = ["train"] * num_train + ["test"] * num_test + ["compositional"] * num_held_out_clips
    clips = []
    for i, split in enumerate(splits):
        rng = np.random.default_rng([seed, 2, i])
        pool = held_out if split == "compositional" else seen
        count = 1 if rng.random() < 0.7 else 2
        combinations = []
        while len(combinations) < count:
            combination = pool[int(rng.integers(len(pool)))]
            # Two objects differ in colour or shape, so that each caption names them unambiguously.
            if all(combination[:2] != other[:2] for other in combinations):
                combinations.append(combination)
        if count == 1:
            places = [(0.5, 0.5)]
        else:  # one object in each half, so that they never overlap
            places = [(0.5, 0.27), (0.5, 0.73)] if rng.random() < 0.5 else [(0.27, 0.5), (0.73, 0.5)]
        objects = tuple(
            SceneObject(colour, shape, motion, x, y) for (colour, shape, motion), (x, y) in zip(combinations, places)
        )
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        captions = tuple(_caption(objects, background, rng) for _ in range(captions_per_video))
        static_caption = _static_caption(objects, background, rng)
        clips.append(Clip(f"video{i}", split, background, objects, captions, static_caption))
    return clips, held_out


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
    """Writes frames as an H.264 mp4 with PyAV (single-threaded, so the bytes depend only on the frames)."""
    # A keyframe every 2 s keeps seeking useful; one thread makes the encoder deterministic.
    encode_frames(path, frames, fps, "libx264", {"g": str(2 * fps), "threads": "1"})


def _write_clip(job: tuple[Clip, str, int, int, int, str | None]) -> None:
    clip, path, size, num_frames, fps, frame_path = job
    frames = render_clip(clip, size, num_frames)
    encode_video(path, frames, fps)
    if frame_path is not None:
        from PIL import Image

        Image.fromarray(frames[num_frames // 2]).save(frame_path, format="PNG", optimize=False)


def _encode_in_fresh_processes(jobs: list[tuple], num_proc: int) -> None:
    """Draws and encodes the clips in `num_proc` new Python processes (`python -c`, not forks of this one).

    Why: in a process that had done other PyAV, torch and datasets work before (the full test suite), libx264 wrote
    other bytes for the same frames, for every clip of a run, while fresh processes always agree; forked workers
    inherit the caller's state. A new interpreter per worker makes the bytes depend on the arguments alone (and,
    unlike multiprocessing's spawn, it does not re-import the caller's `__main__`).
    """
    with tempfile.TemporaryDirectory(prefix="s2ca-synthetic-jobs-") as folder:
        job_file = os.path.join(folder, "jobs.json")
        _write_json(job_file, [[asdict(clip), *rest] for clip, *rest in jobs])
        code = "import sys; from s2ca_hf.data.synthetic import _encode_worker; _encode_worker(*sys.argv[1:])"
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", code, job_file, str(rank), str(num_proc)],
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            for rank in range(num_proc)
        ]
        errors = [worker.communicate()[1] for worker in workers]
        failed = [(rank, error) for rank, (worker, error) in enumerate(zip(workers, errors)) if worker.returncode]
        if failed:
            rank, error = failed[0]
            raise RuntimeError(
                f"{len(failed)} of {num_proc} clip-encoding processes failed; worker {rank}:\n{error[-3000:]}"
            )


def _encode_worker(job_file: str, rank: str, num_proc: str) -> None:
    with open(job_file, encoding="utf-8") as f:
        jobs = json.load(f)
    for clip, *rest in jobs[int(rank) :: int(num_proc)]:
        objects = tuple(SceneObject(**o) for o in clip.pop("objects"))
        clip = Clip(**{**clip, "objects": objects, "captions": tuple(clip["captions"])})
        _write_clip((clip, *rest))


# --- the corpus on disk ---------------------------------------------------------------------------------------


def generate_synthetic_corpus(
    out: str | os.PathLike,
    num_videos: int = 1000,
    seed: int = 0,
    size: int = 64,
    num_frames: int = 48,
    fps: int = 4,
    captions_per_video: int = 8,
    num_proc: int | None = None,
) -> str:
    """Writes the corpus into `out` (created; it must not hold a corpus already) and returns `out`.

    Args:
        num_videos: clips in all; 10% are the test split and 10% the compositional test split.
        seed: everything (content, wording, held-out combinations) follows from it.
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
    clips, held_out = plan_corpus(num_videos, seed, captions_per_video)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    os.makedirs(os.path.join(out, "frames"), exist_ok=True)

    jobs = []
    for clip in clips:
        frame_path = os.path.join(out, "frames", f"frame{clip.video_id[5:]}.png") if clip.split == "train" else None
        jobs.append((clip, os.path.join(out, "videos", f"{clip.video_id}.mp4"), size, num_frames, fps, frame_path))
    _encode_in_fresh_processes(jobs, min(num_proc or os.cpu_count() or 1, len(jobs)))

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
                "split": "train" if clip.split == "train" else "test",
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
    for name, split in ((TEST_CSV, "test"), (COMPOSITIONAL_CSV, "compositional")):
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
            existing = json.load(f).get("arguments", {})
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
    "ensure_synthetic_corpus",
    "generate_synthetic_corpus",
    "held_out_combinations",
    "plan_corpus",
    "render_clip",
]
