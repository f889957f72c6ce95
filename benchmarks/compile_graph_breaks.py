"""torch.compile graph breaks of S2CA on the CPU: writes benchmarks/results/compile_graph_breaks.json and .md.

    python benchmarks/compile_graph_breaks.py                    # measure the s2ca_hf on the path, as "after"
    PYTHONPATH=<checkout of an older commit> python benchmarks/compile_graph_breaks.py --record before

What is counted: `torch._dynamo.explain` (which traces without compiling) of the two functions a user compiles, on
the tiny model of `s2ca_hf.tiny.tiny_config()` (the default config: expert choice, concept tracks, the re-ranker)
with 3 videos of 4 frame slots, two of them padded:

* `training_forward`: `model(**inputs, return_loss=True).loss` in train mode (every loss term);
* `get_video_features`: `model.get_video_features(pixel_values_videos, frame_mask).pooler_output` in eval mode.

`graph_break_count` is dynamo's own (graphs - 1); each break's reason and the line of s2ca_hf it came from are kept.
The same counts for other configs are listed under `variants` (not part of the before/after comparison unless both
runs measured them). `--record before|after` only chooses the key the run is stored under; the other key in the
results file is kept, and each entry says which commit of s2ca_hf it measured and whether that tree was modified.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

import s2ca_hf
from s2ca_hf import S2CAModel
from s2ca_hf.tiny import IMAGE_SIZE, NUM_FRAMES, tiny_config
from s2ca_hf.utils import ArgumentParser, first_paragraph


RESULTS = Path(__file__).resolve().parent / "results"
FUNCTIONS = ("training_forward", "get_video_features")
VARIANTS = {
    "allocation=soft": {"allocation": "soft"},
    "allocation=gumbel": {"allocation": "gumbel"},
    "concept_tracks=False, no re-ranker": {"concept_tracks": False, "late_interaction_weight": 0.0},
    "use_concepts=False (CLIP4Clip seqTransf)": {"use_concepts": False},
}


def example_inputs(batch: int = 3, seq_len: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Texts of different lengths and videos with 4, 2 and 1 real frames of 4 slots (padding is what breaks)."""
    generator = torch.Generator().manual_seed(seed)
    config = tiny_config()
    vocab = config.text_config.vocab_size
    input_ids = torch.randint(0, vocab - 2, (batch, seq_len), generator=generator)
    input_ids[:, 0] = vocab - 2
    attention_mask = torch.ones(batch, seq_len, dtype=torch.long)
    for i in range(batch):
        end = seq_len - 1 - 2 * i
        input_ids[i, end:] = vocab - 1
        attention_mask[i, end + 1 :] = 0
    frame_mask = torch.zeros(batch, NUM_FRAMES, dtype=torch.long)
    for i, real in enumerate((4, 2, 1)[:batch]):
        frame_mask[i, :real] = 1
    pixel_values_videos = torch.randn(batch, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values_videos": pixel_values_videos,
        "frame_mask": frame_mask,
    }


def functions(model: S2CAModel) -> dict:
    """The two functions whose graphs are counted, each with the mode the model is put in before it runs."""

    def training_forward(input_ids, attention_mask, pixel_values_videos, frame_mask):
        return model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values_videos=pixel_values_videos,
            frame_mask=frame_mask,
            return_loss=True,
        ).loss

    def get_video_features(pixel_values_videos, frame_mask):
        return model.get_video_features(pixel_values_videos, frame_mask).pooler_output

    return {"training_forward": (True, training_forward), "get_video_features": (False, get_video_features)}


def _where(frame) -> str:
    filename = Path(frame.filename)
    package = Path(s2ca_hf.__file__).resolve().parent
    try:
        filename = Path("s2ca_hf") / filename.resolve().relative_to(package)
    except ValueError:
        pass
    return f"{filename}:{frame.lineno} ({frame.name})"


def count_graph_breaks(**config_overrides) -> dict[str, dict]:
    """`{function: {"graph_count", "graph_break_count", "break_reasons"}}` for the tiny model with the overrides."""
    inputs = example_inputs()
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(**config_overrides))
    counts = {}
    for name, (train, function) in functions(model).items():
        model.train(train)
        video_only = {key: inputs[key] for key in ("pixel_values_videos", "frame_mask")}
        arguments = inputs if name == "training_forward" else video_only
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(function)(**arguments)
        counts[name] = {
            "graph_count": explanation.graph_count,
            "graph_break_count": explanation.graph_break_count,
            "break_reasons": [
                {
                    "reason": reason.reason.strip().splitlines()[0],
                    "at": _where(reason.user_stack[-1]) if reason.user_stack else None,
                }
                for reason in explanation.break_reasons
            ],
        }
    torch._dynamo.reset()
    return counts


