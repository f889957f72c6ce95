"""Evaluate a saved S2CA model on a corpus split and write the results (JSON + a Markdown table).

    python training/evaluate_model.py --model runs/synthetic/final --corpus synthetic --data_dir data/synthetic \
        --split test
    python training/evaluate_model.py --model org/s2ca-msrvtt --revision v0.1.0 --trust_remote_code \
        --corpus msrvtt --data_dir data/msrvtt --video_dir data/msrvtt/videos --split test --dsl

Every text and every unique video is encoded once (batched, with progress bars; videos from the frame cache when it
exists), scored with phi @ psi.T block by block, and evaluated with `s2ca_hf.retrieval.retrieval_metrics`. The
results file names the model (path, revision, sha256 of its weights), the corpus, split and protocol, the counts,
the metrics, any post-processing (always separate), the date and the versions (`results.py` writes it, and
`training/push_to_hub.py` reads it with that module's validator).
"""

import argparse
import json
import os
import sys

import torch
from results import WEIGHTS_NAME, results_markdown, results_record, write_results
from transformers import AutoModel, AutoProcessor

from s2ca_hf.data import build_frame_cache, default_cache_dir, load_corpus
from s2ca_hf.data.cache import FrameCache, cache_key
from s2ca_hf.data.corpora import corpus_videos
from s2ca_hf.retrieval.evaluation import evaluate_corpus
from s2ca_hf.utils import ArgumentParser, file_sha256, first_paragraph, quiet_weight_loading


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--model", required=True, help="a folder saved with save_pretrained, or a Hub id")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) to load")
    parser.add_argument("--trust_remote_code", action="store_true", help="load a Hub model's custom code")
    parser.add_argument("--corpus", required=True, choices=("msrvtt", "msvd", "didemo", "activitynet", "synthetic"))
    parser.add_argument("--data_dir", required=True, help="the corpus's annotation folder")
    parser.add_argument("--video_dir", default=None, help="where its videos are (default: under --data_dir)")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--protocol", nargs="*", default=[], metavar="KEY=VALUE", help="corpus options, e.g. train_csv=7k"
    )
    parser.add_argument("--allow_missing", action="store_true", help="evaluate although test videos are missing")
    parser.add_argument("--on_error", choices=("raise", "skip"), default="raise", help="undecodable videos")
    parser.add_argument(
        "--frame_cache",
        default="auto",
        help="'auto': read the frame cache if one exists for this split and frame policy, else decode the files; "
        "'build': build it first; 'none': always decode; or a cache folder",
    )
    parser.add_argument("--cache_dir", default=None, help=f"where frame caches live (default {default_cache_dir()})")
    parser.add_argument("--batch_size", type=int, default=32, help="videos per batch")
    parser.add_argument("--text_batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--ties", choices=("average", "clip4clip"), default="average")
    parser.add_argument("--video_to_text", choices=("clip4clip", "ce"), default="clip4clip")
    parser.add_argument("--dsl", action="store_true", help="also report DSL (dual softmax), separately")
    parser.add_argument(
        "--qb_norm_split", default=None, help="also report QB-Norm, with this split's captions as the query bank"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--output_dir", default="results", help="where the JSON and Markdown files go")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--no_progress", action="store_true", dest="quiet", help=argparse.SUPPRESS)  # the old name
    return parser.parse_args(argv)


def parse_protocol(items: list[str]) -> dict:
    protocol = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--protocol takes KEY=VALUE pairs, got {item!r}")
        key, value = item.split("=", 1)
        lowered = value.lower()
        if lowered in ("true", "false"):
            protocol[key] = lowered == "true"
        else:
            try:
                protocol[key] = int(value)
            except ValueError:
                protocol[key] = value
    return protocol


def weights_file(model_name: str, revision: str | None) -> str:
    """The local path of the model's weights (downloaded into the Hub cache for a Hub id)."""
    if os.path.isdir(model_name):
        path = os.path.join(model_name, WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{model_name} has no {WEIGHTS_NAME}; save the model with save_pretrained.")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(model_name, WEIGHTS_NAME, revision=revision)


def open_frame_cache(choice: str, dataset, processor, cache_dir: str | None, on_error: str) -> FrameCache | None:
    if choice == "none":
        return None
    if choice == "build":
        return build_frame_cache(dataset, processor, cache_dir=cache_dir, on_error=on_error)
    if choice == "auto":
        key, _ = cache_key(corpus_videos(dataset), processor, *_corpus_and_split(dataset))
        path = os.path.join(cache_dir or default_cache_dir(), key)
        return FrameCache(path) if os.path.isdir(path) else None
    return FrameCache(choice)


def _corpus_and_split(dataset) -> tuple[str, str]:
    info = json.loads(dataset.info.description or "{}")
    return info.get("corpus") or "corpus", info.get("split") or "split"


def main(argv: list[str] | None = None) -> dict:
    quiet_weight_loading()
    args = parse_args(argv)
    protocol = parse_protocol(args.protocol)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    # 1. The model and its processor, and the hash of the weights the numbers belong to.
    load = {"revision": args.revision, "trust_remote_code": args.trust_remote_code}
    model = AutoModel.from_pretrained(args.model, dtype=getattr(torch, args.dtype), **load).to(device).eval()
    processor = AutoProcessor.from_pretrained(args.model, **load)
    weights_sha256 = file_sha256(weights_file(args.model, args.revision))

    # 2. The corpus split and, where there is one, its frame cache.
    dataset = load_corpus(
        args.corpus, args.data_dir, args.split, video_dir=args.video_dir, allow_missing=args.allow_missing, **protocol
    )
    frame_cache = open_frame_cache(args.frame_cache, dataset, processor, args.cache_dir, args.on_error)
    bank_texts = None
    if args.qb_norm_split:
        bank = load_corpus(args.corpus, args.data_dir, args.qb_norm_split, video_dir=args.video_dir, **protocol)
        bank_texts = list(bank["text"])

    # 3. Encode once, score, evaluate.
    post_processing = (["dsl"] if args.dsl else []) + (["qb_norm"] if args.qb_norm_split else [])
    evaluation = evaluate_corpus(
        model,
        processor,
        dataset,
        frame_cache=frame_cache,
        batch_size=args.batch_size,
        text_batch_size=args.text_batch_size,
        num_workers=args.num_workers,
        on_error=args.on_error,
        progress=not args.quiet,
        post_processing=post_processing,
        query_bank_texts=bank_texts,
        ties=args.ties,
        video_to_text=args.video_to_text,
    )

    # 4. The results file and its table.
    results = results_record(
        model={"name_or_path": args.model, "revision": args.revision, "sha256": weights_sha256},
        corpus=args.corpus,
        split=args.split,
        protocol={
            "corpus_options": protocol,
            "frame_policy": processor.video_processor.frame_policy.to_dict(),
            "max_text_length": processor.max_text_length,
            "frame_cache": None if frame_cache is None else frame_cache.path,
        },
        evaluation=evaluation,
        device=device,
        command=" ".join(["python training/evaluate_model.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    stem = write_results(results, args.output_dir)
    print(results_markdown(results))
    print(f"Results written to {stem}.json and {stem}.md")
    return results


if __name__ == "__main__":
    main()
