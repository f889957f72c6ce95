"""Several searching processes on one machine: total queries/s of N client processes on one two-stage index, each
sending single-query searches, with the first stage's FAISS threads as the package sets them (one per query in the
batch) against FAISS's default (every core), measured side by side in one run.

    python benchmarks/search_concurrency.py [--rows 200000] [--clients 1 2 4] [--seconds 10]

The index is generated (clustered vectors with a decaying spectrum, D = 64, K = 8: 576 dimensions, float16 shards)
with an IVF first stage (the "auto" factory). Each client loads it, warms up, then searches one random query at a
time for `--seconds`; a row is the sum of the clients' queries/s. Writes `benchmarks/results/search_concurrency.json`
and `.md`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import time

import torch

from s2ca_hf.retrieval import search as search_module
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.store import write_vector_index


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runs import RESULTS, save_report  # noqa: E402

from s2ca_hf.utils import ArgumentParser, first_paragraph


D, K = 64, 8
E = D * (1 + K)
POLICIES = {
    "one FAISS thread per query (the package)": False,
    "FAISS's default threads (every core)": True,
}


def generate(folder: str, rows: int) -> str:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(256, E, generator=generator)
    scales = torch.linspace(1.0, 0.05, E)
    settings = {
        "model": {"name_or_path": "generated", "class": "S2CAModel", "config_sha256": "0" * 64,
                  "weights_sha256": "0" * 64, "dimension": E, "projection_dim": D},
        "encoding_dtype": "float32", "frame_policy": {}, "source": {}, "windows": None,
    }  # fmt: skip

    def chunks():
        for start in range(0, rows, 50_000):
            count = min(50_000, rows - start)
            members = centres[torch.randint(0, 256, (count,), generator=generator)]
            vectors = (members + 0.4 * torch.randn(count, E, generator=generator)) * scales
            yield [{"id": f"v{i}", "path": f"/videos/{i}.mp4"} for i in range(start, start + count)], vectors

    write_vector_index(folder, chunks(), settings)
    VideoIndex.load(folder, device="cpu").build_first_stage(progress=False)
    return folder


def client(folder: str, seconds: float, all_threads: bool, start, results) -> None:
    if all_threads:  # FAISS's own default: every core, whatever the batch (how the package searched before)
        default = search_module.faiss_threads(10**9)
        search_module.faiss_threads = lambda queries: default
    index = VideoIndex.load(folder, device="cpu")
    generator = torch.Generator().manual_seed(os.getpid())
    queries = torch.randn(64, E, generator=generator)
    for q in range(8):  # warm-up: the shards' pages, FAISS's buffers
        index.search_vectors(queries[q : q + 1], k=10)
    start.wait()
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        index.search_vectors(queries[count % 64 : count % 64 + 1], k=10)
        count += 1
    results.put(count / (time.perf_counter() - began))


def measure(folder: str, clients: int, seconds: float, all_threads: bool) -> float:
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no thread pool inherited through fork
    start, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=client, args=(folder, seconds, all_threads, start, results)) for _ in range(clients)
    ]
    for process in processes:
        process.start()
    time.sleep(3 + clients)  # every client loaded and warmed up
    start.set()
    rates = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


def markdown(report: dict) -> str:
    lines = [
        "# Several searching processes on one machine",
        "",
        f"{report['date']} · {report['machine']} · `{report['command']}` · load average {report['load_average']} "
        f"at the start" + (f" ({report['note']})" if report.get("note") else ""),
        "",
        f"A generated index of {report['rows']:,} videos ({E} dimensions) with an IVF first stage "
        f"({report['factory']}); each client sends one query at a time for {report['seconds']:g} s; queries/s of all "
        "clients together.",
        "",
        "| clients | " + " | ".join(POLICIES) + " |",
        "|---|" + "---|" * len(POLICIES),
    ]
    for row in report["rows_measured"]:
        lines.append(f"| {row['clients']} | " + " | ".join(f"{row[p]:.1f}" for p in POLICIES) + " |")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--note", help="what the results file should say about the machine's state")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="s2ca-concurrency-") as work:
        folder = generate(os.path.join(work, "index"), args.rows)
        factory = VideoIndex.load(folder, device="cpu").first_stage.settings["factory"]
        measured = []
        for clients in args.clients:
            row = {"clients": clients}
            for name, all_threads in POLICIES.items():
                row[name] = measure(folder, clients, args.seconds, all_threads)
                print(f"{clients} client(s), {name}: {row[name]:.1f} queries/s", flush=True)
            measured.append(row)
    report = {
        "rows": args.rows,
        "factory": factory,
        "seconds": args.seconds,
        "load_average": round(load, 2),
        "rows_measured": measured,
        "note": args.note,
    }
    return save_report(report, "search_concurrency", argv, args.out, markdown)


if __name__ == "__main__":
    main()
