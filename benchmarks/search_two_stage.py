"""Two-stage search at scale: recall@10 against exact search, RAM per video and queries/s (`benchmarks/search.py`
runs it and writes its rows into results/search.json and .md; alone it writes results/search_two_stage.*).

    python benchmarks/search_two_stage.py --model MODEL --videos DIR --captions MSRVTT_data.json

1. **A real index**: every clip of the built-in corpus (`--videos`) encoded with a trained S2CA model (`--model`),
   searched with its captions (`--captions`, encoded by the same model) as queries. Each first-stage setting
   (projection, candidates) is measured against the exact S2CA ranking of the same index: this is where the
   defaults are chosen.
2. **Large collections** (1M and 10M rows): written as real index folders (float16 shards on disk, second stage
   memory-mapped), with vectors drawn to match the real index: the real psi's mean and covariance, its top
   `--rank` principal directions with their variances plus isotropic noise of the remaining variance ("spectrum").
   Isotropic random vectors, which no compressed index can rank and no collection looks like, are one reference
   row ("isotropic"). Queries are the real captions' phi. Each row: build time, bytes per video in the first stage,
   peak resident memory of the searching process, queries/s at batch 1 and 64, recall@10 against exact search over
   the same vectors, and the exact (streamed) search's own queries/s, measured in the same run.

Searches and the exact ground truth run in child processes of their own, so that each reports its own memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue as queue_module
import shutil
import statistics
import sys
import time

import numpy as np
import torch

from s2ca_hf.retrieval import two_stage
from s2ca_hf.retrieval.cli import index_main
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.search import exact_search
from s2ca_hf.retrieval.store import write_vector_index
from s2ca_hf.utils import ArgumentParser, first_paragraph


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def recall_at_k(found_scores: torch.Tensor, exact_scores: torch.Tensor) -> float:
    """Mean over queries of the share of the k results that belong in the exact top-k: a result counts when its
    (exact, float32) score reaches the exact k-th score. Tie-aware: the built-in corpus has clips with identical psi,
    and which of several equal-score rows fills the k-th place is arbitrary, not a miss."""
    kth = exact_scores[:, -1:]
    return float(((found_scores >= kth - 1e-6 * kth.abs().clamp(min=1.0)).float().mean(1)).mean())


class ShardChunks:
    """Re-iterable float32 chunks of an index's mapped shards: exact search streamed from disk."""

    def __init__(self, shards: two_stage.MappedShards):
        self.shards = shards

    def __iter__(self):
        return self.shards.chunks()


def _memory() -> dict:
    """Peak resident memory of this process (file-backed pages of mapped shards included), its parts now."""
    status = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) / 2**20  # kB -> GiB
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent into a spawned child, which
    # would report the benchmark's own peak instead of the search process's.
    return {
        "peak_rss_gib": round(status.get("VmHWM", 0.0), 3),
        "rss_anon_gib": round(status.get("RssAnon", 0.0), 3),
        "rss_file_gib": round(status.get("RssFile", 0.0), 3),
    }


