"""Does S2CA beat its baselines? Retrieval quality on the built-in concept-video corpus (BENCHMARKS.md §1), on a CPU.

    python benchmarks/accuracy.py                      # the full protocol: 6 rows x 3 seeds, about an hour on 2 cores
    python benchmarks/accuracy.py --seeds 0 --max_steps 20 --synthetic_num_videos 200   # a quick look

1. A small CLIP is pretrained on single frames of the corpus with static captions (`training/pretrain_clip.py`, made
   once and cached): the stand-in for OpenAI CLIP, and the ATR teacher.
2. From it, every row is fine-tuned with the same steps, data and seeds by `training/train.py` (the synthetic
   recipe): meanP, seqTransf, S2CA without ATR, S2CA with soft allocation, S2CA (full); "CLIP zero-shot (no
   fine-tuning)" evaluates the pretrained CLIP as meanP without training.
3. Text->video and video->text metrics on the held-out test split and on the compositional split (colour, shape,
   motion combinations never seen in training); mean and std over the seeds.

Writes `benchmarks/results/accuracy.json` and `accuracy.md`, with the allocation statistics of the S2CA rows
(tokens per concept, empty-concept rate, prototype similarity) that explain a row that loses.
"""

import argparse
import datetime
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
SPLITS = ("test", "compositional")
KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")
NO_ATR = ["--align", "false", "--transform", "false", "--reconstruct", "false"]
METHODS = {
    # name (exactly as the issue lists them): train.py overrides on top of the synthetic recipe, or None (no training)
    "CLIP zero-shot (no fine-tuning)": None,
    "meanP": ["--use_concepts", "false", "--temporal_module", "mean", *NO_ATR],
    "seqTransf": ["--use_concepts", "false", "--temporal_module", "transformer", *NO_ATR],
    "S2CA without ATR": NO_ATR,
    "S2CA with soft allocation": ["--allocation", "soft"],
    "S2CA (full)": [],
}


