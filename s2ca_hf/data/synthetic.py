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

This module writes the corpus to disk and is its command line; what each clip shows and says is planned in
`synthetic_scenes.py`, and its frames are drawn and encoded in `synthetic_render.py`.
"""

import argparse
import csv
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

# The scene plan and the drawing are re-exported: `s2ca_hf.data.synthetic` is where users and the benchmarks import
# the corpus's vocabulary, `Clip` and `clip_difference` from.
from .synthetic_render import encode_video, render_clip
from .synthetic_scenes import (
    BACKGROUND_PHRASES,
    BACKGROUNDS,
    COLOURS,
    MOTION_PHRASES,
    MOTIONS,
    SHAPES,
    Clip,
    SceneObject,
    all_combinations,
    clip_difference,
    held_out_combinations,
    plan_corpus,
    split_sizes,
)


COMPOSITIONAL_CSV = "MSRVTT_compositional_test.csv"
TRAIN_CSV = "MSRVTT_train.9k.csv"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
VAL_CSV = "MSRVTT_val.csv"
FRAMES_JSON = "frames.json"
META_JSON = "synthetic.json"
# 2: a val split, split sizes as arguments, minimal-pair groups, held-out combinations in blocks.
FORMAT_VERSION = 2


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
    "BACKGROUND_PHRASES",
    "BACKGROUNDS",
    "COLOURS",
    "MOTION_PHRASES",
    "MOTIONS",
    "SHAPES",
    "Clip",
    "SceneObject",
    "all_combinations",
    "clip_difference",
    "load_clips",
    "split_sizes",
    "ensure_synthetic_corpus",
    "generate_synthetic_corpus",
    "held_out_combinations",
    "plan_corpus",
    "encode_video",
    "render_clip",
]
