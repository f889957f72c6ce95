"""The README's default run, measured: `accelerate launch training/train.py` with no argument, in an empty folder.

    python benchmarks/default_run.py      # about 10 minutes on 2 cores

It generates the built-in corpus, pretrains the small CLIP, trains S2CA with the default recipe and evaluates it,
exactly as a new user's first command does, and writes the wall time and the metrics of the model it selected (best
val text->video R@1) to `benchmarks/results/default_run.json` and `.md`, which the README's Training section renders.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from s2ca_hf.utils import ArgumentParser, first_paragraph


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from runs import RESULTS, SPLITS, save_report, selected  # noqa: E402


COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def markdown(report: dict) -> str:
    lines = [
        "# The default run",
        "",
        f"{report['date']} · {report['machine']} · "
        + " · ".join(f"{k} {v}" for k, v in report["versions"].items())
        + f" · `{report['command']}`",
        "",
        f"`accelerate launch training/train.py` in an empty folder, one process: **{report['seconds']:.0f} s in all** "
        f"({report['seconds'] / 60:.1f} min: corpus, small-CLIP pretraining, frame caches, {report['steps']} "
        f"training steps, {report['evaluations']} evaluations). The model selected on val (step "
        f"{report['best_step']}) scored:",
        "",
        "| split (clips) | direction | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for split in SPLITS:
        for direction in ("text_to_video", "video_to_text"):
            values = " | ".join(f"{report['metrics'][split][direction][c]:.1f}" for c in COLUMNS)
            name = f"{split} ({report['clips'][split]})" if direction == "text_to_video" else split
            lines.append(f"| {name} | {direction.replace('_to_', '→')} | {values} |")
    if report.get("load_average") is not None:
        lines += ["", f"Load average (1 min) at the start and the end: {report['load_average']}."]
    if report.get("note"):
        lines += ["", report["note"]]
    lines += ["", "One seed, one run: this shows what the first command gives, not how methods compare (see Results)."]
    if report.get("concept_map"):
        shown = report["concept_map"]
        lines += [
            "",
            f"The selected model's concept map of the first test clip, {shown['video_id']}, and its caption "
            f"(score {shown['score']:.3f}; `s2ca-explain` draws one for any pair):",
            "",
            f"![concept map of {shown['video_id']}](benchmarks/results/{CONCEPT_MAP})",
        ]
    return "\n".join(lines + [""])


CONCEPT_MAP = "default_run_concept_map.png"


def write_concept_map(folder: str, model_dir: str, clips: list[dict], out: str) -> dict | None:
    """The concept map of the run's selected model on the first test clip and its caption (the README shows it);
    None without matplotlib (the viz extra)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    from s2ca_hf import S2CAModel, S2CAProcessor
    from s2ca_hf.visualization import concept_map, plot_concept_map

    clip = next(c for c in clips if c["split"] == "test")
    with open(os.path.join(folder, "data", "synthetic", "MSRVTT_data.json")) as f:
        caption = next(s["caption"] for s in json.load(f)["sentences"] if s["video_id"] == clip["video_id"])
    video = os.path.join(folder, "data", "synthetic", "videos", f"{clip['video_id']}.mp4")
    model_dir = os.path.join(folder, model_dir)  # the run's own paths are relative to its folder
    model, processor = S2CAModel.from_pretrained(model_dir).eval(), S2CAProcessor.from_pretrained(model_dir)
    concepts = concept_map(model, processor, video, caption)
    plot_concept_map(concepts, os.path.join(out, CONCEPT_MAP), title=f'{clip["video_id"]} (test): "{caption}"')
    return {"video_id": clip["video_id"], "caption": caption, "score": concepts.score}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--note", default=None, help="conditions of the run to print with it (other load, ...)")
    parser.add_argument("--render", default=None, help="only re-render this results JSON (with --note) to Markdown")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            report = json.load(f)
        report["note"] = args.note or report.get("note")
        with open(args.render, "w") as f:
            json.dump(report, f, indent=1)
        with open(args.render[: -len(".json")] + ".md", "w") as f:
            f.write(markdown(report))
        return report
    os.makedirs(args.out, exist_ok=True)  # before the run: a missing folder must not lose a finished run's figures
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="s2ca-default-run-") as folder:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        command += [os.path.join(REPO, "training", "train.py"), "--disable_tqdm", "true"]
        started = time.time()
        completed = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        seconds = time.time() - started
        if completed.returncode != 0:
            raise RuntimeError(f"the default run failed:\n{completed.stderr[-4000:]}")
        with open(os.path.join(folder, "runs", "synthetic", "eval_results.json")) as f:
            summary = json.load(f)
        metrics, model_dir = selected(summary)
        with open(os.path.join(folder, "data", "synthetic", "synthetic.json")) as f:
            meta = json.load(f)
        clips = meta["clips"]
        concept_map_file = write_concept_map(folder, model_dir, clips, args.out)
    report = {
        "seconds": seconds,
        "steps": summary["global_step"],
        "evaluations": len(summary["evaluations"]),
        "best_step": summary["best_step"],
        "metrics": metrics,
        "clips": {split: sum(c["split"] == split for c in clips) for split in SPLITS},
        "load_average": f"{load_before:.1f} / {os.getloadavg()[0]:.1f}",
        "note": args.note,
        "concept_map": concept_map_file,
        "corpus_format": meta["format_version"],
    }
    return save_report(report, "default_run", argv, args.out, markdown)


if __name__ == "__main__":
    main()
