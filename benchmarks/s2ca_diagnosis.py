"""Why does S2CA win or lose on the built-in corpus? One switch at a time, with the concept diagnostics.

    python benchmarks/s2ca_diagnosis.py                              # the concept switches, 3 seeds, recipe length
    python benchmarks/s2ca_diagnosis.py --seeds 0 --max_steps 150    # a quick look (about 10 minutes on 2 cores)

Each variant is "S2CA without ATR" (the concept branch alone, and the cheapest to train) with one config switch
changed, trained by `training/train.py` exactly as `benchmarks/accuracy.py` trains its rows (same pretrained small
CLIP, data, steps and seeds). For every run the script records the retrieval metrics on both splits and the
diagnostics of `model_diagnostics.concept_statistics` on the test split: empty-concept rate, how many concepts a true
pair shares against any other pair, the concept cosine over shared concepts, and text->video R@1 from the instance
score alone, the concept score alone and their sum (the model's score).

Writes `benchmarks/results/diagnosis/<name>.json` and `.md` (`--name`, default `s2ca_diagnosis`; one file per round)
after every variant. What each round found is in docs/research-log.md.
"""

import json
import os
import statistics

import accuracy  # the scripts next to this one: the same training runs, statistics and reports
import model_diagnostics
import runs

from s2ca_hf.utils import ArgumentParser, first_paragraph


ATR_ON = [
    "--align",
    "true",
    "--transform",
    "true",
    "--reconstruct",
    "true",
]  # after NO_ATR, so that the last flag wins
# Variants of options since removed from the model (uniform concept weights, the per-concept and the combined losses,
# adapters, frame tokens, the relaxed and annealed Gumbel allocations, ...) are no longer runnable; their results stay
# in results/diagnosis/ and docs/research-log.md.
VARIANTS = {
    # name: train.py overrides on top of "S2CA without ATR" at the model's defaults
    "seqTransf (no concepts, reference)": ["--use_concepts", "false"],
    "S2CA default": [],
    "soft allocation": ["--allocation", "soft"],
    "hard Gumbel allocation": ["--allocation", "gumbel"],
    "no concept tracks": ["--concept_tracks", "false"],
    "no late-interaction re-ranker": ["--late_interaction_weight", "0"],
    "soft allocation, no tracks, no re-ranker (the previous default)": [
        "--allocation",
        "soft",
        "--concept_tracks",
        "false",
        "--late_interaction_weight",
        "0",
    ],
    "K = 8": ["--num_concepts", "8"],
    "ATR (all three terms)": ATR_ON,
    **{
        f"ATR {term.capitalize()} only x 0.1": [f"--{term}", "true", f"--{term}_weight", "0.1"]
        for term in ("align", "transform", "reconstruct")
    },  # fmt: skip
}
# What runs without --variants: the reference, the default, and the default with each of its concept switches
# undone, one at a time, then all together.
DEFAULT_VARIANTS = [
    "seqTransf (no concepts, reference)",
    "S2CA default",
    "soft allocation",
    "no concept tracks",
    "no late-interaction re-ranker",
    "soft allocation, no tracks, no re-ranker (the previous default)",
]


