"""The run-and-report library of the accuracy benchmarks (`accuracy.py`, `s2ca_diagnosis.py`, `default_run.py`).

Each training run is `training/train.py` in its own process, reused when its folder holds a finished run with the same
arguments (so an interrupted benchmark continues where it stopped); a run's figures are those of the checkpoint it
selected on val; rows are means and stds over seeds; every report is written as JSON and Markdown with the date, the
machine, the exact command and the library versions.
"""

import datetime
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys

import torch
import transformers


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESULTS = os.path.join(REPO, "benchmarks", "results")
# Every choice is made on val; the others are only reported: test (in distribution), compositional (combinations never
# seen in training), open_vocab (colours and shapes only the pretraining stills show: what fine-tuning forgets).
SPLITS = ("val", "test", "compositional", "open_vocab")

KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")

NO_ATR = ["--align", "false", "--transform", "false", "--reconstruct", "false"]

ATR = ["--align", "true", "--transform", "true", "--reconstruct", "true"]


def load_training_script(name: str):
    """training/<name>.py, imported by name (the training scripts import each other so: `from losses import ...`)."""
    folder = os.path.join(REPO, "training")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


RUN_MARKER = "benchmark_run.json"  # in a finished run's folder: the exact train.py arguments it ran with


def run_training(arguments: list[str]) -> dict:
    """One `training/train.py` run in its own process, as a user runs it (a long-lived process that forks data
    workers after heavy torch work can hang), returning its `eval_results.json` summary.

    A run whose folder holds a finished run with the same arguments is reused, and an interrupted one with the same
    arguments continues from its last checkpoint (`--resume_from_checkpoint latest`), so that a benchmark stopped
    mid-run loses at most the steps since that checkpoint."""
    output_dir = arguments[arguments.index("--output_dir") + 1]
    marker = os.path.join(output_dir, RUN_MARKER)
    if _recorded(marker) == arguments:
        with open(os.path.join(output_dir, "eval_results.json")) as f:
            return json.load(f)
    # Beside the run's folder, which train.py empties when it starts a run afresh.
    started = os.path.join(
        os.path.dirname(os.path.abspath(output_dir)), f".{os.path.basename(output_dir)}.started.json"
    )
    checkpoints = os.path.join(output_dir, "checkpoints")
    resumable = _recorded(started) == arguments and os.path.isdir(checkpoints) and os.listdir(checkpoints)
    # A benchmark run otherwise replaces what an earlier run of the same benchmark left in its folder.
    continuation = ["--resume_from_checkpoint", "latest"] if resumable else ["--overwrite_output_dir", "true"]
    command = [sys.executable, os.path.join(REPO, "training", "train.py"), *arguments, *continuation]
    os.makedirs(os.path.dirname(started), exist_ok=True)
    with open(started, "w") as f:
        json.dump(arguments, f)
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        summary = json.load(f)
    with open(marker, "w") as f:
        json.dump(arguments, f)
    os.remove(started)
    return summary


def _recorded(path: str):
    """The JSON in `path`, or None if there is none."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def selected(summary: dict) -> tuple[dict, str]:
    """The metrics of the checkpoint that `train.py` selected on val (its `best_step`), and where it is."""
    for evaluation in summary["evaluations"]:
        if evaluation["step"] == summary["best_step"]:
            return evaluation["metrics"], summary["best_model"]
    return summary["final_metrics"], summary["final_model"]


def summarise(name: str, per_seed: list[dict], seeds: list[int], best_steps: list[int] | None = None) -> list[dict]:
    rows = []
    for split in SPLITS:
        row = {"method": name, "split": split, "seeds": seeds, "best_steps": best_steps}
        for direction in ("text_to_video", "video_to_text"):
            values = {key: [run[split][direction][key] for run in per_seed] for key in KEYS}
            row[direction] = {key: statistics.fmean(v) for key, v in values.items()}
            row[f"{direction}_std"] = {key: statistics.pstdev(v) if len(v) > 1 else 0.0 for key, v in values.items()}
        rows.append(row)
    return rows


def cell(value) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"  # None / NaN: a statistic the row lacks


def r1_cell(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def header(report: dict) -> str:
    versions = " · ".join(f"{name} {version}" for name, version in report["versions"].items())
    zero_shot_r1 = " / ".join(f"{report['clip_zero_shot'][split]['text_to_video']['R@1']:.1f}" for split in SPLITS)
    return (
        f"{report['date']} · {report['machine']} · {versions} · seeds {report['seeds']} · `{report['command']}` · "
        f"the small CLIP's zero-shot text->video R@1 ({' / '.join(SPLITS)}): {zero_shot_r1}"
    )


def group_by_method(per_run: dict[str, dict]) -> dict[str, list[dict]]:
    by_method: dict[str, list[dict]] = {}
    for key, run in per_run.items():
        by_method.setdefault(key.rsplit(" / seed ", 1)[0], []).append(run)
    return by_method


def corpus_format(data_dir: str) -> int:
    """The format version of the built-in corpus the benchmark ran on (what the README labels its figures with)."""
    from s2ca_hf.data.synthetic import META_JSON

    with open(os.path.join(data_dir, META_JSON)) as f:
        return json.load(f)["format_version"]


def oracles(data_dir: str) -> dict[str, dict]:
    """Per evaluation split, the text->video R@1 ceilings of `s2ca_hf.data.synthetic.oracle_r1` and the query count."""
    from s2ca_hf.data.synthetic import load_clips, oracle_r1

    clips = list(load_clips(data_dir).values())
    return {
        split: {"queries": len(members), **oracle_r1(members)}
        for split in SPLITS
        if (members := [c for c in clips if c.split == split])
    }


def machine() -> str:
    """The CPU model (results depend on it: float kernels differ), core count and architecture."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {platform.machine()}, {os.cpu_count()} cores"


def save_report(report: dict, name: str, argv: list[str] | None, out: str, render, script: str | None = None) -> dict:
    """Adds the date, machine, exact command and versions, writes `<out>/<name>.json` and `.md`, prints the table.
    `script` is the benchmark that ran (default: `benchmarks/<name>.py`)."""
    script = script or f"benchmarks/{name}.py"
    report.update(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        command=" ".join([f"python {script}", *(argv if argv is not None else sys.argv[1:])]),
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(render(report))
    if importlib.util.find_spec("matplotlib") is not None:  # the figures beside the tables (the viz extra)
        import figures

        figures.write_figures(report, name, out)
    print(render(report))
    return report
