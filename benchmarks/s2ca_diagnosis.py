"""Why does S2CA win or lose on the built-in corpus? One switch at a time, with the concept diagnostics.

    python benchmarks/s2ca_diagnosis.py                              # round 1's variants, 3 seeds, the recipe's length
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


# Every variant is written against the defaults that held when rounds 1-17 ran (before they chose new ones):
# they come first on every command line, so that a variant still means what its rows in the results files measured.
ROUND_DEFAULTS = ["--allocation", "gumbel", "--concept_weighting", "usage", "--num_concepts", "8"]
ROUND_DEFAULTS += ["--retrieval_loss", "separate", "--concept_gradient_scale", "1", "--clip_lr_scale", "0.1"]
# Round 1 ran before `concept_weighting="usage"` became the default: its variants name the old weighting, so that
# they still mean what their rows in `results/diagnosis/s2ca_diagnosis_round1.json` measured.
UNIFORM = ["--concept_weighting", "uniform"]
USAGE = ["--concept_weighting", "usage"]
SOFT = ["--allocation", "soft", *UNIFORM]
LEAD = [*SOFT, "--concept_contrastive_weight", "1"]
K16_LR03 = ["--num_concepts", "16", "--clip_lr_scale", "0.3"]
SOFT_K16_LR03 = [*SOFT, *K16_LR03]
# Round 10's base: the towers get no gradient from the concept branch, which is trained on what s_inst gets wrong.
DETACHED_RESIDUAL = ["--concept_gradient_scale", "0", "--retrieval_loss", "residual"]
ATR_ON = [
    "--align",
    "true",
    "--transform",
    "true",
    "--reconstruct",
    "true",
]  # after NO_ATR, so that the last flag wins
# The variants of options since removed from the model (the relaxed and the annealed Gumbel allocation, temporal
# patch tokens, the routing agreement loss: rounds 1-4, 7, 12-14) are no longer runnable; their results stay in
# results/diagnosis/ and docs/research-log.md.
VARIANTS = {
    # name: train.py overrides on top of "S2CA without ATR". Round 1: the old default, each new mechanism
    # alone, the lead (soft allocation + per-concept contrastive loss) and its combinations, and the no-concept
    # baseline trained in the same run for comparison.
    "seqTransf (no concepts, reference)": ["--use_concepts", "false"],
    "default: hard Gumbel, tau 1, K 8, patches": UNIFORM,
    "soft allocation": SOFT,
    "per-concept contrastive loss (hard Gumbel)": [*UNIFORM, "--concept_contrastive_weight", "1"],
    "usage weights (hard Gumbel)": USAGE,
    "lead: soft + per-concept contrastive": LEAD,
    "lead + usage weights": [*SOFT[:2], "--concept_contrastive_weight", "1", *USAGE],
    # Round 2: round 1's best discrete variant (usage weights) with one more switch each: motion is the attribute
    # every variant misses most, and the logits of hard allocation stay small next to the noise.
    "usage + Gumbel noise x 0.25": [*USAGE, "--gumbel_noise_scale", "0.25"],
    "usage + per-concept contrastive": [*USAGE, "--concept_contrastive_weight", "1"],
    # Round 3: round 1's best S2CA on val (soft allocation, 56.5) with one switch each, and the best discrete one
    # (usage weights) without noise: straight-through on evaluation's own argmax.
    "soft + frames as video tokens": [*SOFT, "--video_tokens", "frames"],
    "soft + K = 4": [*SOFT, "--num_concepts", "4"],
    "soft + K = 16": [*SOFT, "--num_concepts", "16"],
    "soft + combined loss NCE(s_inst + s_con)": [*SOFT, "--retrieval_loss", "combined"],
    "usage, no Gumbel noise (hard argmax, straight-through)": [*USAGE, "--gumbel_noise_scale", "0"],
    # Round 4: training the evaluated sum, on the soft base and on the best discrete variant.
    "soft + separate+combined loss": [*SOFT, "--retrieval_loss", "separate+combined"],
    "usage + separate+combined loss": [*USAGE, "--retrieval_loss", "separate+combined"],
    # Round 6 (another machine: rounds 1-5 re-baselined on seed 0 first): video concepts as tracks over the frames,
    # with where each concept lies in each frame, against motion, the attribute every variant missed most.
    "soft + concept tracks": [*SOFT, "--concept_tracks", "true"],
    "soft + K = 16 + concept tracks": [*SOFT, "--num_concepts", "16", "--concept_tracks", "true"],
    "usage + concept tracks": [*USAGE, "--concept_tracks", "true"],
    # Round 7: concept tracks did not reduce motion errors (round 6); the towers' learning rate (motion needs the
    # frame features to encode where things are, which still-image pretraining never asked for), on the reference
    # and on the best S2CA.
    "seqTransf, towers lr x 0.3": ["--use_concepts", "false", "--clip_lr_scale", "0.3"],
    "soft + K = 16, towers lr x 0.3": [*SOFT, "--num_concepts", "16", "--clip_lr_scale", "0.3"],
    # Round 8: round 7's towers' learning rate lifted seqTransf by 19 val points (0.1 -> 0.3): the towers at the
    # recipe's full rate, and the discrete default at 0.3.
    "seqTransf, towers lr x 1": ["--use_concepts", "false", "--clip_lr_scale", "1.0"],
    "soft + K = 16, towers lr x 1": [*SOFT, "--num_concepts", "16", "--clip_lr_scale", "1.0"],
    "usage, towers lr x 0.3": [*USAGE, "--clip_lr_scale", "0.3"],
    # Round 9: at towers lr x 0.3, S2CA's instance score alone (63) fell far below seqTransf's (72) while its
    # concepts added 4: protect the instance branch by scaling the concept branch's gradient into the towers.
    "soft + K = 16, towers lr x 0.3, concept gradient x 0": [
        *SOFT,
        "--num_concepts",
        "16",
        "--clip_lr_scale",
        "0.3",
        "--concept_gradient_scale",
        "0",
    ],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0.1": [
        *SOFT,
        "--num_concepts",
        "16",
        "--clip_lr_scale",
        "0.3",
        "--concept_gradient_scale",
        "0.1",
    ],
    # Round 10: with the towers detached from the concepts (round 9), S2CA's instance score recovered (69) but its
    # concepts fell to 50.5 and added nothing; attached, they added but cost the instance score more. Two ways for
    # the concept branch to add without competing: capacity of its own (residual MLP adapters on its tokens), and a
    # concept score trained on what the instance score gets wrong (the "residual" loss: NCE(sg(s_inst) + s_con)).
    "soft + K = 16, towers lr x 0.3, residual loss": [*SOFT_K16_LR03, "--retrieval_loss", "residual"],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, 2 adapter layers": [
        *SOFT_K16_LR03,
        "--concept_gradient_scale",
        "0",
        "--concept_adapter_layers",
        "2",
    ],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss": [*SOFT_K16_LR03, *DETACHED_RESIDUAL],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 2 adapter layers": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        "--concept_adapter_layers",
        "2",
    ],
    # Round 13: round 11's best (detached towers + residual loss + 2 adapters: 70.8 val over 3 seeds, seqTransf
    # 70.5) with, one switch each, more capacity for the concept branch (4 adapter layers) and the per-concept
    # contrastive loss of round 1's lead.
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 4 adapter layers": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        "--concept_adapter_layers",
        "4",
    ],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 2 adapter layers, per-concept loss": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        "--concept_adapter_layers",
        "2",
        "--concept_contrastive_weight",
        "1",
    ],
    # Round 15: round 11's choice for the new default (detached towers + residual loss, 70.7 val over 3 seeds) with
    # ATR switched back on, all three terms and each alone: the rows of `accuracy.py` that carry ATR start from it,
    # and each term's weight is to be chosen on val (the small CLIP teacher's zero-shot val R@1 is 31.5, the
    # students' 70: Align distils a weaker teacher).
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR (all three terms)": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        *ATR_ON,
    ],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Align only": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        "--align",
        "true",
    ],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Transform only": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        "--transform",
        "true",
    ],
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Reconstruct only": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        "--reconstruct",
        "true",
    ],
    # Round 16: every ATR term alone at weight 1 cost 9-28 val points (round 15); each at a tenth of that, and Align
    # at a hundredth (the most harmful term: it distils the small CLIP's similarities, 31.5 val R@1, into a 73).
    **{
        f"soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR {term.capitalize()} only x "
        f"{weight}": [
            *SOFT_K16_LR03,
            *DETACHED_RESIDUAL,
            f"--{term}",
            "true",
            f"--{term}_weight",
            weight,
        ]
        for term, weight in (("align", "0.1"), ("transform", "0.1"), ("reconstruct", "0.1"), ("align", "0.01"))
    },
    # Round 17: the new default's concept weighting, chosen on val over 3 seeds: uniform weights (measured in round
    # 11) need phi and psi of size D (1 + 2K); usage weights, D (1 + K).
    "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, usage weights": [
        *SOFT_K16_LR03,
        *DETACHED_RESIDUAL,
        *USAGE,
    ],
    # Not run since round 1 (round 3 covers them on the soft base); kept runnable:
    "lead, per-concept weight 0.5": [*SOFT, "--concept_contrastive_weight", "0.5"],
    "lead, per-concept weight 2": [*SOFT, "--concept_contrastive_weight", "2"],
    # The first diagnosis (on the first corpus, uniform weights), kept runnable:
    "frames as video tokens": [*UNIFORM, "--video_tokens", "frames"],
    "K = 4": [*UNIFORM, "--num_concepts", "4"],
    "K = 16": [*UNIFORM, "--num_concepts", "16"],
    "balance loss weight 0.1": [*UNIFORM, "--balance_loss_weight", "0.1"],
    "combined loss NCE(s_inst + s_con)": [*UNIFORM, "--retrieval_loss", "combined"],
    "Gumbel noise x 0.25": [*UNIFORM, "--gumbel_noise_scale", "0.25"],
    "no Gumbel noise (hard argmax, straight-through)": [*UNIFORM, "--gumbel_noise_scale", "0"],
    "no weight decay": [*UNIFORM, "--weight_decay", "0"],
}
# Each round's variants, by name: adding a variant to VARIANTS changes no round.
ROUNDS = {
    1: [
        "seqTransf (no concepts, reference)",
        "default: hard Gumbel, tau 1, K 8, patches",
        "soft allocation",
        "per-concept contrastive loss (hard Gumbel)",
        "usage weights (hard Gumbel)",
        "lead: soft + per-concept contrastive",
        "lead + usage weights",
    ],
    2: [
        "usage + Gumbel noise x 0.25",
        "usage + per-concept contrastive",
    ],
    3: [
        "soft + frames as video tokens",
        "soft + K = 4",
        "soft + K = 16",
        "soft + combined loss NCE(s_inst + s_con)",
        "usage, no Gumbel noise (hard argmax, straight-through)",
    ],
    4: [
        "soft + separate+combined loss",
        "usage + separate+combined loss",
    ],
    # Round 5: the reference, the default of the time and the three best S2CA variants on val (rounds 1, 3, 4), on
    # 3 seeds (seed 0 reused from those rounds with --reuse).
    5: [
        "seqTransf (no concepts, reference)",
        "usage weights (hard Gumbel)",
        "soft allocation",
        "soft + K = 16",
        "soft + separate+combined loss",
    ],
    6: [
        "soft + concept tracks",
        "soft + K = 16 + concept tracks",
        "usage + concept tracks",
    ],
    7: [
        "seqTransf, towers lr x 0.3",
        "soft + K = 16, towers lr x 0.3",
    ],
    8: [
        "seqTransf, towers lr x 1",
        "soft + K = 16, towers lr x 1",
        "usage, towers lr x 0.3",
    ],
    9: [
        "soft + K = 16, towers lr x 0.3, concept gradient x 0",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0.1",
    ],
    10: [
        "soft + K = 16, towers lr x 0.3, residual loss",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, 2 adapter layers",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 2 adapter layers",
    ],
    # Round 11: seeds 1 and 2 of round 10's two best and of the references (seed 1 of those from round7_seeds, seed 0
    # from rounds 7 and 10, with --reuse).
    11: [
        "seqTransf, towers lr x 0.3",
        "soft + K = 16, towers lr x 0.3",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 2 adapter layers",
    ],
    13: [
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 4 adapter layers",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, 2 adapter layers, per-concept loss",
    ],
    15: [
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR (all three terms)",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Align only",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Transform only",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Reconstruct only",
    ],
    16: [
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Align only x 0.1",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Transform only x 0.1",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Reconstruct only x 0.1",
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, ATR Align only x 0.01",
    ],
    17: [
        "soft + K = 16, towers lr x 0.3, concept gradient x 0, residual loss, usage weights",
    ],
}


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
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default: the variants of --round")
    parser.add_argument("--round", type=int, default=1, choices=sorted(ROUNDS), help="run this round's variants")
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
    args.variants = args.variants or ROUNDS[args.round]
    for name in ("data_dir", "pretrained_clip_dir", "work_dir", "out"):
        setattr(args, name, os.path.abspath(getattr(args, name)))

    common = ["--data_dir", args.data_dir, "--pretrained_clip_dir", args.pretrained_clip_dir]
    common += ["--eval_splits", *runs.SPLITS, "--selection_split", "val"]
    common += ["--max_steps", str(args.max_steps), *ROUND_DEFAULTS, *runs.NO_ATR, *args.train_overrides]
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
