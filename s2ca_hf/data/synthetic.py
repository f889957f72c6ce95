"""The built-in concept-video corpus: clips of coloured shapes in motion, captioned the way people caption videos.

    python -m s2ca_hf.data.synthetic --out data/synthetic [--num-videos 2500] [--val-size 200] [--test-size 500]
        [--compositional-size 500] [--open-vocab-size 300] [--num-stills 2500] [--seed 0] [--size 64]
        [--num-frames 48]

Each clip shows one to four objects anywhere in the frame, each with a colour, a shape and a motion (left, right, up,
down, grow, shrink, rotate, blink, still), on a background; no two trajectories cross. Its captions name some of
the objects (not always all, and not always the background), worded in many ways ("a red circle slides to the
left on a striped background", "a blue ring spins while a red circle moves left", ...). Everything follows from the
seed: the same arguments write the same bytes.

The corpus is written in the MSR-VTT layout, so that `load_corpus("msrvtt", out, split)` reads it unchanged, plus
what the benchmark needs:

    videos/video<i>.mp4                 real H.264 files encoded with PyAV
    MSRVTT_data.json                    every clip ("videos") and every caption ("sentences")
    MSRVTT_train.9k.csv                 the training clips
    MSRVTT_val.csv                      the validation clips, one caption each: every choice (checkpoint,
                                        hyper-parameters, defaults) is made on them
    MSRVTT_JSFUSION_test.csv            the test clips, one caption each (1k-A style), in-distribution combinations
    MSRVTT_compositional_test.csv       test clips whose (colour, shape, motion) combinations never occur in training
    MSRVTT_open_vocab_test.csv          test clips with colours and shapes that only the pretraining stills show
    stills/still<i>.png, stills.json    captioned still images of a wider world (more colours and shapes, three
                                        sizes, any place, position words), for pretraining a small CLIP
    synthetic.json                      the generation arguments, the held-out combinations, each clip's content,
                                        its group, and for evaluation clips the query, its type and correct answers

Every split comes in minimal-pair groups: a clip and up to four others that each differ from it in one thing (two
objects swapping their colour, shape or motion; one object's motion reversed in time; one object's colour or shape;
the background). An evaluation split never holds two clips with the same content, and its one caption per clip names
enough to rule out the rest of its group. A caption that names one object of several can have more than one correct
clip: `load_corpus` gives each evaluation text its `positive_video_ids` (every clip of the split that shows all it
says) and `query_type` ("all", "subset", "binding", "motion"); the metrics count any correct clip as a hit. Training
rows carry their `group` and `foils` (false captions of the clip: a direction reversed, two colours or motions
swapped), for group-aware batches and foil negatives.

`load_corpus("synthetic", out, split)` uses it (generating it on first use) with the splits "train", "val", "test",
"compositional", "open_vocab" and "frames" (the stills).

This module writes the corpus to disk and is its command line; what each clip shows and says is planned in
`synthetic_scenes.py`, and its frames are drawn and encoded in `synthetic_render.py`.
"""

import csv
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

from ..utils import ArgumentParser, first_paragraph

# The scene plan and the drawing are re-exported: `s2ca_hf.data.synthetic` is where users and the benchmarks import
# the corpus's vocabulary, `Clip`, `query_error` and `oracle_r1` from.
from .synthetic_render import encode_video, render_clip, render_still
from .synthetic_scenes import (
    ALL_COLOURS,
    BACKGROUND_PHRASES,
    BACKGROUNDS,
    COLOURS,
    ERROR_KINDS,
    EVAL_SPLITS,
    MOTION_PHRASES,
    MOTIONS,
    ORACLE_VIEWS,
    PRETRAIN_COLOURS,
    PRETRAIN_SHAPES,
    QUERY_TYPES,
    SHAPES,
    Clip,
    Query,
    SceneObject,
    Still,
    all_combinations,
    held_out_combinations,
    oracle_r1,
    plan_corpus,
    plan_stills,
    query_error,
    split_sizes,
)


