"""Figures beside the accuracy and diagnosis tables, drawn from their results files (never from a live run).

    python benchmarks/figures.py                      # accuracy.json and every diagnosis round's JSON
    python benchmarks/figures.py benchmarks/results/accuracy.json

For `<name>.json` it writes `<name>_recall.png` (text->video R@K against K, one line per method, one panel per
split) and, where the methods have concepts, `<name>_concepts.png` (the share of an item's concepts that get no
token, and each concept's share of all tokens, fullest first; val split, means over seeds). `runs.save_report`
calls it after writing each report, so the figures are regenerated with the results; matplotlib is the `viz` extra.
"""

import glob
import json
import os
import statistics
import sys

from s2ca_hf.utils import ArgumentParser, first_paragraph


SPLITS = ("val", "test", "compositional", "open_vocab")  # those a results file holds are drawn
RECALL_KS = (1, 5, 10, 50)


def _method_runs(report: dict) -> dict[str, list[dict]]:
    """method -> its runs, each `{"metrics": {split: ...}, "diagnostics": {split: ...} or None}`, for both layouts:
    `accuracy.json` (rows per method and split, diagnostics keyed "<method> / seed <s>") and the diagnosis files
    (rows per variant, each with its runs)."""
    runs: dict[str, list[dict]] = {}
    if "diagnostics" in report and isinstance(report["diagnostics"], dict):  # accuracy.json
        for row in report["rows"]:
            method = runs.setdefault(row["method"], [{"metrics": {}, "diagnostics": None}])
            method[0]["metrics"][row["split"]] = {"text_to_video": row["text_to_video"]}
        for key, diagnostics in report["diagnostics"].items():
            method = key.rsplit(" / seed ", 1)[0]
            if method in runs:
                runs[method].append({"metrics": None, "diagnostics": diagnostics})
        return runs
    for row in report["rows"]:
        runs[row["variant"]] = [{"metrics": r["metrics"], "diagnostics": r.get("diagnostics")} for r in row["runs"]]
    return runs


def recall_curves(report: dict) -> dict[str, dict[str, list[float | None]]]:
    """method -> split -> mean text->video R@K for K in `RECALL_KS` (None where the file has no such K)."""
    curves = {}
    for method, runs in _method_runs(report).items():
        with_metrics = [run["metrics"] for run in runs if run["metrics"]]
        curves[method] = {}
        for split in SPLITS:
            per_run = [m[split]["text_to_video"] for m in with_metrics if split in m]
            if per_run:
                curves[method][split] = [
                    statistics.fmean(r[f"R@{k}"] for r in per_run) if all(f"R@{k}" in r for r in per_run) else None
                    for k in RECALL_KS
                ]
    return curves


def concept_usage(report: dict) -> dict[str, dict]:
    """method -> {"empty": (text, video) empty-concept rate, "spread": {side: each concept's share of all the
    split's tokens, sorted fullest first}}, val split, means over the seeds; methods without concepts are left out."""
    usage = {}
    for method, runs in _method_runs(report).items():
        stats = [run["diagnostics"]["val"] for run in runs if run["diagnostics"]]
        stats = [s for s in stats if s.get("text_tokens_per_concept") is not None]
        if not stats:
            continue
        spread = {}
        for side in ("text", "video"):
            shares = []
            for s in stats:
                counts = sorted(s[f"{side}_tokens_per_concept"], reverse=True)
                total = sum(counts) or 1.0
                shares.append([c / total for c in counts])
            spread[side] = [statistics.fmean(values) for values in zip(*shares)]
        empty = tuple(statistics.fmean(s[f"{side}_empty_concept_rate"] for s in stats) for side in ("text", "video"))
        usage[method] = {"empty": empty, "spread": spread}
    return usage


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str) -> None:
    figure.savefig(path, bbox_inches="tight", metadata={"Software": None})  # the same bytes from the same file
    _pyplot().close(figure)


def plot_recall(curves: dict, path: str, title: str) -> None:
    plt = _pyplot()
    splits = [s for s in SPLITS if any(s in c for c in curves.values())]
    figure, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 3.6), sharey=True, squeeze=False)
    for axis, split in zip(axes[0], splits):
        for method, by_split in curves.items():
            points = [(k, r) for k, r in zip(RECALL_KS, by_split.get(split, [])) if r is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=method)
        axis.set_xscale("log")
        axis.set_xticks(RECALL_KS, [str(k) for k in RECALL_KS])
        axis.set_xlabel("K")
        axis.set_title(split)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("text->video R@K")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.suptitle(title)
    _save(figure, path)


def plot_concepts(usage: dict, path: str, title: str) -> None:
    plt = _pyplot()
    methods = list(usage)
    figure, (empty_axis, text_axis, video_axis) = plt.subplots(1, 3, figsize=(14, 3.8))
    width = 0.38
    positions = range(len(methods))
    empty_axis.bar([p - width / 2 for p in positions], [usage[m]["empty"][0] for m in methods], width, label="text")
    empty_axis.bar([p + width / 2 for p in positions], [usage[m]["empty"][1] for m in methods], width, label="video")
    empty_axis.set_xticks(list(positions), [f"{i + 1}" for i in positions])
    empty_axis.set_xlabel("method (numbered as in the legend)")
    empty_axis.set_ylabel("share of concepts with no token")
    empty_axis.set_ylim(0, 1)
    empty_axis.legend(fontsize=8)
    for axis, side in ((text_axis, "text"), (video_axis, "video")):
        for i, method in enumerate(methods):
            shares = usage[method]["spread"][side]
            axis.plot(range(1, len(shares) + 1), shares, marker=".", label=f"{i + 1}. {method}")
        axis.set_xlabel("concept, fullest first")
        axis.set_ylabel(f"share of all {side} tokens")
        axis.set_title(f"{side} tokens per concept")
        axis.grid(alpha=0.3)
    video_axis.legend(fontsize=7, loc="upper right")
    figure.suptitle(title)
    _save(figure, path)


def write_figures(report: dict, name: str, out: str) -> list[str]:
    """Writes the figures of one report next to its tables; returns their paths (none for a report that is not an
    accuracy or diagnosis table, such as the default run's)."""
    written = []
    if not isinstance(report.get("rows"), list) or not all("runs" in r or "method" in r for r in report["rows"]):
        return written
    curves = recall_curves(report)
    if curves:
        path = os.path.join(out, f"{name}_recall.png")
        plot_recall(curves, path, f"{name}: text->video R@K (means over seeds)")
        written.append(path)
    usage = concept_usage(report)
    if usage:
        path = os.path.join(out, f"{name}_concepts.png")
        plot_concepts(usage, path, f"{name}: how the concepts are used (val, means over seeds)")
        written.append(path)
    return written


def figure_sources(results_dir: str) -> list[str]:
    patterns = ("accuracy.json", os.path.join("diagnosis", "s2ca_diagnosis_round*.json"))
    return sorted(p for pattern in patterns for p in glob.glob(os.path.join(results_dir, pattern)))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    parser.add_argument(
        "files", nargs="*", help=f"results JSON files (default: the accuracy and diagnosis ones under {default})"
    )
    args = parser.parse_args(argv)
    for path in args.files or figure_sources(default):
        with open(path) as f:
            report = json.load(f)
        name = os.path.splitext(os.path.basename(path))[0]
        for written in write_figures(report, name, os.path.dirname(os.path.abspath(path))):
            print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
