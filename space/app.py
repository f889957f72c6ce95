"""S2CA search demo: type a text and see the best videos of an index, pick a video and see captions ranked, open any
hit's concept map.

    python space/app.py --model runs/synthetic/final --index runs/synthetic-index [--captions captions.txt]

Runs offline on the built-in corpus (README, "See what the model does"), and as a Hugging Face Space from this
folder (its README.md carries the Space header; set S2CA_MODEL and S2CA_INDEX there instead of the flags).
"""

import os
import shutil
import sys
import tempfile

import gradio as gr

from s2ca_hf.retrieval import VideoIndex
from s2ca_hf.utils import ArgumentParser, first_paragraph
from s2ca_hf.video_io import VIDEO_EXTENSIONS
from s2ca_hf.visualization import concept_map, plot_concept_map


class Demo:
    """What the app does, without the app: search, rank captions, explain a pair (the browser test drives both)."""

    def __init__(
        self,
        index: str,
        model: str | None = None,
        captions: list[str] | None = None,
        k: int = 6,
        videos_root: str | None = None,
    ):
        self.index = VideoIndex.load(index, device="cpu", videos_root=videos_root)
        self.model, self.processor = self.index.load_model(model)
        self.captions = captions or []
        self.k = k
        self.figures = tempfile.mkdtemp(prefix="s2ca-space-")
        self.served = os.path.join(self.figures, "videos")  # one file per shown row: nothing else is ever served

    def search(self, text: str, k: int | None = None) -> list[tuple[str, str]]:
        """(video file to show, caption "rank. id · score") for the best videos, best first. A hit whose indexed
        path is not a video file is left out with a warning (an index is someone's input: its rows may name any
        file on this machine)."""
        if not text.strip():
            raise gr.Error("Type a text to search for.")
        hits = self.index.search(text, k=min(int(k or self.k), len(self.index)))[0]
        shown, refused = [], []
        for hit in hits:
            served = self.serve(hit.row, hit.path)
            if served is None:
                refused.append(hit.path)
            else:
                shown.append((served, f"{hit.rank}. {hit.id}{_span(hit)} · {hit.score:.3f}"))
        if refused:
            gr.Warning(f"{len(refused)} hit(s) not shown, not a video file: {', '.join(refused[:3])}")
        return shown

    def serve(self, row: int, path: str) -> str | None:
        """The app's own copy of one indexed video (a hard link where the file system allows, else a copy), which
        Gradio may show; None unless `path` is a regular file with a video extension, after following links. The
        app passes Gradio no `allowed_paths`, so no other file next to the indexed videos can be fetched."""
        real = os.path.realpath(path)
        extension = os.path.splitext(real)[1].lower()
        if not os.path.isfile(real) or extension not in VIDEO_EXTENSIONS:
            return None
        served = os.path.join(self.served, str(row), f"video{extension}")
        if not os.path.isfile(served):
            os.makedirs(os.path.dirname(served), exist_ok=True)
            try:
                os.link(real, served)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(real, served)
        return served

    def rank_captions(self, video: str, captions: str) -> list[list]:
        """[rank, score, caption] rows for one video file against the captions (one per line)."""
        texts = [line.strip() for line in captions.splitlines() if line.strip()]
        if not video or not texts:
            raise gr.Error("Give a video and at least one caption.")
        try:
            ranked = self.index.rank_texts(texts, video=video)
        except (ValueError, OSError) as error:  # an upload that does not decode: say why, not Gradio's "Error"
            raise gr.Error(str(error)) from None
        return [[rank, round(score, 4), text] for rank, score, text in ranked]

    def explain(self, text: str, video: str) -> str:
        """A PNG of the concept map of (text, video)."""
        path = os.path.join(self.figures, f"explain-{abs(hash((text, video)))}.png")
        plot_concept_map(concept_map(self.model, self.processor, video, text), path)
        return path


def _span(hit) -> str:
    """ " (12.0-18.0 s)" for a hit that is a time window of its video (a clip window or an indexed moment)."""
    start, end = hit.metadata.get("start"), hit.metadata.get("end")
    return f" ({start:.1f}-{end:.1f} s)" if start is not None and end is not None else ""


def build_app(demo: Demo) -> gr.Blocks:
    with gr.Blocks(title="S2CA text-video search") as app:
        gr.Markdown(f"# S2CA text-video search\n{len(demo.index)} videos indexed.")
        with gr.Tab("Text to videos"):
            query = gr.Textbox(label="Text query", placeholder="a red circle moves left")
            search = gr.Button("Search", variant="primary")
            gallery = gr.Gallery(label="Best videos", columns=3, elem_id="results")
            explanation = gr.Image(label="Concept map of the selected hit", type="filepath")
            hits = gr.State([])

            def run_search(text):
                found = demo.search(text)
                return found, found

            def explain_hit(text, found, event: gr.SelectData):
                return demo.explain(text, found[event.index][0])

            search.click(run_search, inputs=query, outputs=[gallery, hits])
            query.submit(run_search, inputs=query, outputs=[gallery, hits])
            gallery.select(explain_hit, inputs=[query, hits], outputs=explanation)
        with gr.Tab("Video to captions"):
            video = gr.Video(label="Video")
            captions = gr.Textbox(label="Candidate captions (one per line)", lines=6, value="\n".join(demo.captions))
            rank = gr.Button("Rank captions", variant="primary")
            ranked = gr.Dataframe(headers=["rank", "score", "caption"], label="Captions, best first")
            rank.click(demo.rank_captions, inputs=[video, captions], outputs=ranked)
    return app


def launch(app: gr.Blocks, host: str, port: int, block: bool = True) -> None:
    """Starts the server. No `allowed_paths`: Gradio serves only the files the app returns (each shown video is the
    app's own link or copy of exactly that indexed file, `Demo.serve`), never a folder."""
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--index", default=os.environ.get("S2CA_INDEX"), help="an s2ca-index folder")
    parser.add_argument("--model", default=os.environ.get("S2CA_MODEL"), help="default: the model the index names")
    parser.add_argument(
        "--videos",
        help="build the index first (s2ca-index with --model) from this folder or corpus:NAME:DATA_DIR:SPLIT, "
        "unless it exists already",
    )
    parser.add_argument("--captions", help="a text file of candidate captions, one per line, for the second tab")
    parser.add_argument(
        "--videos_root",
        default=os.environ.get("S2CA_VIDEOS_ROOT"),
        help="where the indexed folder's videos are here (an index built elsewhere); default: the folder indexed",
    )
    # A Space sets GRADIO_SERVER_NAME=0.0.0.0 (and the port): the environment decides unless a flag is given.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    if not args.index:
        parser.error("--index (or S2CA_INDEX) is required: build one with s2ca-index.")
    if args.videos and not os.path.isfile(os.path.join(args.index, "manifest.json")):
        if not args.model:
            parser.error("--videos needs --model: the model that encodes the videos.")
        from s2ca_hf.retrieval.cli import index_main

        if index_main(["--model", args.model, "--videos", args.videos, "--out", args.index]) != 0:
            sys.exit(2)
    captions = open(args.captions, encoding="utf-8").read().splitlines() if args.captions else None
    demo = Demo(args.index, args.model, captions, videos_root=args.videos_root)
    launch(build_app(demo), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