COMPOSITIONAL_CSV = "MSRVTT_compositional_test.csv"
TRAIN_CSV = "MSRVTT_train.9k.csv"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
VAL_CSV = "MSRVTT_val.csv"
OPEN_VOCAB_CSV = "MSRVTT_open_vocab_test.csv"
EVAL_CSVS = {"val": VAL_CSV, "test": TEST_CSV, "compositional": COMPOSITIONAL_CSV, "open_vocab": OPEN_VOCAB_CSV}
FRAMES_JSON = "stills.json"
META_JSON = "synthetic.json"
# 2: a val split, split sizes as arguments, minimal-pair groups, held-out combinations in blocks.
# 3: 1-4 objects anywhere, partial captions with content-aware positives, query types, no same-content clips in an
#    evaluation split, training groups and foils, an open_vocab split, pretraining stills of a wider world.
FORMAT_VERSION = 3


def load_clip_records(data_dir: str | os.PathLike) -> dict[str, dict]:
    """The `synthetic.json` record of every clip by video id (content, group, foils or query and answers)."""
    with open(os.path.join(os.fspath(data_dir), META_JSON), encoding="utf-8") as f:
        return {record["video_id"]: record for record in json.load(f)["clips"]}


def load_clips(data_dir: str | os.PathLike) -> dict[str, Clip]:
    """Every clip of a generated corpus by video id, from its `synthetic.json` (captions left out; evaluation clips
    with their query, type and correct answers)."""
    with open(os.path.join(os.fspath(data_dir), META_JSON), encoding="utf-8") as f:
        meta = json.load(f)
    clips = {}
    for record in meta["clips"]:
        objects = tuple(SceneObject(**o) for o in record["objects"])
        query = record.get("query")
        if query is not None:
            query = Query(tuple(tuple(o) for o in query["objects"]), query["background"])
        clips[record["video_id"]] = Clip(
            record["video_id"],
            record["split"],
            record["background"],
            objects,
            (),
            "",
            record.get("group"),
            query,
            record.get("query_type"),
            tuple(record.get("positives", ())),
        )
    return clips


def _write_clip(job: tuple) -> None:
    kind, item, path, size, num_frames, fps = job
    if kind == "still":
        from PIL import Image

        Image.fromarray(render_still(item, size)).save(path, format="PNG", optimize=False)
        return
    encode_video(path, render_clip(item, size, num_frames), fps)


# --- the corpus on disk ---------------------------------------------------------------------------------------