def source_revision() -> dict:
    """The git commit of the s2ca_hf that was imported, and whether its tree had uncommitted changes."""
    folder = Path(s2ca_hf.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": bool(status)}


def markdown(report: dict) -> str:
    lines = ["# torch.compile graph breaks (`benchmarks/compile_graph_breaks.py`)", ""]
    lines.append(
        "`torch._dynamo.explain` on the CPU, tiny model from `s2ca_hf.tiny.tiny_config()` (the default config of "
        'the s2ca_hf measured: Gumbel allocation at the commit of "before", expert choice since), 3 videos of 4 '
        "frame slots with 4, 2 and 1 real frames. `training_forward` is `model(**inputs, return_loss=True)` in "
        "train mode; `get_video_features` runs in eval mode. A graph break count is dynamo's (graphs - 1), so it "
        "also counts the empty graphs dynamo opens when it resumes after a "
        "break; each reason is listed once per break it caused."
    )
    lines.append("")
    for key in ("before", "after"):
        run = report.get(key)
        if run:
            state = "with uncommitted changes" if run["source"]["modified"] else "clean"
            lines.append(
                f"* {key}: s2ca_hf at commit `{(run['source']['commit'] or 'unknown')[:12]}` ({state}), measured "
                f"{run['date']} with torch {run['torch']}, transformers {run['transformers']}: `{run['command']}`"
                + (f" ({run['note']})" if run.get("note") else "")
            )
    lines += ["", "| function | breaks before | breaks after | graphs before | graphs after |"]
    lines.append("|---|---|---|---|---|")
    before, after = report.get("before") or {}, report.get("after") or {}
    for name in FUNCTIONS:
        b, a = before.get("functions", {}).get(name), after.get("functions", {}).get(name)
        lines.append(
            f"| `{name}` | {b['graph_break_count'] if b else '-'} | {a['graph_break_count'] if a else '-'} | "
            f"{b['graph_count'] if b else '-'} | {a['graph_count'] if a else '-'} |"
        )
    for key in ("before", "after"):
        run = report.get(key)
        if not run:
            continue
        reasons = [(name, r) for name in FUNCTIONS for r in run["functions"][name]["break_reasons"]]
        lines += ["", f"## Break reasons, {key}", ""]
        if not reasons:
            lines.append("None: both functions trace into one graph each.")
        for name, reason in reasons:
            lines.append(f"* `{name}`: {reason['reason']} at `{reason['at']}`")
    measured = [(report.get(key) or {}).get("variants") or {} for key in ("before", "after")]
    names = [name for name in VARIANTS if any(name in variants for variants in measured)]
    if names:
        lines += ["", "## Other configs (not the tiny default)", ""]
        lines.append("| config | training_forward before | after | get_video_features before | after |")
        lines.append("|---|---|---|---|---|")
        for name in names:
            cells = []
            for function in FUNCTIONS:
                for key in ("before", "after"):
                    counts = ((report.get(key) or {}).get("variants") or {}).get(name)
                    cells.append(str(counts[function]["graph_break_count"]) if counts else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def _without_note(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for argument in argv:
        if skip or argument.startswith("--note="):
            skip = False
            continue
        if argument == "--note":
            skip = True
            continue
        kept.append(argument)
    return kept


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--record", choices=("before", "after"), default="after", help="the key to store the run as")
    parser.add_argument("--output_dir", default=str(RESULTS))
    parser.add_argument("--no_variants", action="store_true", help="count the default config only")
    parser.add_argument("--note", default=None, help="how this run was made (stored with it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    started = time.perf_counter()
    run = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/compile_graph_breaks.py"
        + "".join(f" {a}" for a in _without_note(sys.argv[1:] if argv is None else argv)),
        "source": source_revision(),
        "note": args.note,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "functions": count_graph_breaks(),
    }
    if not args.no_variants:
        run["variants"] = {name: count_graph_breaks(**overrides) for name, overrides in VARIANTS.items()}
    run["seconds"] = round(time.perf_counter() - started, 1)
    os.makedirs(args.output_dir, exist_ok=True)
    path = Path(args.output_dir) / "compile_graph_breaks.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    report[args.record] = run
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
    for name in FUNCTIONS:
        print(f"{args.record} {name}: {run['functions'][name]['graph_break_count']} graph break(s)")
    return report


if __name__ == "__main__":
    main()
