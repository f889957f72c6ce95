"""Search and indexing throughput of `s2ca_hf.retrieval.index`: writes JSON and Markdown under benchmarks/results/.

    python benchmarks/search.py                      # the committed run: 10k, 100k, 1M vectors of 8,704 dimensions
    python benchmarks/search.py --sizes 10000 --quick   # a smoke run

What is measured (random float16 vectors; the values do not change the cost of a dot product):

* CPU exact search (`exact_search`, the `VideoIndex` code path): query latency (one query, median) and throughput
  (a batch of queries) over N x E vectors. Up to `--memory-gib` the vectors are held in memory as float32 (what
  `VideoIndex` does on a CPU). Past it (1M x 8,704 float16 is 17.4 GB, float32 twice that) the search is *streamed*:
  one float16 shard-sized chunk is searched again and again until N rows have been scored, which measures the
  conversion and arithmetic of the streaming path but not the disk reads.
* CPU FAISS (`SQfp16`, the default backend: float16 storage, exact inner products) where its N x E float16 copy
  fits in `--memory-gib`; otherwise at a reduced dimension, said so in the row.
* The same sizes at E = 512 (instance vectors only), held in memory: the cost of a CLIP4Clip-sized index.
* GPU exact search (float16 in GPU memory, float32 re-scoring of the candidates) when CUDA is available.
* Indexer throughput: `build_index` over generated clips with the tiny model (decode + encode + write), and the
  video and text encoders of the default-size S2CA model (`S2CAConfig()`: ViT-B/32 sizes, random weights) on tensors.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np
import search_two_stage  # benchmarks/search_two_stage.py, next to this script
import torch

from s2ca_hf.retrieval.build import build_index, software_versions
from s2ca_hf.retrieval.search import build_faiss_index, exact_search, faiss_search
from s2ca_hf.utils import ArgumentParser, first_paragraph
from s2ca_hf.video_io import encode_frames


DEFAULT_DIMENSION = 8704  # 512 x (1 + 16): ViT-B/32 projection, K = 16 usage-weighted concepts (= the old 1 + 2 x 8)


def environment() -> dict:
    """Machine and software versions, for the report."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    info.update(software_versions())
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def total_memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return None


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def random_vectors(rows: int, dim: int, seed: int, dtype=torch.float16, device="cpu", block: int = 65536):
    """`(rows, dim)` random unit-scale vectors, generated block by block so the float32 draw stays small."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(rows, dim, dtype=dtype, device=device)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        out[start:stop] = torch.randn(stop - start, dim, generator=generator, device=device) / dim**0.5
    return out


class RepeatedChunk:
    """A re-iterable of `repeats` references to one chunk: N rows streamed without holding N rows."""

    def __init__(self, chunk: torch.Tensor, rows: int):
        if rows % chunk.shape[0]:
            raise ValueError("rows must be a multiple of the chunk length")
        self.chunk, self.repeats = chunk, rows // chunk.shape[0]

    def __iter__(self):
        return (self.chunk for _ in range(self.repeats))


def timed(function, repeats: int, sync=None) -> list[float]:
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        function()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return times


def measure(search, dim: int, k: int, latency_repeats: int, batch: int, batch_repeats: int, device="cpu", sync=None):
    """Median single-query latency (ms) and batch throughput (queries/s) of `search(queries, k)`."""
    generator = torch.Generator().manual_seed(123)
    single = [torch.randn(1, dim, generator=generator).to(device) for _ in range(latency_repeats + 1)]
    many = torch.randn(batch, dim, generator=generator).to(device)
    search(single[0], k)  # warm-up (allocations, kernels)
    latencies = []
    for query in single[1:]:
        latencies += timed(lambda q=query: search(q, k), 1, sync)
    batch_times = timed(lambda: search(many, k), batch_repeats, sync)
    return {
        "latency_ms": round(1000 * statistics.median(latencies), 2),
        "latency_runs": len(latencies),
        "batch_queries": batch,
        "batch_seconds": round(statistics.median(batch_times), 4),
        "queries_per_s": round(batch / statistics.median(batch_times), 1),
        "batch_runs": len(batch_times),
    }


def cpu_search_rows(sizes, dim, k, memory_gib, args, log) -> list[dict]:
    rows = []
    for n in sizes:
        in_memory = n * dim * 4 <= memory_gib * 2**30 * 0.6  # float32 copy plus room for the float16 draw
        repeats = 1 if n >= 1_000_000 else args.repeats
        latency_repeats = 3 if n >= 1_000_000 else args.latency_repeats
        row = {"device": "cpu", "backend": "exact", "vectors": n, "dimension": dim, "k": k}
        if in_memory:
            vectors = random_vectors(n, dim, seed=n, dtype=torch.float32)  # drawn block by block: no float16 copy
            row["storage"] = "in memory, float32 (as VideoIndex holds it on a CPU)"
            search = lambda q, kk, v=vectors: exact_search(q, v, kk)  # noqa: E731
        else:
            chunk = random_vectors(args.stream_chunk, dim, seed=n)
            row["storage"] = (
                f"streamed: one float16 chunk of {args.stream_chunk} rows searched {n // args.stream_chunk} times "
                "(conversion and arithmetic of the streaming path; disk reads not included)"
            )
            stream = RepeatedChunk(chunk, n)
            search = lambda q, kk, s=stream: exact_search(q, s, kk)  # noqa: E731
        log(f"cpu exact {n} x {dim} ({'memory' if in_memory else 'streamed'}) ...")
        row.update(measure(search, dim, k, latency_repeats, args.cpu_batch, repeats))
        log(f"  {row['latency_ms']} ms/query, {row['queries_per_s']} queries/s")
        rows.append(row)
        del search
        vectors = stream = chunk = None  # free this row's vectors before the FAISS row allocates its own
        if args.faiss:
            rows.append(faiss_row(n, dim, k, memory_gib, args, log))
    return rows


def faiss_row(n, dim, k, memory_gib, args, log) -> dict:
    row = {"device": "cpu", "backend": f"faiss {args.faiss_factory}", "vectors": n, "dimension": dim, "k": k}
    if n * dim * 2 > memory_gib * 2**30 * 0.6:
        row["skipped"] = (
            f"{n} x {dim} float16 is {n * dim * 2 / 2**30:.1f} GiB, over the {memory_gib} GiB budget of this run"
        )
        log(f"faiss {n} x {dim}: skipped ({row['skipped']})")
        return row
    log(f"faiss {n} x {dim} ...")
    vectors = random_vectors(n, dim, seed=n)
    start = time.perf_counter()
    index = build_faiss_index(vectors, dim, args.faiss_factory)
    row["build_seconds"] = round(time.perf_counter() - start, 2)
    del vectors
    row["storage"] = "in memory, FAISS SQfp16 (float16 codes, exact inner products)"
    repeats = 1 if n >= 1_000_000 else args.repeats
    row.update(
        measure(lambda q, kk: faiss_search(index, q, kk), dim, k, args.latency_repeats, args.cpu_batch, repeats)
    )
    log(f"  {row['latency_ms']} ms/query, {row['queries_per_s']} queries/s")
    return row


def gpu_rows(sizes, dim, k, args, log) -> list[dict]:
    rows = []
    free, _ = torch.cuda.mem_get_info()
    for n in sizes:
        row = {"device": torch.cuda.get_device_name(), "backend": "exact", "vectors": n, "dimension": dim, "k": k}
        if n * dim * 2 > free * 0.7:
            row["skipped"] = f"{n * dim * 2 / 2**30:.1f} GiB of float16 does not fit in {free / 2**30:.0f} GiB free"
            rows.append(row)
            continue
        log(f"gpu exact {n} x {dim} ...")
        vectors = random_vectors(n, dim, seed=n, device="cuda")
        row["storage"] = "in GPU memory, float16; float32 re-scoring of the candidates"
        search = lambda q, kk, v=vectors: exact_search(q, v, kk, chunk_size=args.gpu_chunk)  # noqa: E731
        row.update(
            measure(search, dim, k, args.latency_repeats, args.gpu_batch, args.repeats, "cuda", torch.cuda.synchronize)
        )
        log(f"  {row['latency_ms']} ms/query, {row['queries_per_s']} queries/s")
        rows.append(row)
        del vectors, search
        torch.cuda.empty_cache()
    return rows


def write_noise_video(path: str, num_frames: int, seed: int, fps: int = 10, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, size, 3))
    noisy = (
        np.clip(base + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8) for _ in range(num_frames)
    )
    encode_frames(path, noisy, fps, "mpeg4")


def indexer_rows(args, log) -> list[dict]:
    """`build_index` end to end with the tiny model on generated clips (CPU, or the GPU when there is one)."""
    from s2ca_hf import S2CAModel
    from s2ca_hf.tiny import tiny_config, tiny_processor

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        videos = os.path.join(workdir, "videos")
        os.makedirs(videos)
        for i in range(args.index_videos):
            write_noise_video(os.path.join(videos, f"clip{i:04d}.mp4"), num_frames=40, seed=i)
        torch.manual_seed(0)
        processor = tiny_processor(os.path.join(workdir, "tokenizer"), max_frames=12)
        model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer))).eval()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        for workers in (0, 1):
            log(f"indexer: {args.index_videos} clips, tiny model, {workers} decode workers ...")
            out = os.path.join(workdir, f"index-{workers}")
            start = time.perf_counter()
            build_index(model, processor, videos, out, batch_size=16, num_workers=workers, progress=False)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "what": "s2ca-index end to end (decode, sample, resize, encode, write shards and table)",
                    "model": "tiny (CLIP towers of width 32, 32 px crops, K = 4, random weights)",
                    "device": device,
                    "videos": args.index_videos,
                    "clips": "4 s, 10 fps, 64 x 64 px MPEG-4, 12 frame slots (4 frames read: one per second)",
                    "decode_workers": workers,
                    "seconds": round(seconds, 2),
                    "videos_per_s": round(args.index_videos / seconds, 1),
                }
            )
            log(f"  {rows[-1]['videos_per_s']} videos/s")
    return rows


@torch.inference_mode()
def encoder_rows(args, log) -> list[dict]:
    """psi and phi of the default-size model (ViT-B/32 sizes, default K) on random tensors: the model's own cost."""
    from s2ca_hf import S2CAConfig, S2CAModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = S2CAModel(S2CAConfig()).eval().to(device)
    frames = model.config.num_frames
    rows = []
    batch = args.encoder_batch if device == "cpu" else 64
    pixels = torch.randn(batch, frames, 3, 224, 224, device=device)
    mask = torch.ones(batch, frames, dtype=torch.long, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    log(f"default-size video encoder, batch {batch} x {frames} frames on {device} ...")
    model.get_video_features(pixels[:1], mask[:1])
    times = timed(lambda: model.get_video_features(pixels, mask).pooler_output, 1 if device == "cpu" else 5, sync)
    rows.append(
        {
            "what": "get_video_features (psi), model only, float32",
            "model": f"S2CAConfig() defaults: ViT-B/32 sizes, {frames} frames, K = {model.config.num_concepts}, "
            "random weights",
            "device": device,
            "batch": batch,
            "seconds": round(min(times), 3),
            "videos_per_s": round(batch / min(times), 2),
            "dimension": model.config.embedding_dim,
        }
    )
    log(f"  {rows[-1]['videos_per_s']} videos/s")
    ids = torch.randint(0, 49406, (1, 12), device=device)
    attention = torch.ones_like(ids)
    timed(
        lambda: model.get_text_features(ids, attention).pooler_output, 3, sync
    )  # warm-up: the first calls are 3-4x slower
    times = timed(lambda: model.get_text_features(ids, attention).pooler_output, 10, sync)
    rows.append(
        {
            "what": "get_text_features (phi) of one 12-token query, model only, float32",
            "model": "S2CAConfig() defaults, random weights",
            "device": device,
            "latency_ms": round(1000 * statistics.median(times), 2),
        }
    )
    log(f"  text query encoding {rows[-1]['latency_ms']} ms")
    return rows


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Search benchmark (`benchmarks/search.py`)",
        "",
        f"* Date: {report['date']}",
        f"* Command: `{report['command']}`",
        f"* Machine: {env['cpu_model']}, {env['cpu_count']} CPU cores visible, "
        f"{env['memory_gib']} GiB RAM; {env['platform']}",
        f"* Software: Python {env['python']}, torch {env['torch']} ({env['torch_threads']} threads), "
        f"transformers {env['transformers']}, numpy {env['numpy']}, faiss {env.get('faiss', 'not installed')}, "
        f"s2ca_hf {env['s2ca_hf']}",
        f"* GPU: {env['gpu']}",
        f"* Peak resident memory of the run: {report['peak_rss_gib']:.2f} GiB",
        f"* Load average (1 min) at start and end: {report['load_average_1min']['start']} and "
        f"{report['load_average_1min']['end']} on {env['cpu_count']} cores (other jobs share this machine)",
        f"* Top-{report['k']}; latency = median over single queries; throughput = one batch of queries "
        "(size in the table) divided by its wall time. Random float16 vectors.",
        "",
        "## Search",
        "",
        "| device | backend | vectors | dim | storage | latency (ms, 1 query) | batch | queries/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["search"]:
        if "skipped" in row:
            lines.append(
                f"| {row['device']} | {row['backend']} | {row['vectors']:,} | {row['dimension']:,} | "
                f"not measured: {row['skipped']} | – | – | – |"
            )
            continue
        lines.append(
            f"| {row['device']} | {row['backend']} | {row['vectors']:,} | {row['dimension']:,} | {row['storage']} | "
            f"{row['latency_ms']} | {row['batch_queries']} | {row['queries_per_s']:,} |"
        )
    lines += ["", "## Encoding", "", "| what | model | device | result |", "|---|---|---|---|"]
    for row in report["encoding"]:
        if "videos_per_s" in row:
            extra = f", {row['decode_workers']} decode workers" if "decode_workers" in row else ""
            result = f"{row['videos_per_s']} videos/s ({row.get('videos', row.get('batch'))} videos{extra})"
        else:
            result = f"{row['latency_ms']} ms"
        lines.append(f"| {row['what']} | {row['model']} | {row['device']} | {result} |")
    if "two_stage" in report:
        lines += ["", *search_two_stage.markdown_lines(report["two_stage"], report["k"])]
    lines += ["", "## Notes", ""] + [f"* {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=DEFAULT_DIMENSION)
    parser.add_argument("--reduced-dim", type=int, default=512, help="also measure at this dimension (0: no)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--memory-gib", type=float, default=8.0, help="keep the vectors of one row under this")
    parser.add_argument("--cpu-batch", type=int, default=64, help="queries per throughput batch on the CPU")
    parser.add_argument("--gpu-batch", type=int, default=1000, help="queries per throughput batch on a GPU")
    parser.add_argument("--gpu-chunk", type=int, default=262144)
    parser.add_argument("--stream-chunk", type=int, default=10_000, help="rows of the streamed chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-repeats", type=int, default=10)
    parser.add_argument("--faiss-factory", default="SQfp16")
    parser.add_argument("--no-faiss", dest="faiss", action="store_false")
    parser.add_argument("--index-videos", type=int, default=48)
    parser.add_argument("--encoder-batch", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, few repeats, no encoders")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--name", default="search")
    parser.add_argument("--no-exact-rows", dest="exact_rows", action="store_false", help="only the two-stage rows")
    search_two_stage.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.latency_repeats, args.index_videos = 1, 2, 8
    if args.faiss:
        try:
            import faiss  # noqa: F401
        except ImportError:
            args.faiss = False

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    env = environment()
    env.update(
        cpu_model=cpu_model(),
        memory_gib=round(total_memory_gib() or 0, 1),
        numpy=np.__version__,
        torch_threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else "none available (torch.cuda.is_available() is False): the GPU rows are not measured",
    )
    if args.faiss:
        import faiss

        env["faiss"] = faiss.__version__
    notes = []
    search_rows = cpu_search_rows(args.sizes if args.exact_rows else [], args.dim, args.k, args.memory_gib, args, log)
    if args.reduced_dim and args.exact_rows:
        search_rows += cpu_search_rows(args.sizes, args.reduced_dim, args.k, args.memory_gib, args, log)
    if torch.cuda.is_available():
        search_rows += gpu_rows(args.sizes, args.dim, args.k, args, log)
    else:
        notes.append(
            "No GPU was available for this run: the GPU search target (docs/benchmarks.md §3) is not measured."
        )
    encoding = [] if args.quick or not args.exact_rows else indexer_rows(args, log) + encoder_rows(args, log)
    two_stage = search_two_stage.run(args)
    notes += [
        "Exact search on the CPU scores in float32 (the float16 vectors converted once at load, or per chunk when "
        "streamed), so its results are the exact top-k; FAISS SQfp16 decodes float16 exactly and returns the same "
        "top-k.",
        "Streamed rows measure the search arithmetic over N rows without holding them; reading the shards from "
        "disk at each search adds the read time of N x dim x 2 bytes.",
        "The tiny-model indexer rows measure the pipeline (PyAV decoding, frame sampling, resizing, shard writing), "
        "not the cost of a real model; the default-size encoder rows measure the model alone, on random tensors.",
    ]
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(part) for part in ["python", *sys.argv]),
        "environment": env,
        "k": args.k,
        "search": search_rows,
        "encoding": encoding,
        "two_stage": two_stage,
        "notes": notes,
        "peak_rss_gib": round(peak_rss_gib(), 2),
        # A shared machine: other jobs on the same cores slow every number down, small operations the most.
        "load_average_1min": {"start": round(load_at_start[0], 2), "end": round(os.getloadavg()[0], 2)},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    with open(os.path.join(args.out, f"{args.name}.md"), "w") as handle:
        handle.write(markdown(report))
    log(f"wrote {args.out}/{args.name}.json and .md in {report['wall_seconds']} s")
    return report


if __name__ == "__main__":
    main()