def generate_synthetic_corpus(
    out: str | os.PathLike,
    num_videos: int = 1000,
    seed: int = 0,
    val_size: int | None = None,
    test_size: int | None = None,
    compositional_size: int | None = None,
    open_vocab_size: int | None = None,
    num_stills: int | None = None,
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
        val_size, test_size, compositional_size, open_vocab_size: clips of each evaluation split (default: 10% of
            `num_videos` each). The default run uses 2500 clips with 200 / 500 / 500 / 300, so that training keeps
            1000.
        num_stills: captioned still images for pretraining the small CLIP (default: one per clip, at least 100).
        size: frame width and height in pixels (even, for H.264's 4:2:0 chroma).
        num_frames, fps: clip length; the default 48 frames at 4 fps last 12 s, so that CLIP4Clip's one frame per
            second fills `max_frames=12`.
        captions_per_video: captions of each training clip in `MSRVTT_data.json` (an evaluation clip has one).
        num_proc: processes drawing and encoding clips (default: all cores).
    """
    if size < 16 or size % 2:
        raise ValueError(f"`size` must be even and >= 16, got {size}.")
    if num_frames < 1 or fps < 1:
        raise ValueError(f"`num_frames` and `fps` must be >= 1, got {num_frames}, {fps}.")
    out = os.fspath(out)
    clips, held_out = plan_corpus(
        num_videos, seed, captions_per_video, val_size, test_size, compositional_size, open_vocab_size
    )
    stills = plan_stills(max(100, num_videos) if num_stills is None else num_stills, seed)
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    os.makedirs(os.path.join(out, "stills"), exist_ok=True)

    jobs = [("clip", c, os.path.join(out, "videos", f"{c.video_id}.mp4"), size, num_frames, fps) for c in clips]
    jobs += [("still", s, os.path.join(out, "stills", s.image), size, num_frames, fps) for s in stills]
    num_proc = min(num_proc or os.cpu_count() or 1, len(jobs))
    from tqdm.auto import tqdm

    # A bar: generating thousands of clips takes minutes (TQDM_DISABLE=1 silences it).
    with tqdm(total=len(jobs), desc=f"generating the built-in corpus in {out}", unit="file") as bar:
        if num_proc > 1:
            with ProcessPoolExecutor(num_proc) as pool:
                chunksize = max(1, len(jobs) // (8 * num_proc))
                for _ in pool.map(_write_clip, jobs, chunksize=chunksize):
                    bar.update(1)
        else:
            for job in jobs:
                _write_clip(job)
                bar.update(1)

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
    for split, name in EVAL_CSVS.items():
        rows = [c for c in clips if c.split == split]
        _write_csv(
            os.path.join(out, name),
            ["key", "vid_key", "video_id", "sentence"],
            [[f"ret{n}", f"msr{c.video_id[5:]}", c.video_id, c.captions[0]] for n, c in enumerate(rows)],
        )
    _write_json(os.path.join(out, FRAMES_JSON), [{"image": s.image, "caption": s.caption} for s in stills])
    meta = {
        "format_version": FORMAT_VERSION,
        "arguments": {
            "num_videos": num_videos,
            "seed": seed,
            "val_size": val_size,
            "test_size": test_size,
            "compositional_size": compositional_size,
            "open_vocab_size": open_vocab_size,
            "num_stills": num_stills,
            "size": size,
            "num_frames": num_frames,
            "fps": fps,
            "captions_per_video": captions_per_video,
        },
        "held_out_combinations": [list(c) for c in held_out],
        "clips": [_clip_record(c) for c in clips],
    }
    # Written last: its presence marks a complete corpus.
    _write_json(os.path.join(out, META_JSON), meta)
    return out


def _clip_record(clip: Clip) -> dict:
    record = {
        "video_id": clip.video_id,
        "split": clip.split,
        "background": clip.background,
        "group": clip.group,
        "objects": [asdict(o) for o in clip.objects],
    }
    if clip.query is not None:
        record["query"] = {"objects": [list(o) for o in clip.query.objects], "background": clip.query.background}
        record["query_type"] = clip.query_type
        record["positives"] = list(clip.positives)
    else:
        record["captions"] = [
            {"positives": list(positives), "foil": foil, "foil_positives": list(foil_positives)}
            for positives, foil, foil_positives in zip(clip.caption_positives, clip.foils, clip.foil_positives)
        ]
    return record


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
                f"format {FORMAT_VERSION} (partial captions with content-aware answers, no same-content clips, an "
                "open_vocab split, pretraining stills): delete the folder to regenerate it."
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
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--out", required=True, help="the folder to write (created)")
    parser.add_argument("--num-videos", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-size", type=int, default=None, help="val clips (default 10%% of --num-videos)")
    parser.add_argument("--test-size", type=int, default=None, help="test clips (default 10%%)")
    parser.add_argument("--compositional-size", type=int, default=None, help="compositional clips (default 10%%)")
    parser.add_argument("--open-vocab-size", type=int, default=None, help="open_vocab clips (default 10%%)")
    parser.add_argument("--num-stills", type=int, default=None, help="pretraining stills (default 1 per clip)")
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
        open_vocab_size=args.open_vocab_size,
        num_stills=args.num_stills,
        size=args.size,
        num_frames=args.num_frames,
        fps=args.fps,
        captions_per_video=args.captions_per_video,
        num_proc=args.num_proc,
    )
    print(f"Wrote {args.num_videos} clips and their stills to {args.out}")


if __name__ == "__main__":
    main()


__all__ = [
    "ALL_COLOURS",
    "BACKGROUND_PHRASES",
    "BACKGROUNDS",
    "COLOURS",
    "ERROR_KINDS",
    "EVAL_SPLITS",
    "MOTION_PHRASES",
    "MOTIONS",
    "ORACLE_VIEWS",
    "PRETRAIN_COLOURS",
    "PRETRAIN_SHAPES",
    "QUERY_TYPES",
    "SHAPES",
    "Clip",
    "Query",
    "SceneObject",
    "Still",
    "all_combinations",
    "encode_video",
    "ensure_synthetic_corpus",
    "generate_synthetic_corpus",
    "held_out_combinations",
    "load_clip_records",
    "load_clips",
    "oracle_r1",
    "plan_corpus",
    "plan_stills",
    "query_error",
    "render_clip",
    "render_still",
    "split_sizes",
]
