"""Writes the README's "Results" section and its default-run table from the committed results files, so that no
figure there is typed by hand.

python benchmarks/render_readme.py          # rewrite README.md between the results markers
python benchmarks/render_readme.py --check  # exit 1 if README.md is not what the results files give
"""

import argparse
import glob
import json
import os
import re
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- results:start (benchmarks/render_readme.py) -->", "<!-- results:end -->"
RUN_START, RUN_END = "<!-- default-run:start (benchmarks/render_readme.py) -->", "<!-- default-run:end -->"
DEFAULT_RUN = "default_run.md"  # shown in the Training section, not under Results
SEARCH_START, SEARCH_END = "<!-- search-summary:start (benchmarks/render_readme.py) -->", "<!-- search-summary:end -->"
SEARCH = "search.json"  # summarised in "Search your own videos"
ORDER = (
    "accuracy.md",
    "s2ca_diagnosis_round*.md",
    "gpu_throughput-*.md",
    "data_pipeline.md",
    "search.md",
    "search_two_stage.md",  # a two-stage measurement run alone (search_two_stage.py), e.g. one collection size
)


def natural_key(path: str) -> list:
    """round2 before round10: the numbers in a name compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", os.path.basename(path))]


def results_files(results_dir: str) -> list[str]:
    files = []
    for pattern in ORDER:
        found = [p for p in glob.glob(os.path.join(results_dir, pattern)) if not p.endswith("-tiny-check.md")]
        files += sorted(found, key=natural_key)
    return files


def section(results_dir: str) -> str:
    parts = [START, ""]
    files = results_files(results_dir)
    if not files:
        parts.append("No benchmark has been run yet.")
    for path in files:
        name = os.path.relpath(path, REPO)
        text = open(path, encoding="utf-8").read().strip()
        # Each results file's own headings go one level down, under "## Results".
        text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
        parts += [text, "", f"(from `{name}`)", ""]
        figures = [
            f"[{label}]({os.path.relpath(figure, REPO)})"
            for label, suffix in (("R@K curves", "_recall.png"), ("concept usage", "_concepts.png"))
            if os.path.isfile(figure := path[: -len(".md")] + suffix)
        ]
        if figures:
            parts += ["Figures: " + ", ".join(figures) + " (`benchmarks/figures.py`).", ""]
    parts.append(END)
    return "\n".join(parts)


def default_run_section(results_dir: str) -> str:
    path = os.path.join(results_dir, DEFAULT_RUN)
    lines = open(path, encoding="utf-8").read().strip().splitlines()[1:]  # without its title
    return "\n".join([RUN_START, *lines, "", f"(from `{os.path.relpath(path, REPO)}`)", RUN_END])


def first_pass(row: dict) -> str:
    if "queries_per_s_batch_64_first_pass" not in row:  # measured before the first pass was timed apart
        return ""
    return f" in the steady state, {row['queries_per_s_batch_64_first_pass']:,} on the first pass over the queries"


def headline_rows(rows: list[dict], recall: float = 0.95) -> list[dict]:
    """One row per generated collection: the setting with the most queries/s in batches of 64 among those with
    recall@10 >= `recall` (issue 15's target), or the one with the best recall if none reaches it."""
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
    readme = replace_between(readme, START, END, section(results_dir))
    if os.path.isfile(os.path.join(results_dir, DEFAULT_RUN)):
        readme = replace_between(readme, RUN_START, RUN_END, default_run_section(results_dir))
    if os.path.isfile(os.path.join(results_dir, SEARCH)) and SEARCH_START in readme:
        readme = replace_between(readme, SEARCH_START, SEARCH_END, search_summary(results_dir))
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args(argv)
    readme = open(args.readme, encoding="utf-8").read()
    rendered = render(readme, args.results)
    if args.check:
        if rendered != readme:
            print("README.md's Results section is stale: run python benchmarks/render_readme.py", file=sys.stderr)
            return 1
        return 0
    with open(args.readme, "w", encoding="utf-8") as f:
        f.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