def load_training_script(name: str):
    folder = os.path.join(REPO, "training")
    if folder not in sys.path:
        sys.path.append(folder)  # appended: training/evaluate.py must not shadow the `evaluate` library
    spec = importlib.util.spec_from_file_location(f"training_{name}", os.path.join(folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_training(arguments: list[str]) -> dict:
    """One `training/train.py` run in its own process, as a user runs it (a long-lived process that forks data
    workers after heavy torch work can hang), returning its `eval_results.json` summary."""
    command = [sys.executable, os.path.join(REPO, "training", "train.py"), *arguments]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    output_dir = arguments[arguments.index("--output_dir") + 1]
    with open(os.path.join(output_dir, "eval_results.json")) as f:
        return json.load(f)


def zero_shot(clip_dir: str, data_dir: str, max_frames: int, max_words: int) -> dict:
    """The pretrained CLIP as CLIP4Clip-meanP without any fine-tuning, on both splits."""
    from s2ca_hf import S2CAModel, S2CAProcessor
    from s2ca_hf.data import load_corpus
    from s2ca_hf.retrieval.evaluation import evaluate_corpus

    model = S2CAModel.from_clip(clip_dir, use_concepts=False, temporal_module="mean").eval()
    size = model.config.vision_config.image_size
    processor = S2CAProcessor.from_clip(
        clip_dir,
        max_text_length=max_words,
        max_frames=max_frames,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    )
    return {
        split: evaluate_corpus(model, processor, load_corpus("synthetic", data_dir, split), progress=False)["metrics"]
        for split in SPLITS
    }


@torch.inference_mode()
def allocation_statistics(model_dir: str, data_dir: str) -> dict:
    """How the trained model uses its concepts on the test split (one caption per video, text i describes video i).

    * tokens per concept and the empty-concept rate, per modality; the mean |cosine| between distinct prototypes
      (collapse shows as 1);
    * `shared_concepts_matched` / `_unmatched`: how many concepts are non-empty on both the text and the video side,
      for the true pairs and for all other pairs: s_con only sees concepts both sides use;
    * `concept_cosine_matched` / `_unmatched`: the mean cosine of a concept's text and video features over those
      shared concepts (does a shared concept carry content, or only its prototype?);
    * `t2v_R@1_instance_only` / `_concept_only` / `_combined`: text-to-video R@1 from s_inst alone, s_con alone and
      the model's score, which says whether the concept branch adds to or takes from the instance match;
    * `{side}_top_concept_share`: the share of an item's tokens in its fullest concept (1: everything in one);
    * `{side}_logit_spread`: the std over concepts of the allocation logits Z, and `{side}_train_eval_agreement`: how
      often training's noisy allocation argmax(Z + g) picks evaluation's argmax(Z) (chance: 1/K; Gumbel only). Small
      logits next to the noise mean the concepts are trained on near-random groupings of tokens.
    """
    from torch.utils.data import DataLoader

    from s2ca_hf import S2CAModel, S2CAProcessor
    from s2ca_hf.data import VideoTextCollator, load_corpus
    from s2ca_hf.modeling_s2ca import concept_similarity
    from s2ca_hf.retrieval.metrics import retrieval_metrics

    model = S2CAModel.from_pretrained(model_dir).eval()
    if model.concepts is None:
        return {}
    processor = S2CAProcessor.from_pretrained(model_dir)
    dataset = load_corpus("synthetic", data_dir, "test")
    outputs = {"text": [], "video": []}
    generator = torch.Generator().manual_seed(0)
    for batch in DataLoader(dataset, batch_size=32, collate_fn=VideoTextCollator(processor)):
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        video = model.encode_video(batch["pixel_values_videos"], batch["frame_mask"])
        for side, out in (("text", text), ("video", video)):
            logits, valid = out.concepts.allocation_logits, out.concepts.token_mask.bool()
            noise = -torch.empty(logits.shape).exponential_(generator=generator).log()
            noisy = logits + model.config.gumbel_noise_scale * noise
            agree = (noisy.argmax(1) == logits.argmax(1))[valid].float()
            outputs[side].append(
                (
                    out.instance_embeds,
                    out.concepts.concept_features,
                    out.concepts.concept_weights,
                    out.concepts.empty_concepts,
                    out.concepts.token_counts,
                    agree,
                    logits.std(1)[valid],
                )
            )
    text, video = ([torch.cat(parts) for parts in zip(*outputs[side])] for side in ("text", "video"))
    prototypes = torch.nn.functional.normalize(model.concepts.prototypes, dim=-1)
    cosines = prototypes @ prototypes.t()
    off_diagonal = ~torch.eye(len(cosines), dtype=torch.bool)
    stats = {"prototype_abs_cosine": float(cosines[off_diagonal].abs().mean())}
    for side, (_, _, _, empty, counts, agree, spread) in (("text", text), ("video", video)):
        stats[f"{side}_tokens_per_concept"] = [round(float(v), 3) for v in counts.mean(0)]
        stats[f"{side}_empty_concept_rate"] = float(empty.mean())
        stats[f"{side}_top_concept_share"] = float((counts.max(1).values / counts.sum(1).clamp(min=1e-6)).mean())
        stats[f"{side}_logit_spread"] = float(spread.mean())
        gumbel = model.config.allocation == "gumbel"
        stats[f"{side}_train_eval_agreement"] = float(agree.mean()) if gumbel else None

    present_text, present_video = 1 - text[3], 1 - video[3]
    shared = present_text @ present_video.t()  # (T, V): concepts non-empty on both sides
    per_concept_cosine = torch.einsum("tkd,vkd->tvk", text[1], video[1])  # zero wherever either side is empty
    matched = torch.eye(len(shared), dtype=torch.bool)
    for name, pairs in (("matched", matched), ("unmatched", ~matched)):
        stats[f"shared_concepts_{name}"] = float(shared[pairs].mean())
        cosine_sum = per_concept_cosine.sum(-1)[pairs].sum()
        stats[f"concept_cosine_{name}"] = float(cosine_sum / shared[pairs].sum().clamp(min=1))
    instance = text[0] @ video[0].t()
    concept = concept_similarity(text[1], text[2], video[1], video[2])
    combined = instance + model.config.concept_score_weight * concept
    for name, scores in (("instance_only", instance), ("concept_only", concept), ("combined", combined)):
        stats[f"t2v_R@1_{name}"] = retrieval_metrics(scores)["text_to_video"]["R@1"]
    return stats


def summarise(name: str, per_seed: list[dict], seeds: list[int]) -> list[dict]:
    rows = []
    for split in SPLITS:
        row = {"method": name, "split": split, "seeds": seeds}
        for direction in ("text_to_video", "video_to_text"):
            values = {key: [run[split][direction][key] for run in per_seed] for key in KEYS}
            row[direction] = {key: statistics.fmean(v) for key, v in values.items()}
            row[f"{direction}_std"] = {key: statistics.pstdev(v) if len(v) > 1 else 0.0 for key, v in values.items()}
        rows.append(row)
    return rows


DIAGNOSTICS = (  # the allocation statistics that the tables show, as (text, video) or (true pair, other pairs)
    ("empty t / v", "text_empty_concept_rate", "video_empty_concept_rate"),
    ("top t / v", "text_top_concept_share", "video_top_concept_share"),
    ("Z std t / v", "text_logit_spread", "video_logit_spread"),
    ("train = eval t / v", "text_train_eval_agreement", "video_train_eval_agreement"),
    ("shared pair / other", "shared_concepts_matched", "shared_concepts_unmatched"),
    ("cos pair / other", "concept_cosine_matched", "concept_cosine_unmatched"),
)
R1_DIAGNOSTICS = ("t2v_R@1_instance_only", "t2v_R@1_concept_only", "t2v_R@1_combined")
DIAGNOSTICS_LEGEND = (
    "t / v = text / video, means over seeds, test split. empty = share of the K concepts that get no token; top = "
    "share of an item's tokens in its fullest concept; Z std = spread of the allocation logits over the concepts; "
    "train = eval = how often training's noisy allocation argmax(Z + g) picks evaluation's argmax(Z) (chance 1/K; "
    "– for soft allocation, which has no noise); shared = concepts non-empty on both sides (true pair / any other "
    "pair); cos = mean concept cosine over shared concepts (true pair / other pairs); R@1 inst / con / both = "
    "text->video R@1 from s_inst alone, s_con alone, and s_inst + s_con (the model's score)."
)


def cell(value) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"  # None / NaN: a statistic the row lacks


def diagnostic_header() -> str:
    return " | ".join(name for name, _, _ in DIAGNOSTICS) + " | R@1 inst / con / both"


def diagnostic_cells(stats: dict) -> str:
    """The table cells of one row's (mean) allocation statistics."""
    pairs = [f"{cell(stats.get(a))} / {cell(stats.get(b))}" for _, a, b in DIAGNOSTICS]
    pairs.append(" / ".join("–" if stats.get(k) is None else f"{stats[k]:.1f}" for k in R1_DIAGNOSTICS))
    return " | ".join(pairs)


def mean_statistics(runs: list[dict]) -> dict:
    """Means over seeds of each scalar statistic (None where any run lacks it)."""
    keys = [k for k, v in runs[0].items() if not isinstance(v, list)]
    return {
        k: None if any(run.get(k) is None for run in runs) else statistics.fmean(run[k] for run in runs) for k in keys
    }


def header(report: dict) -> str:
    versions = " · ".join(f"{name} {version}" for name, version in report["versions"].items())
    return f"{report['date']} · {report['machine']} · {versions} · seeds {report['seeds']} · `{report['command']}`"


def markdown(report: dict) -> str:
    lines = [
        "# Retrieval quality on the built-in concept-video corpus",
        "",
        header(report),
        "",
        "| method | split | T2V R@1 | T2V R@5 | T2V MnR | V2T R@1 | V2T R@5 | V2T MnR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        cells = []
        for direction in ("text_to_video", "video_to_text"):
            for key in ("R@1", "R@5", "MnR"):
                cells.append(f"{row[direction][key]:.1f} ± {row[direction + '_std'][key]:.1f}")
        lines.append(f"| {row['method']} | {row['split']} | " + " | ".join(cells) + " |")
    by_method: dict[str, list[dict]] = {}
    for key, stats in report["allocation"].items():
        by_method.setdefault(key.rsplit(" / seed ", 1)[0], []).append(stats)
    if by_method:
        lines += [
            "",
            "How the S2CA rows use their concepts (`allocation` in the JSON file: every seed, tokens per concept):",
            "",
            "| method | " + diagnostic_header() + " |",
            "|---|" + "---|" * (len(DIAGNOSTICS) + 1),
        ]
        for method, runs in by_method.items():
            lines.append(f"| {method} | {diagnostic_cells(mean_statistics(runs))} |")
        lines += ["", DIAGNOSTICS_LEGEND]
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--data_dir", default="data/synthetic")
    parser.add_argument("--pretrained_clip_dir", default="runs/clip-synthetic")
    parser.add_argument("--clip", default=None, help="use this CLIP checkpoint instead of the pretrained small one")
    parser.add_argument("--work_dir", default="runs/accuracy")
    parser.add_argument("--synthetic_num_videos", type=int, default=1000)
    parser.add_argument("--max_steps", type=int, default=-1, help="> 0: train this many steps (default: the recipe)")
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("train_overrides", nargs="*", help="more train.py overrides, after --")
    args = parser.parse_args(argv)

    # train.py runs from the repository root: every path is made absolute so both processes mean the same files.
    for name in ("data_dir", "pretrained_clip_dir", "work_dir", "out"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    args.clip = os.path.abspath(args.clip) if args.clip and os.path.isdir(args.clip) else args.clip
    train = load_training_script("train")
    common = ["--data_dir", args.data_dir, "--synthetic_num_videos", str(args.synthetic_num_videos)]
    common += ["--pretrained_clip_dir", args.pretrained_clip_dir, "--eval_splits", *SPLITS]
    common += ["--max_steps", str(args.max_steps), *(["--clip", args.clip] if args.clip else [])]
    common += args.train_overrides
    rows, allocation = [], {}
    for name in args.methods:
        overrides = METHODS[name]
        if overrides is None:  # deterministic: one evaluation stands for every seed
            clip = args.clip or args.pretrained_clip_dir
            if not os.path.isdir(clip):  # a first (one-step) training run pretrains the small CLIP
                run_training([*common, "--max_steps", "1", "--output_dir", os.path.join(args.work_dir, "pretrain")])
            _, data_args, _, _ = train.parse_arguments(common)
            metrics = zero_shot(clip, args.data_dir, data_args.max_frames, data_args.max_words)
            rows += summarise(name, [metrics], args.seeds[:1])
            continue
        per_seed = []
        for seed in args.seeds:
            slug = name.replace(" ", "_").replace("(", "").replace(")", "")
            output_dir = os.path.join(args.work_dir, f"{slug}-seed{seed}")
            summary = run_training([*common, *overrides, "--seed", str(seed), "--output_dir", output_dir])
            per_seed.append(summary["final_metrics"])
            if name.startswith("S2CA"):
                allocation[f"{name} / seed {seed}"] = allocation_statistics(summary["final_model"], args.data_dir)
        rows += summarise(name, per_seed, args.seeds)

    report = {"rows": rows, "allocation": allocation, "seeds": args.seeds}
    return save_report(report, "accuracy", argv, args.out, markdown)


def save_report(report: dict, name: str, argv: list[str] | None, out: str, render) -> dict:
    """Adds the date, machine, exact command and versions, writes `<out>/<name>.json` and `.md`, prints the table."""
    report.update(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        command=" ".join([f"python benchmarks/{name}.py", *(argv if argv is not None else sys.argv[1:])]),
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(render(report))
    print(render(report))
    return report


if __name__ == "__main__":
    main()
