"""Mean and std over seeds of the concept pilots: text-to-video R@1 at the checkpoint chosen on val, per split, and
the best checkpoint's val diagnostics.

    python benchmarks/results/diagnosis/concept_pilots/seeds.py NAME=RUN,RUN,RUN [NAME=RUN,...]

Each RUN is a pair of files in this folder, `RUN.eval_results.json` (train.py's summary) and
`RUN.val_diagnostics.json` (`val_diagnostics.py`). Writes `seeds.json` and `seeds.md` here.
"""

import json
import os
import statistics
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("val", "test", "compositional", "open_vocab")
DIAGNOSTICS = ("R1_inst", "R1_con", "R1_both", "R1_late_only", "R1_reranked")


def load(run: str) -> dict:
    with open(os.path.join(HERE, f"{run}.eval_results.json")) as f:
        summary = json.load(f)
    [best] = [e for e in summary["evaluations"] if e["step"] == summary["best_step"]]
    row = {"run": run, "best_step": summary["best_step"]}
    row.update({split: best["metrics"][split]["text_to_video"]["R@1"] for split in SPLITS})
    with open(os.path.join(HERE, f"{run}.val_diagnostics.json")) as f:
        diagnostics = json.load(f)
    row.update({key: diagnostics.get(key) for key in DIAGNOSTICS})
    return row


def mean_std(values: list) -> dict | None:
    if any(value is None for value in values):
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def main(groups: list[str]) -> None:
    report = []
    for group in groups:
        name, runs = group.split("=", 1)
        rows = [load(run) for run in runs.split(",")]
        summary = {key: mean_std([row[key] for row in rows]) for key in (*SPLITS, *DIAGNOSTICS)}
        report.append({"name": name, "runs": rows, **summary})
    with open(os.path.join(HERE, "seeds.json"), "w") as f:
        json.dump(report, f, indent=1)

    def cell(value: dict | None) -> str:
        return "–" if value is None else f"{value['mean']:.1f} ± {value['std']:.1f}"

    lines = [
        "# Concept pilots over seeds (text-to-video R@1 at the checkpoint chosen on val; val 200, test 500 queries)",
        "",
        "| variant | seeds | val | test | compositional | open_vocab | s_inst alone | s_con alone | late alone | "
        "re-ranked top 20 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in report:
        seeds = ", ".join(f"{row['run']} ({row['best_step']})" for row in entry["runs"])
        cells = [cell(entry[key]) for key in (*SPLITS, "R1_inst", "R1_con", "R1_late_only", "R1_reranked")]
        lines.append(f"| {entry['name']} | {seeds} | " + " | ".join(cells) + " |")
    with open(os.path.join(HERE, "seeds.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
