"""Data-pipeline benchmark: model-ready videos per second per CPU core, decoding the files vs reading the frame cache.

    python benchmarks/data_pipeline.py [--num-videos 1000] [--long-clips 16] [--work-dir DIR]

Inputs: the default synthetic corpus (`s2ca_hf.data.synthetic`: 64x64 H.264, 12 s at 4 fps) and a set of longer
clips (10 s, 320x240, 30 fps, H.264, textured moving content). Output: model-ready input, `pixel_values_videos`
`(12, 3, 224, 224)` float32 plus `frame_mask` per video, with `S2CAVideoProcessor`'s defaults (CLIP4Clip policy, 12
frames, uniform).

(a) decode: `read_frames` + the processor's resize, crop and normalisation, one video at a time.
(b) cache: `FrameCache.video_inputs` on batches of 32 random videos (frames already at 224 px; gather + normalise).

Both are measured in this process pinned to one core with one torch thread, so they are per-core rates. The cache
build uses every core (`datasets.map(num_proc=...)`) and its wall time is reported too. The cache files were just
written, so they are read from the page cache: the numbers are for a cache that fits in RAM (or a fast disk).
Results go to `benchmarks/results/data_pipeline.{json,md}` (see docs/benchmarks.md §4 for the target).
"""

import datetime
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from s2ca_hf.utils import ArgumentParser, first_paragraph
from s2ca_hf.video_io import encode_frames


RESULTS = Path(__file__).parent / "results"
TARGET_CACHE_VIDEOS_PER_S_PER_CORE = 150  # docs/benchmarks.md §4


