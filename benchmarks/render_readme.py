"""Writes every figure the README quotes from the committed results files, so that none is typed by hand.

The README shows three rendered blocks, each between its markers, and nothing else from `benchmarks/results/`:

* the default run (section "Training"): `default_run.json`;
* the search summary (section "Search your own videos"): `search.json`;
* the results in brief: the headline table of `accuracy.json` and its R@K figure, with a link to the full report.

The full reports stay in `benchmarks/results/` (headline benchmarks at the top, the diagnosis rounds in `diagnosis/`)
and are read there or through docs/benchmarks.md and docs/research-log.md. Command lines are shown with
repository-relative paths, whatever folders the benchmark machine used.

    python benchmarks/render_readme.py          # rewrite README.md between the markers
    python benchmarks/render_readme.py --check  # exit 1 if README.md is not what the results files give
"""

import json
import os
import shlex
import sys

from s2ca_hf.utils import ArgumentParser, first_paragraph


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
START, END = "<!-- results:start (benchmarks/render_readme.py) -->", "<!-- results:end -->"
RUN_START, RUN_END = "<!-- default-run:start (benchmarks/render_readme.py) -->", "<!-- default-run:end -->"
SEARCH_START, SEARCH_END = "<!-- search-summary:start (benchmarks/render_readme.py) -->", "<!-- search-summary:end -->"
ACCURACY = "accuracy.json"  # the results in brief: its headline table
ACCURACY_REPORT = "accuracy.md"  # linked: the full report
ACCURACY_FIGURE = "accuracy_recall.png"  # the one figure shown
DEFAULT_RUN = "default_run.json"  # in "Training"
SEARCH = "search.json"  # in "Search your own videos"
RENDERED = (ACCURACY, ACCURACY_FIGURE, DEFAULT_RUN, SEARCH)

# The built-in corpus a results file was measured on. A file records it as `corpus_format`; the files written
# before that key existed were all measured on format 2 (format 1's are under history/ and are not rendered).
UNRECORDED_CORPUS_FORMAT = 2
CORPUS_FORMATS = {
    1: "200-clip splits, no val split",
    2: "one or two objects at fixed places, every caption naming the whole scene",
}
# Flags whose value is the results folder: shown as the script's default.
RESULTS_FLAGS = ("--out", "--output_dir")
# A path's first component from which it reads as repository-relative (`/work/bench/runs/x` -> `runs/x`).
REPOSITORY_FOLDERS = ("data", "runs", "benchmarks", "training")


def current_corpus_format() -> int:
    from s2ca_hf.data.synthetic import FORMAT_VERSION

    return FORMAT_VERSION


def repository_path(path: str, flag: str | None = None) -> str:
    """An absolute path of the benchmark machine as the repository-relative path it stands for."""
    if not os.path.isabs(path):
        return path
    if flag in RESULTS_FLAGS:
        return "benchmarks/results"
    if path == REPO or path.startswith(REPO + os.sep):
        return os.path.relpath(path, REPO)
    parts = path.strip("/").split("/")
    for i, part in enumerate(parts):
        if part in REPOSITORY_FOLDERS:
            return "/".join(parts[i:])
    return parts[-1]


def repository_command(command: str) -> str:
    """The command line with every absolute path made repository-relative (`repository_path`)."""
    tokens = shlex.split(command)
    shown = []
    for i, token in enumerate(tokens):
        flag = tokens[i - 1] if i else None
        if token.startswith("--") and "=" in token:
            name, value = token.split("=", 1)
            token = f"{name}={repository_path(value, name)}"
        else:
            token = repository_path(token, flag)
        shown.append(shlex.quote(token))
    return " ".join(shown)


def corpus_note(report: dict, script: str) -> str:
    """Which built-in corpus the figures were measured on, and whether a re-run is due."""
    measured, current = report.get("corpus_format", UNRECORDED_CORPUS_FORMAT), current_corpus_format()
    if measured >= current:
        return f"Measured on the built-in corpus of format {measured}."
    about = CORPUS_FORMATS.get(measured)
    return (
        f"**Measured on the previous built-in corpus (format {measured}"
        + (f": {about}" if about else "")
        + f").** The corpus is now format {current}, and these figures will be replaced by a re-run of `{script}`."
    )