def mean_std(values: list[float | None]) -> dict | None:
    if any(value is None for value in values):  # a statistic the variant does not have (soft: no noise)
        return None
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def markdown(report: dict) -> str:
    lines = [
        f"# S2CA diagnosis, {report.get('name', 's2ca_diagnosis').replace('s2ca_diagnosis_', '')}: one switch at a "
        "time (S2CA without ATR)",
        "",
        runs.header(report),
        "",
        "Checkpoints selected on val; choices are read on val, test and compositional are reported.",
        "",
        "| variant | T2V R@1 val | T2V R@1 test | T2V R@1 compositional |",
        "|---|---|---|---|",
    ]
    for row in report["rows"]:
        r1 = [row[f"{split}_t2v_R@1"] for split in runs.SPLITS]
        lines.append(f"| {row['variant']} | " + " | ".join(f"{v['mean']:.1f} ± {v['std']:.1f}" for v in r1) + " |")
    by_variant = {row["variant"]: [run["diagnostics"] for run in row["runs"]] for row in report["rows"]}
    lines += ["", "What the top-1 wrong hit differs in (text->video):", "", *model_diagnostics.error_lines(by_variant)]
    lines += ["", model_diagnostics.ERRORS_LEGEND, "", "How each variant uses its concepts:", ""]
    lines += [*model_diagnostics.concept_lines(by_variant), "", model_diagnostics.DIAGNOSTICS_LEGEND, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--data_dir", default="data/synthetic")
    parser.add_argument("--pretrained_clip_dir", default="runs/clip-synthetic")
    parser.add_argument("--work_dir", default="runs/s2ca_diagnosis")
    parser.add_argument("--max_steps", type=int, default=-1, help="> 0: train this many steps (default: the recipe)")
    parser.add_argument("--name", default="s2ca_diagnosis", help="results file name (one per round)")
    parser.add_argument("--out", default=os.path.join(runs.RESULTS, "diagnosis"))
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        help="earlier results files of this script: a (variant, seed) run they hold is taken from them instead of "
        "trained again, if they were written on this machine, with the same small CLIP and training length",
    )
    parser.add_argument("train_overrides", nargs="*", help="more train.py overrides, after --")
    args = parser.parse_args(argv)
    for name in ("data_dir", "pretrained_clip_dir", "work_dir", "out"):
        setattr(args, name, os.path.abspath(getattr(args, name)))

    common = ["--data_dir", args.data_dir, "--pretrained_clip_dir", args.pretrained_clip_dir]
    common += ["--eval_splits", *runs.SPLITS, "--selection_split", "val"]
    common += ["--max_steps", str(args.max_steps), *runs.NO_ATR, *args.train_overrides]
    reusable = earlier_runs(args, common)
    rows = []
    for variant in args.variants:
        seed_runs = []
        for seed in args.seeds:
            if (variant, seed) in reusable:
                seed_runs.append(reusable[variant, seed])
                print(f"{variant} / seed {seed}: from {seed_runs[-1]['reused_from']}", flush=True)
                continue
            slug = "".join(c if c.isalnum() else "_" for c in variant)
            output_dir = os.path.join(args.work_dir, f"{slug}-seed{seed}")
            arguments = [*common, *VARIANTS[variant], "--seed", str(seed), "--output_dir", output_dir]
            metrics, model_dir = runs.selected(runs.run_training(arguments))
            seed_runs.append(
                {
                    "seed": seed,
                    "metrics": metrics,
                    "diagnostics": model_diagnostics.run_diagnostics(model_dir, args.data_dir),
                }
            )
            print(f"{variant} / seed {seed}: {json.dumps(seed_runs[-1])}", flush=True)
        rows.append(
            {
                "variant": variant,
                "overrides": VARIANTS[variant],
                **{
                    f"{split}_t2v_R@1": mean_std([r["metrics"][split]["text_to_video"]["R@1"] for r in seed_runs])
                    for split in runs.SPLITS
                },
                "runs": seed_runs,
            }
        )
        # Written after every variant, so that a long round's finished rows are never lost.
        report = {"name": args.name, "rows": rows, "seeds": args.seeds, "clip_zero_shot": clip_zero_shot(args, common)}
        runs.save_report(report, args.name, argv, args.out, markdown, script="benchmarks/s2ca_diagnosis.py")
    return report


def _max_steps(command: str) -> str:
    tokens = command.split()
    return tokens[tokens.index("--max_steps") + 1] if "--max_steps" in tokens else "-1"


def earlier_runs(args, common: list[str]) -> dict:
    """(variant, seed) -> run, from the `--reuse` files. A training run is deterministic on one machine, so a run
    recorded there with the same small CLIP (same zero-shot R@1), data and length is the run this one would repeat;
    a file from another machine or setting is refused rather than mixed in."""
    reusable = {}
    for path in args.reuse:
        with open(path) as f:
            report = json.load(f)
        problems = []
        if report.get("machine") != runs.machine():
            problems.append(f"machine {report.get('machine')!r}, not {runs.machine()!r}")
        if report.get("clip_zero_shot") != clip_zero_shot(args, common):
            problems.append("another small CLIP or corpus (its zero-shot R@1 differs)")
        if _max_steps(report.get("command", "")) != str(args.max_steps):
            problems.append(f"--max_steps {_max_steps(report.get('command', ''))}, not {args.max_steps}")
        if problems:
            raise SystemExit(f"--reuse {path}: written with {'; '.join(problems)}: its runs are not this run's.")
        for row in report["rows"]:
            for run in row["runs"]:
                reusable.setdefault((row["variant"], run["seed"]), {**run, "reused_from": os.path.basename(path)})
    return reusable


_ZERO_SHOT: dict = {}


def clip_zero_shot(args, common: list[str]) -> dict:
    if not _ZERO_SHOT:
        _ZERO_SHOT.update(accuracy.zero_shot_report(_Args(args), common)[0])
    return dict(_ZERO_SHOT)


class _Args:
    def __init__(self, args):
        self.clip, self.pretrained_clip_dir, self.work_dir, self.data_dir = (
            None,
            args.pretrained_clip_dir,
            args.work_dir,
            args.data_dir,
        )


if __name__ == "__main__":
    main()
