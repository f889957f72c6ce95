"""The `s2ca-index` and `s2ca-search` console scripts (see `s2ca_hf.retrieval.index` for the index format).

s2ca-index --model MODEL --videos DIR --out INDEX            # every video file under DIR, recursively
s2ca-index --model MODEL --videos corpus:msrvtt:DATA_DIR:test --out INDEX
s2ca-index --model MODEL --videos DIR --out INDEX --window 10 --stride 5   # moments: 10 s windows every 5 s
s2ca-index --model MODEL --videos DIR --out INDEX --first-stage  # and a compressed first stage (large indexes)
accelerate launch --multi_gpu --num_processes 2 -m s2ca_hf.retrieval.cli index ...   # or: $(which s2ca-index)

s2ca-search --index INDEX "a man plays guitar on stage" [-k 10] [--json] [--exact] [--candidates 256]
s2ca-search --index INDEX --video clip.mp4                     # videos like this one (psi . psi)
s2ca-search --index INDEX --video clip.mp4 --texts "a dog" "a cat"   # the texts ranked for a video
s2ca-search --index INDEX --video-id some/clip.mp4 --texts-file captions.txt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch

from ..utils import ArgumentParser, quiet_weight_loading
from .build import build_index, load_model_and_processor
from .index import VideoIndex
from .sources import check_windows, resolve_videos
from .two_stage import (
    DEFAULT_CANDIDATES,
    PROJECTIONS,
    build_first_stage,
    describe,
    first_stage_settings,
    rebuild_options,
)


def _index_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="s2ca-index",
        description="Encode every video of a folder (recursively) or of a corpus split with an S2CA model's video "
        "vectors (psi) into an index folder. Run it again to resume after an interruption or to add new videos: "
        "only what is missing is encoded. Under `accelerate launch`, every process encodes its share.",
    )
    parser.add_argument("--model", required=True, help="S2CA model and processor: a Hub id or a saved folder")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument(
        "--videos",
        required=True,
        help="a folder of video files (searched recursively), or corpus:NAME:DATA_DIR:SPLIT for a corpus of "
        "s2ca_hf.data.load_corpus (e.g. corpus:msrvtt:data/msrvtt:test)",
    )
    parser.add_argument("--video-dir", help="for a corpus: where its video files are (default: DATA_DIR)")
    parser.add_argument("--out", required=True, help="the index folder (created; completed if it exists)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per forward pass (default 16)")
    parser.add_argument("--shard-size", type=int, default=1024, help="videos per shard file (default 1024)")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="decoding processes per indexing process (default: the CPU cores per process minus one, at most 8)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="the model's dtype while encoding (default float32; vectors are stored as float16 either way)",
    )
    parser.add_argument("--cpu", action="store_true", help="encode on the CPU even when a GPU is available")
    parser.add_argument("--overwrite", action="store_true", help="delete the index in --out first and rebuild it")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=0.0,
        help="seconds to wait when another s2ca-index run is writing --out (default 0: stop at once, naming it)",
    )
    parser.add_argument(
        "--window",
        type=float,
        help="index moments: cut every video into windows of this many whole seconds, each an item of its own (id "
        "VIDEO@START-END), its frames sampled inside the window by the model's frame policy; a video shorter than "
        "one window is one item (default: whole videos)",
    )
    parser.add_argument(
        "--stride",
        type=float,
        help="with --window: whole seconds from one window's start to the next (default: --window)",
    )
    parser.add_argument(
        "--first-stage",
        action="store_true",
        help="then build the compressed first stage of two-stage search (for large indexes; s2ca-search then "
        "re-scores its candidates exactly). An index that has one keeps it up to date when videos are added",
    )
    parser.add_argument(
        "--first-stage-factory",
        default="auto",
        help="FAISS factory of the first stage (default auto: IVF with ~4 sqrt(N) lists, PQ with 4 dims per byte)",
    )
    parser.add_argument(
        "--first-stage-projection",
        choices=PROJECTIONS,
        default="instance",
        help="what of psi the first stage compresses: its instance part (default) or an SVD projection",
    )
    parser.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        help=f"candidates per query the first stage proposes by default (default {DEFAULT_CANDIDATES})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload the index as a Hub dataset repository")
    return parser


def _fail(prog: str, error: Exception) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def index_main(argv: list[str] | None = None) -> int:
    quiet_weight_loading()
    args = _index_parser().parse_args(argv)
    if args.batch_size < 1 or args.shard_size < 1:
        return _fail("s2ca-index", ValueError("--batch-size and --shard-size must be >= 1"))
    if not args.lock_timeout >= 0:
        return _fail("s2ca-index", ValueError(f"--lock-timeout must be >= 0 seconds, got {args.lock_timeout}"))
    try:
        check_windows(args.window, args.stride)
    except ValueError as error:
        return _fail("s2ca-index", error)
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by `accelerate launch`, torchrun or debug_launcher
        try:
            from accelerate import Accelerator
        except ImportError as error:
            return _fail("s2ca-index", ImportError(f"A multi-process launch needs accelerate ({error})."))
        # cpu=True on a CPU-only machine: without it a multi-process launch gives independent single processes
        # that would all encode everything (accelerate 1.15, see the project's ECOSYSTEM notes).
        accelerator = Accelerator(cpu=args.cpu or not torch.cuda.is_available())
    is_main = accelerator is None or accelerator.is_main_process
    logging.basicConfig(format="%(message)s", level=logging.INFO if is_main else logging.WARNING)
    world = 1 if accelerator is None else accelerator.num_processes
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = max(0, min(8, (os.cpu_count() or 1) // world - 1))
    try:
        videos = resolve_videos(args.videos, args.video_dir)
        model, processor, fingerprint = load_model_and_processor(args.model, args.revision, args.dtype)
        if accelerator is not None:
            model = model.to(accelerator.device)
        elif torch.cuda.is_available() and not args.cpu:
            model = model.to("cuda")
        manifest = build_index(
            model,
            processor,
            videos,
            args.out,
            fingerprint=fingerprint,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            num_workers=num_workers,
            accelerator=accelerator,
            overwrite=args.overwrite,
            progress=is_main and not args.quiet,
            lock_timeout=args.lock_timeout,
            window=args.window,
            stride=args.stride,
        )
    except (ValueError, OSError, ImportError) as error:  # VideoIndexError included: messages name the problem
        return _fail("s2ca-index", error)
    if is_main:
        try:
            _update_first_stage(args, manifest)
        except (ValueError, OSError, ImportError) as error:
            return _fail("s2ca-index", error)
        what = "videos" if manifest.get("windows") is None else "moments (video windows)"
        print(
            f"{args.out}: {manifest['count']} {what} indexed ({manifest['dimension']} dimensions, float16), "
            f"{len(manifest['skipped'])} skipped."
        )
        for entry in manifest["skipped"]:
            print(f"  skipped {entry['path']}: {entry['reason']}")
        if args.push_to_hub:  # see share.py; VideoIndex.from_hub loads it back
            VideoIndex.load(args.out, device="cpu").push_to_hub(args.push_to_hub)
            print(f"{args.out}: pushed to the dataset repository {args.push_to_hub}.")
    return 0


def _update_first_stage(args, manifest: dict) -> None:
    """Builds the first stage when asked, and rebuilds one that the run made stale (videos added), with its own
    settings, so that an index never keeps a first stage that would miss rows."""
    previous = first_stage_settings(args.out)
    stale = previous is not None and (
        previous.get("content_id") != manifest["content_id"] or previous.get("count") != manifest["count"]
    )
    if not args.first_stage and not stale:
        return
    if args.first_stage:
        options = dict(factory=args.first_stage_factory, projection=args.first_stage_projection)
        options["candidates"] = args.candidates
    else:
        options = rebuild_options(previous)
        print(f"{args.out}: videos were added, rebuilding the first stage ({previous['factory']}).")
    stage = build_first_stage(args.out, manifest, progress=not args.quiet, **options)
    print(f"{args.out}: first stage {describe(stage.settings)}.")


def _search_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="s2ca-search",
        description="Search an index built by s2ca-index: texts against the videos (the model's score phi . psi), "
        "an example video against the videos (psi . psi: video vectors compared with each other), or one video "
        "against a list of texts (the reverse direction).",
    )
    parser.add_argument("--index", required=True, help="the index folder")
    parser.add_argument("queries", nargs="*", help="text queries, each ranked against the indexed videos")
    parser.add_argument("-k", "--top_k", dest="k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--video", help="a video file as the query (decoded as the indexed videos were)")
    parser.add_argument("--video-id", help="an indexed video (its id) as the query, using its stored vector")
    parser.add_argument("--texts", nargs="+", help="with --video/--video-id: rank these texts for that video")
    parser.add_argument("--texts-file", help="with --video/--video-id: rank the texts of this file, one per line")
    parser.add_argument("--model", help="encode queries with this model instead of the manifest's (checked)")
    parser.add_argument("--revision", help="Hub revision of --model")
    parser.add_argument("--device", help="where to search and encode (default: cuda if available, else cpu)")
    parser.add_argument(
        "--backend",
        choices=("auto", "exact", "two_stage", "faiss"),
        default="auto",
        help="default auto: two stages where the index has a first stage (s2ca-index --first-stage), else exact",
    )
    parser.add_argument("--exact", action="store_true", help="scan every vector (the same as --backend exact)")
    parser.add_argument("--candidates", type=int, help="two-stage: candidates per query (default: the index's)")
    parser.add_argument(
        "--rerank",
        type=int,
        metavar="N",
        help="re-rank the best N videos with the model's late-interaction re-ranker (models trained with one)",
    )
    parser.add_argument("--faiss-factory", default="SQfp16", help="FAISS index factory string (default SQfp16)")
    parser.add_argument("--nprobe", type=int, help="IVF lists visited, for --backend faiss or the first stage")
    parser.add_argument(
        "--stream", action="store_true", help="read the shards from disk at search time instead of loading them"
    )
    parser.add_argument(
        "--videos_root",
        help="where the indexed folder's videos are now (an index built elsewhere); default: the folder indexed",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for encoding the queries and exact search (default: torch's); with several searching "
        "processes on one machine, give each cores / processes",
    )
    return parser


def _seconds(value) -> str:
    return "?" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def _format_hit(hit) -> str:
    details = []
    if "start" in hit.metadata or "end" in hit.metadata:  # a moment (or a corpus clip): the span in the video
        start, end = (_seconds(hit.metadata.get(key)) for key in ("start", "end"))
        of = f" of {hit.metadata['duration']:.1f} s" if "duration" in hit.metadata else ""
        details.append(f"{start}-{end} s{of}")
    elif "duration" in hit.metadata:
        details.append(f"{hit.metadata['duration']:.1f} s")
    suffix = f"  ({', '.join(details)})" if details else ""
    return f"{hit.rank:>4}  {hit.score:>9.4f}  {hit.id}  {hit.path}{suffix}"


def search_main(argv: list[str] | None = None) -> int:
    quiet_weight_loading()
    parser = _search_parser()
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("-k must be >= 1")
    as_video = args.video is not None or args.video_id is not None
    rank_texts = args.texts is not None or args.texts_file is not None
    if args.video is not None and args.video_id is not None:
        parser.error("give --video or --video-id, not both")
    if rank_texts and not as_video:
        parser.error("--texts/--texts-file rank texts for one video: give --video or --video-id")
    if as_video and args.queries:
        parser.error("text queries and --video/--video-id are separate searches: give one or the other")
    if not as_video and not args.queries:
        parser.error("give a text query, --video or --video-id")
    for number, query in enumerate(args.queries + (args.texts or []), start=1):
        if not query.strip():
            parser.error(f"text {number} is empty: an empty query matches nothing in particular")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:  # bytes the shell could not decode arrive as surrogates
            parser.error(f"text {number} is not valid UTF-8: {query.encode('utf-8', 'backslashreplace')!r}")
    if args.nprobe is not None and args.nprobe < 1:
        parser.error("--nprobe must be >= 1")
    if args.exact:
        if args.backend not in ("auto", "exact"):
            parser.error(f"--exact and --backend {args.backend} contradict each other")
        args.backend = "exact"
    if args.backend != "faiss" and args.faiss_factory != "SQfp16":
        parser.error("--faiss-factory applies to --backend faiss only")
    if args.backend == "exact" and args.nprobe is not None:
        parser.error("--nprobe applies to --backend faiss and the two-stage first stage, not to exact search")
    if args.candidates is not None and (args.candidates < 1 or args.backend in ("exact", "faiss")):
        parser.error("--candidates must be >= 1 and applies to the two-stage search only")
    if args.rerank is not None and (args.rerank < 1 or args.video or args.video_id):
        parser.error("--rerank must be >= 1 and applies to text queries")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    if args.device is not None and args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device is available here (use --device cpu)")
    try:
        index = VideoIndex.load(
            args.index, device=args.device, in_memory=not args.stream, videos_root=args.videos_root
        )
        if args.model is not None:
            index.load_model(args.model, args.revision)
        search = dict(k=args.k, backend=args.backend, faiss_factory=args.faiss_factory, nprobe=args.nprobe)
        if args.candidates is not None:
            search["candidates"] = args.candidates
        if args.rerank is not None:
            search["rerank"] = args.rerank
        if rank_texts:
            texts = list(args.texts or [])
            if args.texts_file:
                try:
                    with open(args.texts_file, encoding="utf-8") as handle:
                        texts += [line.strip() for line in handle if line.strip()]
                except UnicodeDecodeError as error:
                    raise ValueError(f"--texts-file {args.texts_file} is not UTF-8 text ({error.reason}).") from None
            ranked = index.rank_texts(texts, video=args.video, video_id=args.video_id)[: args.k]
            query = args.video or args.video_id
            if args.json:
                results = [{"rank": r, "score": s, "text": t} for r, s, t in ranked]
                print(
                    json.dumps({"index": index.path, "direction": "video-to-text", "video": query, "results": results})
                )
            else:
                print(f"texts for video {query}:")
                for rank, score, text in ranked:
                    print(f"{rank:>4}  {score:>9.4f}  {text}")
            return 0
        if as_video:
            vector = index.encode_video(args.video) if args.video else index.vector(args.video_id)
            hits = index.search(vector.unsqueeze(0), **search)
            queries, direction = [args.video or args.video_id], "video-to-video"
        else:
            hits = index.search(list(args.queries), **search)
            queries, direction = list(args.queries), "text-to-video"
    except (ValueError, OSError, ImportError) as error:  # VideoIndexError included: messages name the problem
        return _fail("s2ca-search", error)
    if args.json:
        results = [{"query": q, "hits": [hit.to_dict() for hit in h]} for q, h in zip(queries, hits)]
        print(json.dumps({"index": index.path, "direction": direction, "results": results}))
    else:
        for query, query_hits in zip(queries, hits):
            what = "videos like" if direction == "video-to-video" else "videos for"
            print(f"{what} {query!r}:")
            for hit in query_hits:
                print(_format_hit(hit))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m s2ca_hf.retrieval.cli index|search ...` (what `accelerate launch -m` can run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("index", "search"):
        print("usage: python -m s2ca_hf.retrieval.cli {index,search} ...", file=sys.stderr)
        return 2
    return index_main(argv[1:]) if argv[0] == "index" else search_main(argv[1:])


def _index_entry() -> None:
    sys.exit(index_main())


def _search_entry() -> None:
    sys.exit(search_main())


if __name__ == "__main__":
    sys.exit(main())