def provenance(report: dict) -> str:
    versions = " · ".join(f"{name} {version}" for name, version in report.get("versions", {}).items())
    parts = [report["date"][:10], report["machine"], versions]
    if "seeds" in report:
        parts.append("seeds " + ", ".join(str(seed) for seed in report["seeds"]))
    parts.append(f"`{repository_command(report['command'])}`")
    return " · ".join(part for part in parts if part)


def mean_std(row: dict, key: str = "R@1", direction: str = "text_to_video") -> str:
    return f"{row[direction][key]:.1f} ± {row[direction + '_std'][key]:.1f}"


def accuracy_section(results_dir: str) -> str:
    """The results in brief: text->video R@1 of every method on every split, the R@K figure, the full report."""
    path = os.path.join(results_dir, ACCURACY)
    if not os.path.isfile(path):
        return "\n".join([START, "", "No accuracy benchmark has been run yet.", "", END])
    report = json.load(open(path, encoding="utf-8"))
    methods, splits, cells = [], [], {}
    for row in report["rows"]:
        methods += [row["method"]] if row["method"] not in methods else []
        splits += [row["split"]] if row["split"] not in splits else []
        cells[row["method"], row["split"]] = mean_std(row)
    lines = [
        START,
        "",
        corpus_note(report, "benchmarks/accuracy.py"),
        "",
        provenance(report),
        "",
        "Text→video R@1 (mean ± std over the seeds) of each run's checkpoint with the best val R@1, as the training "
        "run evaluated it; val is the only split any choice is made on.",
        "",
        "| method | " + " | ".join(splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(cells.get((method, split), "–") for split in splits) + " |")
    figure = os.path.join(results_dir, ACCURACY_FIGURE)
    if os.path.isfile(figure):
        lines += ["", f"![text→video R@K of every method on every split]({os.path.relpath(figure, REPO)})"]
    lines += [
        "",
        f"(from `{os.path.relpath(path, REPO)}`; the full report, with video→text, R@5, MnR, the errors by kind and "
        f"the concept diagnostics, is `{os.path.relpath(os.path.join(results_dir, ACCURACY_REPORT), REPO)}`)",
        "",
        END,
    ]
    return "\n".join(lines)


def default_run_section(results_dir: str) -> str:
    """What the first command gives: its time and the selected model's metrics."""
    path = os.path.join(results_dir, DEFAULT_RUN)
    report = json.load(open(path, encoding="utf-8"))
    seconds = report["seconds"]
    lines = [
        RUN_START,
        "",
        corpus_note(report, "benchmarks/default_run.py"),
        "",
        f"`accelerate launch training/train.py` in an empty folder, one process: **{seconds:.0f} s in all** "
        f"({seconds / 60:.1f} min: corpus, small-CLIP pretraining, frame caches, {report['steps']} training steps, "
        f"{report['evaluations']} evaluations). The model selected on val (step {report['best_step']}) scored:",
        "",
        "| split (clips) | T2V R@1 | T2V R@5 | T2V MnR | V2T R@1 | V2T R@5 | V2T MnR |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, metrics in report["metrics"].items():
        clips = report.get("clips", {}).get(split)
        cells = [
            f"{metrics[direction][key]:.1f}"
            for direction in ("text_to_video", "video_to_text")
            for key in ("R@1", "R@5", "MnR")
        ]
        lines.append(f"| {split}{f' ({clips})' if clips else ''} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{provenance(report)}; load average (1 min) at the start and the end: {report['load_average']}. One seed, "
        "one run: it shows what the first command gives, not how methods compare.",
        "",
        f"(from `{os.path.relpath(path, REPO)}`)",
        RUN_END,
    ]
    return "\n".join(lines)


def first_pass(row: dict) -> str:
    if "queries_per_s_batch_64_first_pass" not in row:  # measured before the first pass was timed apart
        return ""
    return f" in the steady state, {row['queries_per_s_batch_64_first_pass']:,} on the first pass over the queries"


def headline_rows(rows: list[dict], recall: float = 0.95) -> list[dict]:
    """One row per generated collection: the setting with the most queries/s in batches of 64 among those with
    recall@10 >= `recall` (the two-stage search's target), or the one with the best recall if none reaches it."""
    by_collection: dict[str, list[dict]] = {}
    for row in rows:
        by_collection.setdefault(row["collection"], []).append(row)
    chosen = []
    for group in by_collection.values():
        good = [row for row in group if row["recall_at_10"] >= recall]
        chosen.append(
            max(good, key=lambda row: row["queries_per_s_batch_64"])
            if good
            else max(group, key=lambda row: (row["recall_at_10"], row["queries_per_s_batch_64"]))
        )
    return chosen


def search_summary(results_dir: str) -> str:
    """A paragraph of the search benchmark's headline figures, written from results/search.json."""
    report = json.load(open(os.path.join(results_dir, SEARCH), encoding="utf-8"))
    env = report["environment"]
    text = (
        f"Measured by `benchmarks/search.py` ({report['date'][:10]}, {env['cpu_model']}, {env['cpu_count']} cores, "
        f"no GPU, load average {report['load_average_1min']['start']} at the start; top-{report['k']}; "
        "`benchmarks/results/search.md`):"
    )
    exact = {
        (r["vectors"], r["dimension"]): r for r in report["search"] if r["backend"] == "exact" and "skipped" not in r
    }
    for (vectors, dimension), row in sorted(exact.items()):
        if vectors in (10_000, 1_000_000) and dimension > 1024:
            text += (
                f" exact search over {vectors:,} random vectors of {dimension:,} dimensions answers one query in "
                f"{row['latency_ms']} ms ({row['queries_per_s']:,} queries/s in batches of {row['batch_queries']},"
                f" {row['storage'].split(':')[0].split(',')[0]});"
            )
    two_stage = report.get("two_stage", {})
    for row in headline_rows(two_stage.get("large", [])):
        text += (
            f" two-stage search over {row['collection']} ({row['dimension']:,} dimensions, {row['disk_gib']} GiB of "
            f"shards on disk; {row['candidates']} candidates, nprobe {row['nprobe']}, refine x "
            f"{row.get('refine_k_factor', 16)}): recall@10 {row['recall_at_10']:.3f} against the exact ranking, "
            f"{row['queries_per_s_batch_1']:,} queries/s one at a time and {row['queries_per_s_batch_64']:,} in "
            f"batches of 64{first_pass(row)} (the exact scan of the same shards: {row['exact_queries_per_s']:,} "
            "queries/s), "
            f"{row['bytes_per_video']:.0f} bytes per video in the first stage, peak resident memory "
            f"{row['peak_rss_gib']} GiB;"
        )
    if "skipped" in two_stage or not two_stage:
        text += " the two-stage rows are not measured in this file;"
    return "\n".join([SEARCH_START, text.rstrip(";") + ".", SEARCH_END])


def replace_between(text: str, start: str, end: str, content: str) -> str:
    if start not in text or end not in text:
        raise ValueError(f"README.md has no markers {start} ... {end}.")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + content + after


def render(readme: str, results_dir: str) -> str:
    readme = replace_between(readme, START, END, accuracy_section(results_dir))
    if os.path.isfile(os.path.join(results_dir, DEFAULT_RUN)) and RUN_START in readme:
        readme = replace_between(readme, RUN_START, RUN_END, default_run_section(results_dir))
    if os.path.isfile(os.path.join(results_dir, SEARCH)) and SEARCH_START in readme:
        readme = replace_between(readme, SEARCH_START, SEARCH_END, search_summary(results_dir))
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args(argv)
    readme = open(args.readme, encoding="utf-8").read()
    rendered = render(readme, args.results)
    if args.check:
        if rendered != readme:
            print("README.md's rendered figures are stale: run python benchmarks/render_readme.py", file=sys.stderr)
            return 1
        return 0
    with open(args.readme, "w", encoding="utf-8") as f:
        f.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