def write_long_clip(path: str, seed: int, seconds: int = 10, fps: int = 30, width: int = 320, height: int = 240):
    """A 10 s 320x240 H.264 clip with texture and motion, so the decoder does real work (a flat clip would not)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)

    def frames():
        for i in range(seconds * fps):
            dy, dx = (2 * i) % height, (3 * i) % width  # the texture pans: every frame differs from the last
            frame = texture[dy : dy + height, dx : dx + width].copy()
            y, x = int(height / 2 + 80 * np.sin(i / 15)), int(width / 2 + 120 * np.cos(i / 20))
            frame[max(0, y - 20) : y + 20, max(0, x - 20) : x + 20] = (255, 40, 40)
            yield frame

    encode_frames(path, frames(), fps, "libx264", {"threads": "1"})


def pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)


def bench_decode(rows: list[dict], processor, repeats: int = 1) -> dict:
    from s2ca_hf.video_io import read_frames

    start = time.perf_counter()
    decode_time = 0.0
    for _ in range(repeats):
        for row in rows:
            t = time.perf_counter()
            clip = read_frames(row["video_path"], processor, row["start"], row["end"])
            decode_time += time.perf_counter() - t
            out = processor(videos=[clip.real_frames], do_sample_frames=False, return_tensors="pt")
            assert out["pixel_values_videos"].shape[1:] == (12, 3, 224, 224)
    elapsed = time.perf_counter() - start
    count = len(rows) * repeats
    return {
        "videos": count,
        "seconds": round(elapsed, 3),
        "videos_per_s_per_core": round(count / elapsed, 2),
        "read_frames_only_videos_per_s_per_core": round(count / decode_time, 2),
    }


def bench_cache(cache, processor, video_ids: list[str], batches: int, batch_size: int = 32) -> dict:
    rng = random.Random(0)
    cache.video_inputs(video_ids[:batch_size], processor)  # warm-up: first touch of the memory map
    start = time.perf_counter()
    for _ in range(batches):
        batch = rng.sample(video_ids, min(batch_size, len(video_ids)))
        out = cache.video_inputs(batch, processor)
        assert out["pixel_values_videos"].shape[1:] == (12, 3, 224, 224)
    elapsed = time.perf_counter() - start
    count = batches * min(batch_size, len(video_ids))
    return {"videos": count, "batch_size": batch_size, "seconds": round(elapsed, 3),
            "videos_per_s_per_core": round(count / elapsed, 2)}  # fmt: skip


def versions() -> dict:
    import av
    import datasets
    import pyarrow
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
        "av": av.__version__,
        "ffmpeg (libavcodec)": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "numpy": np.__version__,
    }


def machine() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "cpu": model, "cores_available": cores}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--num-videos", type=int, default=1000, help="size of the generated corpus")
    parser.add_argument("--long-clips", type=int, default=16, help="number of 10 s 320x240 clips")
    parser.add_argument("--decode-videos", type=int, default=100, help="corpus videos decoded in (a)")
    parser.add_argument("--cache-batches", type=int, default=30, help="batches of 32 read in (b)")
    parser.add_argument("--work-dir", default=None, help="where the corpus and caches go (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)

    from s2ca_hf.data import build_frame_cache, corpus_videos, generate_synthetic_corpus, load_corpus
    from s2ca_hf.video_processing_s2ca import S2CAVideoProcessor

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="s2ca-bench-"))
    host = machine()  # before pinning to one core
    cores = host["cores_available"]
    processor = S2CAVideoProcessor()
    results: dict = {"corpus": {}, "long_clip": {}}

    # 1. The inputs (every core).
    t = time.perf_counter()
    corpus_dir = generate_synthetic_corpus(work / "synthetic", num_videos=args.num_videos, seed=0)
    results["corpus"]["generate_seconds_all_cores"] = round(time.perf_counter() - t, 2)
    long_dir = work / "long"
    long_dir.mkdir(parents=True, exist_ok=True)
    long_rows = []
    for i in range(args.long_clips):
        path = str(long_dir / f"long{i}.mp4")
        write_long_clip(path, seed=i)
        long_rows.append({"video_id": f"long{i}", "video_path": path, "start": None, "end": None})

    # 2. The caches (every core).
    train = load_corpus("synthetic", corpus_dir, "train")
    t = time.perf_counter()
    corpus_cache = build_frame_cache(train, processor, cache_dir=work / "cache", num_proc=cores, rebuild=True)
    build = time.perf_counter() - t
    results["corpus"]["cache_build"] = {"videos": len(corpus_cache), "seconds_all_cores": round(build, 2),
                                        "videos_per_s_all_cores": round(len(corpus_cache) / build, 2)}  # fmt: skip
    from datasets import Dataset

    long_videos = Dataset.from_list(long_rows)
    t = time.perf_counter()
    long_cache = build_frame_cache(
        long_videos, processor, corpus="long", split="clips", cache_dir=work / "cache", num_proc=cores, rebuild=True
    )
    build = time.perf_counter() - t
    results["long_clip"]["cache_build"] = {"videos": len(long_cache), "seconds_all_cores": round(build, 2),
                                           "videos_per_s_all_cores": round(len(long_cache) / build, 2)}  # fmt: skip

    # 3. Per-core rates.
    pin_to_one_core()
    corpus_rows = corpus_videos(train).select(range(min(args.decode_videos, len(corpus_cache)))).to_list()
    results["corpus"]["decode"] = bench_decode(corpus_rows, processor)
    results["corpus"]["cache_read"] = bench_cache(
        corpus_cache, processor, list(corpus_cache.dataset["video_id"]), args.cache_batches
    )
    results["long_clip"]["decode"] = bench_decode(long_rows, processor)
    results["long_clip"]["cache_read"] = bench_cache(
        long_cache, processor, [r["video_id"] for r in long_rows], args.cache_batches, batch_size=16
    )

    report = {
        "benchmark": "data_pipeline",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
        "machine": host,
        "versions": versions(),
        "setup": {
            "processor": "S2CAVideoProcessor() defaults: CLIP4Clip policy, 1 fps, max_frames 12, uniform, 224 px",
            "corpus": f"synthetic, {args.num_videos} clips, 64x64 H.264, 48 frames at 4 fps (12 s); train split",
            "long_clip": f"{args.long_clips} clips, 10 s, 320x240, 30 fps, H.264 (libx264 defaults), textured",
            "per_core": "measured in one process pinned to one core, torch.set_num_threads(1)",
        },
        "target_cache_videos_per_s_per_core": TARGET_CACHE_VIDEOS_PER_S_PER_CORE,
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "data_pipeline.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    r = report["results"]
    lines = [
        "# Data pipeline: model-ready videos (12 x 3 x 224 x 224) per second per CPU core",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores_available']} cores available, "
        f"{report['machine']['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        *[f"- {key}: {value}" for key, value in report["setup"].items()],
        "",
        "| input | (a) decode files + processor | read_frames alone | (b) frame cache -> tensors | target (b) |"
        " cache build, all cores |",
        "|---|---|---|---|---|---|",
    ]
    names = {"corpus": "synthetic corpus (64x64, 12 s)", "long_clip": "long clip (320x240, 10 s, 30 fps)"}
    for key, name in names.items():
        d, c, b = r[key]["decode"], r[key]["cache_read"], r[key]["cache_build"]
        lines.append(
            f"| {name} | {d['videos_per_s_per_core']} | {d['read_frames_only_videos_per_s_per_core']} | "
            f"{c['videos_per_s_per_core']} | >= {report['target_cache_videos_per_s_per_core']} | "
            f"{b['videos_per_s_all_cores']} videos/s ({b['videos']} in {b['seconds_all_cores']} s) |"
        )
    lines += [
        "",
        f"Generating the corpus ({report['setup']['corpus'].split(',')[1].strip()}) took "
        f"{r['corpus']['generate_seconds_all_cores']} s on all cores.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