def _search_child(
    path: str,
    queries: torch.Tensor,
    k: int,
    candidates: int,
    nprobe: int,
    k_factor: int,
    batch: int,
    singles: int,
    out,
):
    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    index = VideoIndex.load(path, device="cpu")
    stage = index.first_stage  # loaded here: its time and memory are the first stage's
    if hasattr(stage.faiss_index, "k_factor"):  # the setting settings.json's refine_k_factor gives a built stage
        stage.faiss_index.k_factor = k_factor
    shards = two_stage.MappedShards(path, index.manifest, verify=False)  # verified once by the build
    index._mapped = shards
    open_seconds = time.perf_counter() - start
    search = lambda q: index.search_vectors(q, k, "two_stage", nprobe=nprobe, candidates=candidates)  # noqa: E731
    search(queries[:1])  # warm-up
    # First pass in batches of 64 over every query: the pages of the shards the candidates live on are mapped into
    # this process as they are first read (a page fault each). Then, timed again, the steady state of a long-running
    # search process, in which the pages it needs are mapped already.
    begin = time.perf_counter()
    for s in range(0, len(queries) - batch + 1, batch):
        search(queries[s : s + batch])
    first_pass_seconds = (time.perf_counter() - begin) / max(1, len(queries) // batch)
    latencies = []
    for q in range(singles):
        begin = time.perf_counter()
        search(queries[q : q + 1])
        latencies.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    for s in range(0, len(queries) - batch + 1, batch):
        search(queries[s : s + batch])
    batches = max(1, (len(queries) // batch))
    batch_seconds = (time.perf_counter() - begin) / batches
    scores, _ = search(queries)
    out.put(
        {
            "scores": scores.numpy(),  # numpy: a tensor would travel through shared memory the child takes with it
            "open_seconds": round(open_seconds, 2),
            "latency_ms": round(1000 * statistics.median(latencies), 2),
            "queries_per_s_batch_1": round(1 / statistics.median(latencies), 1),
            "queries_per_s_batch_64": round(batch / batch_seconds, 1),
            "queries_per_s_batch_64_first_pass": round(batch / first_pass_seconds, 1),
            **_memory(),
        }
    )


def _exact_child(path: str, queries: torch.Tensor, k: int, out):
    index = VideoIndex.load(path, device="cpu")
    shards = two_stage.MappedShards(path, index.manifest, verify=False)
    begin = time.perf_counter()
    scores, _ = exact_search(queries, ShardChunks(shards), k, query_batch_size=len(queries))
    seconds = time.perf_counter() - begin
    out.put(
        {
            "scores": scores.numpy(),
            "exact_seconds": round(seconds, 2),
            "exact_queries_per_s": round(len(queries) / seconds, 2),
        }
    )


def in_child(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=function, args=(*args, queue))
    process.start()
    while True:  # a child that dies without answering must not leave the benchmark waiting forever
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not process.is_alive():
                raise RuntimeError(f"{function.__name__} died (exit code {process.exitcode})") from None
    process.join()
    return result


def real_index(args, work: str) -> tuple[str, torch.Tensor, dict]:
    out = os.path.join(work, "real-index")
    start = time.perf_counter()
    if index_main(["--model", args.model, "--videos", args.videos, "--out", out, "--quiet"]) != 0:
        raise SystemExit(f"s2ca-index failed on {args.videos}")
    build_seconds = time.perf_counter() - start
    with open(args.captions) as handle:
        sentences = [s["caption"] for s in json.load(handle)["sentences"]]
    rng = np.random.default_rng(0)
    texts = [sentences[i] for i in sorted(rng.choice(len(sentences), args.queries, replace=False))]
    index = VideoIndex.load(out, device="cpu")
    queries = index.encode_texts(texts)
    info = {"videos": len(index), "dimension": index.dimension, "queries": len(texts), "index_seconds": build_seconds}
    info["model"] = index.manifest["model"]
    return out, queries, info


def real_rows(path: str, queries: torch.Tensor, args) -> list[dict]:
    index = VideoIndex.load(path, device="cpu")
    exact_scores, _ = exact_search(queries, index.vectors, args.k)
    rows = []
    projection_dim = index.manifest["model"]["projection_dim"]
    # The compressed first stage that auto gives a large collection, sized for this one (too few rows for its
    # codebooks below 1,000).
    factories = ["Flat"] + ([two_stage.ivf_pq_factory(len(index), projection_dim)] if len(index) >= 1000 else [])
    for projection in ("instance", "svd"):
        dims = projection_dim if projection == "instance" else min(projection_dim, len(index))
        for factory in factories:
            stage = index.build_first_stage(factory=factory, projection=projection, dims=dims, progress=False)
            for candidates in args.real_candidates:
                found, _ = index.search_vectors(queries, args.k, backend="two_stage", candidates=candidates)
                rows.append(
                    {
                        "collection": f"real: built-in corpus, {len(index)} clips",
                        "projection": projection,
                        "factory": stage.settings["factory"],
                        "candidates": candidates,
                        "bytes_per_video": stage.settings["bytes_per_video"],
                        "recall_at_10": round(recall_at_k(found, exact_scores), 4),
                    }
                )
                log(f"  real {projection} {stage.settings['factory']} C={candidates}: {rows[-1]['recall_at_10']}")
    shutil.rmtree(os.path.join(path, two_stage.FIRST_STAGE_DIR))
    return rows


def spectrum(real: torch.Tensor, rank: int) -> dict:
    mean = real.mean(0)
    centred = (real - mean).double()
    _, values, vh = torch.linalg.svd(centred, full_matrices=False)
    variances = values**2 / (real.shape[0] - 1)
    rank = min(rank, len(variances))
    residual = float(variances[rank:].sum() / real.shape[1])  # per-dimension variance left to isotropic noise
    return {
        "mean": mean.float(),
        "basis": (vh[:rank].t() * variances[:rank].sqrt()).float().t().contiguous(),  # (rank, E)
        "noise_std": residual**0.5,
        "explained": float(variances[:rank].sum() / variances.sum()),
        "rank": rank,
    }


def generate(out: str, rows: int, structure: str, model: dict, fit: dict, seed: int, shard_rows: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    dimension = model["dimension"]

    def chunks():
        for start in range(0, rows, shard_rows):
            n = min(shard_rows, rows - start)
            if structure == "isotropic":
                vectors = torch.randn(n, dimension, generator=generator) / dimension**0.5
            else:
                vectors = fit["mean"] + torch.randn(n, fit["rank"], generator=generator) @ fit["basis"]
                vectors += fit["noise_std"] * torch.randn(n, dimension, generator=generator)
            ids = [{"id": f"{structure}-{i}", "path": f"generated/{i}"} for i in range(start, start + n)]
            yield ids, vectors

    settings = {"model": model, "encoding_dtype": "float32", "frame_policy": {}, "source": {"generated": structure}}
    settings["windows"] = None
    begin = time.perf_counter()
    write_vector_index(out, chunks(), settings)
    return time.perf_counter() - begin


class AnonPeak:
    """The largest RssAnon of this process, sampled every 50 ms in a thread: the memory the process itself holds
    (VmHWM also counts file-backed pages of mapped shards, which the kernel reclaims under pressure)."""

    def __init__(self):
        import threading

        self.peak, self._done = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._done.wait(0.05):
            self.peak = max(self.peak, _memory()["rss_anon_gib"])

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return round(max(self.peak, _memory()["rss_anon_gib"]), 3)


def _build_child(folder: str, size: int, structure: str, model: dict, fit: dict, projection: str, out):
    """Writes a generated collection and builds its first stage, in a process of its own: its peak memory is the
    build's (the writer holds one shard of rows at a time; the first stage, its codes and a training sample)."""
    torch.set_num_threads(os.cpu_count() or 1)
    anon = AnonPeak()
    log(f"{structure} {size:,}: writing ...")
    row = {"write_seconds": round(generate(folder, size, structure, model, fit, seed=size, shard_rows=65536), 1)}
    index = VideoIndex.load(folder, device="cpu")
    log("  first stage ...")
    begin = time.perf_counter()
    stage = index.build_first_stage(projection=projection, progress=False)
    row["first_stage_seconds"] = round(time.perf_counter() - begin, 1)
    row.update(factory=stage.settings["factory"], projection=projection)
    row["bytes_per_video"] = stage.settings["bytes_per_video"]
    memory = _memory()
    row.update(build_peak_rss_gib=memory["peak_rss_gib"], build_rss_anon_gib=memory["rss_anon_gib"])
    row["build_peak_anon_gib"] = anon.stop()
    out.put(row)


def large_rows(real_path: str, queries: torch.Tensor, args, work: str) -> list[dict]:
    real = VideoIndex.load(real_path, device="cpu")
    fit = spectrum(real.vectors.float(), args.rank)
    model = {**real.manifest["model"], "name_or_path": "generated"}
    rows = []
    for size, structure in args.large:
        folder = os.path.join(work, f"{structure}-{size}")
        shutil.rmtree(folder, ignore_errors=True)
        row = {"collection": f"generated ({structure}), {size:,} rows", "vectors": size, "structure": structure}
        row["dimension"] = model["dimension"]
        if structure == "spectrum":
            row["spectrum"] = {"rank": fit["rank"], "explained_variance": round(fit["explained"], 4)}
        row.update(in_child(_build_child, folder, size, structure, model, fit, args.projection))
        row["disk_gib"] = round(size * model["dimension"] * 2 / 2**30, 2)
        log("  exact search (ground truth) ...")
        exact = in_child(_exact_child, folder, queries, args.k)
        want = torch.from_numpy(exact.pop("scores"))
        row.update(exact)
        settings = args.settings if size <= 1_000_000 else args.large_settings
        for setting in settings:  # one row per setting, each searched in a fresh process
            candidates, nprobe, k_factor = (int(value) for value in setting.split(":"))
            nprobe = nprobe if "IVF" in row["factory"] else None  # a Flat first stage has no lists
            log(f"  two-stage search, {candidates} candidates, nprobe {nprobe}, refine x {k_factor} ...")
            searched = in_child(_search_child, folder, queries, args.k, candidates, nprobe, k_factor, 64, args.singles)
            found = torch.from_numpy(searched.pop("scores"))
            rows.append({**row, **searched, "candidates": candidates, "nprobe": nprobe, "refine_k_factor": k_factor})
            rows[-1]["recall_at_10"] = round(recall_at_k(found, want), 4)
            log(f"  {json.dumps(rows[-1])}")
        if not args.keep:
            shutil.rmtree(folder)
    return rows


def build_peak(row: dict) -> str:
    # Rows measured before the build ran in a process of its own have no build memory.
    if "build_peak_rss_gib" not in row:
        return ""
    anon = f", anon peak {row['build_peak_anon_gib']}" if "build_peak_anon_gib" in row else ""
    return f" ({row['build_peak_rss_gib']} GiB{anon})"


def markdown_lines(section: dict, k: int) -> list[str]:
    """The two-stage section of results/search.md."""
    lines = ["## Two-stage search (compressed first stage, exact re-scoring from memory-mapped shards)", ""]
    if "skipped" in section:
        return lines + [f"Not measured: {section['skipped']}.", ""]
    real = section["real_index"]
    lines += [
        f"**Real index**: {real['videos']:,} clips of the built-in corpus encoded by {real['model']['name_or_path']} "
        f"(psi of {real['dimension']:,} dimensions), {real['queries']} of its captions as queries; recall@{k} "
        "against the exact S2CA ranking of the same index (tie-aware: a result counts when its score reaches the "
        f"exact {k}-th score).",
        "",
        "| projection | first stage | bytes per video | candidates | recall@10 |",
        "|---|---|---|---|---|",
    ]
    for row in section["real"]:
        lines.append(
            f"| {row['projection']} | {row['factory']} | {row['bytes_per_video']:.0f} | {row['candidates']} | "
            f"{row['recall_at_10']:.4f} |"
        )
    lines += [
        "",
        "**Large collections**, generated as index folders (float16 shards on disk) with the real index's "
        "dimension; queries: the same captions' phi. Searched in a process of its own (peak RSS: that process, "
        "file-backed pages of the mapped shards included; anon: its own memory at the end). Every query is searched "
        "once in batches of 64 first (first pass: the shards' pages are mapped into the process as the candidates "
        "are first read), then timed one at a time and in batches of 64 again: the steady state of a long-running "
        "search process. Exact: the full scan streamed from the same mapped shards, all queries in one batch, in "
        "the same run.",
        "",
        "| collection | first stage | bytes per video | candidates / nprobe / refine | disk | "
        "write + first stage: s (build peak RSS) | recall@10 | queries/s, batch 1 | "
        "queries/s, batch 64 (first pass) | exact queries/s | peak RSS / anon (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in section["large"]:
        lines.append(
            f"| {row['collection']} | {row['factory']} ({row['projection']}) | {row['bytes_per_video']:.0f} | "
            f"{row['candidates']} / {row['nprobe']} / {row.get('refine_k_factor', 16)} | "
            f"{row['disk_gib']} GiB | {row['write_seconds']} + {row['first_stage_seconds']}"
            f"{build_peak(row)} | {row['recall_at_10']:.4f} | {row['queries_per_s_batch_1']:,} | "
            f"{row['queries_per_s_batch_64']:,} ({row.get('queries_per_s_batch_64_first_pass', '–')}) | "
            f"{row['exact_queries_per_s']:,} | {row['peak_rss_gib']} / "
            f"{row['rss_anon_gib']} |"
        )
    spectra = [row["spectrum"] for row in section["large"] if "spectrum" in row]
    if spectra:
        lines += [
            "",
            f"Spectrum: the real psi's mean plus its top {spectra[0]['rank']} principal directions with their "
            f"variances ({100 * spectra[0]['explained_variance']:.1f} % of the variance), plus isotropic noise of "
            "the rest; isotropic: N(0, 1/E) in every dimension, the case no compressed index can rank.",
        ]
    return lines + [""]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a trained S2CA model folder (the real index); without it: no two-stage rows")
    parser.add_argument("--videos", help="the built-in corpus's video folder (e.g. data/synthetic/videos)")
    parser.add_argument("--captions", help="its MSRVTT_data.json, whose captions are the queries")
    parser.add_argument("--queries", type=int, default=256, help="captions used as queries (default 256)")
    parser.add_argument("--real-candidates", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument(
        "--large",
        nargs="+",
        default=["1000000:spectrum", "1000000:isotropic", "10000000:spectrum"],
        help="generated collections as ROWS:STRUCTURE (spectrum or isotropic)",
    )
    parser.add_argument("--projection", default="instance", choices=two_stage.PROJECTIONS)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["256:64:16", "256:128:16", "256:256:8", "256:256:16", "512:256:16"],
        help="two-stage settings measured on each generated collection, as CANDIDATES:NPROBE:REFINE_K_FACTOR "
        "(refine: how many times the candidates the refined first stage re-ranks from its coarse codes)",
    )
    parser.add_argument(
        "--large-settings",
        nargs="+",
        default=["256:1024:16", "256:256:16"],
        help="the settings measured on collections above 1M rows (a search there reads from disk: minutes each)",
    )
    parser.add_argument("--rank", type=int, default=256, help="principal directions of the spectrum fit")
    parser.add_argument("--singles", type=int, default=32, help="queries timed one at a time")
    parser.add_argument("--work", default=None, help="where the collections are written (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated collections")


def run(args) -> dict:
    """The two-stage section of the search report."""
    if not args.model:
        return {"skipped": "no --model given: the two-stage rows need a trained model's real index"}
    import tempfile

    args.large = [(int(size), structure) for size, structure in (item.split(":") for item in args.large)]
    work = args.work or tempfile.mkdtemp(prefix="s2ca-two-stage-")
    os.makedirs(work, exist_ok=True)
    log("real index ...")
    path, queries, info = real_index(args, work)
    section = {"real_index": info, "real": real_rows(path, queries, args)}
    section["large"] = large_rows(path, queries, args, work)
    if not args.work:
        shutil.rmtree(work)
    return section


if __name__ == "__main__":
    import datetime
    import platform
    import shlex

    parser = ArgumentParser(description=first_paragraph(__doc__))
    add_arguments(parser)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    arguments = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    result = run(arguments)
    result["header"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(part) for part in ["python", *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_1min": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
    }
    os.makedirs(arguments.out, exist_ok=True)
    with open(os.path.join(arguments.out, "search_two_stage.json"), "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    header = result["header"]
    with open(os.path.join(arguments.out, "search_two_stage.md"), "w") as handle:
        handle.write(
            f"# Two-stage search alone\n\n{header['date']} · {header['machine']} · `{header['command']}` · load "
            f"average (1 min) {header['load_average_1min']['start']} at the start, "
            f"{header['load_average_1min']['end']} at the end\n\n"
        )
        handle.write("\n".join(markdown_lines(result, arguments.k)))
