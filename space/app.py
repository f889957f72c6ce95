"""S2CA search demo: type a text and see the best videos of an index, pick a video and see captions ranked, open any
hit's concept map.

    python space/app.py --model runs/synthetic/final [--index runs/synthetic-index] [--captions captions.txt]

Without an index it builds a small example collection on first start (24 generated clips, indexed with the model;
the example queries are captions the model ranks its clip first for). As a Hugging Face Space: `python
space/build_space.py --out my-space --model org/s2ca-msrvtt` writes the Space folder (this app, the package, the
requirements); the Space's variables S2CA_MODEL, S2CA_INDEX, S2CA_VIDEOS_ROOT replace the flags.
"""

import json
import os
import shutil
import sys
import tempfile

import gradio as gr
import torch

from s2ca_hf.retrieval import VideoIndex
from s2ca_hf.utils import ArgumentParser, first_paragraph
from s2ca_hf.video_io import VIDEO_EXTENSIONS
from s2ca_hf.visualization import concept_map, plot_concept_map


EXAMPLE_CLIPS = 24  # the example collection: enough for a search to choose, seconds to generate and index on a CPU
EXAMPLE_QUERIES = 4
EXAMPLES_FILE = "examples.json"


class Demo:
    """What the app does, without the app: search, rank captions, explain a pair (the browser tests drive both)."""

    def __init__(
        self,
        index: str,
        model: str | None = None,
        captions: list[str] | None = None,
        k: int = 6,
        videos_root: str | None = None,
        queries: list[str] | None = None,
    ):
        self.index = VideoIndex.load(index, device="cpu", videos_root=videos_root)
        self.model, self.processor = self.index.load_model(model)
        self.captions = captions or []
        self.queries = queries or []
        self.k = k
        self.figures = tempfile.mkdtemp(prefix="s2ca-space-")
        self.served = os.path.join(self.figures, "videos")  # one file per shown row: nothing else is ever served

    def search(self, text: str, k: int | None = None) -> list[tuple[str, str]]:
        """(video file to show, caption "rank. id · match %") for the best videos, best first (see `hits`)."""
        return [(video, caption) for video, caption, _ in self.hits(text, k)]

    def hits(self, text: str, k: int | None = None) -> list[tuple[str, str, str]]:
        """(video file to show, caption, details) for the best videos, best first. The caption's percentage is the
        model's softmax over the shown hits (`exp(logit_scale) * score`, as in training): how sure it is that this
        one, rather than another shown, is the video meant; the details give the raw score and logit. A hit whose
        indexed path is not a video file is left out with a warning (an index is someone's input: its rows may
        name any file on this machine)."""
        if not text.strip():
            raise gr.Error("Type a text to search for.")
        found = self.index.search(text, k=min(int(k or self.k), len(self.index)))[0]
        scale = float(self.model.logit_scale_value())
        logits = torch.tensor([scale * hit.score for hit in found])
        shares = torch.softmax(logits, dim=0).tolist() if len(found) else []
        shown, refused = [], []
        for hit, logit, share in zip(found, logits.tolist(), shares):
            served = self.serve(hit.row, hit.path)
            if served is None:
                refused.append(hit.path)
                continue
            caption = f"{hit.rank}. {hit.id}{_span(hit)} · {100 * share:.0f}%"
            shown.append((served, caption, f"score {hit.score:.4f} · logit {logit:.2f} (scale {scale:.1f})"))
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
        """[rank, match %, caption] rows for one video file against the captions (one per line); the percentage is
        the model's softmax over the captions given."""
        texts = [line.strip() for line in captions.splitlines() if line.strip()]
        if not video or not texts:
            raise gr.Error("Give a video and at least one caption.")
        try:
            ranked = self.index.rank_texts(texts, video=video)
        except (ValueError, OSError) as error:  # an upload that does not decode: say why, not Gradio's "Error"
            raise gr.Error(str(error)) from None
        scale = float(self.model.logit_scale_value())
        shares = torch.softmax(torch.tensor([scale * score for _, score, _ in ranked]), dim=0).tolist()
        return [[rank, f"{100 * share:.0f}%", text] for (rank, _, text), share in zip(ranked, shares)]

    def explain(self, text: str, video: str) -> str:
        """A PNG of the concept map of (text, video)."""
        path = os.path.join(self.figures, f"explain-{abs(hash((text, video)))}.png")
        plot_concept_map(concept_map(self.model, self.processor, video, text), path)
        return path

    def example_videos(self, count: int = 2) -> list[str]:
        """Served copies of the first indexed videos, for the examples of the second tab."""
        stored = self.index.table.column("path").to_pylist()[:count]
        paths = [self.serve(row, self.index.video_path(path)) for row, path in enumerate(stored)]
        return [path for path in paths if path]


def _span(hit) -> str:
    """ " (12.0-18.0 s)" for a hit that is a time window of its video (a clip window or an indexed moment)."""
    start, end = hit.metadata.get("start"), hit.metadata.get("end")
    return f" ({start:.1f}-{end:.1f} s)" if start is not None and end is not None else ""


def ensure_example_collection(folder: str, model: str) -> tuple[str, list[str], list[str]]:
    """(index folder, example queries, candidate captions) of the example collection in `folder`, built on first
    use: `EXAMPLE_CLIPS` clips of the built-in synthetic corpus, indexed with `model`. The example queries are the
    clips' own captions that the model ranks their clip first for, so that each one works with this model."""
    from s2ca_hf.data import ensure_synthetic_corpus
    from s2ca_hf.retrieval.cli import index_main

    index = os.path.join(folder, "index")
    examples = os.path.join(folder, EXAMPLES_FILE)
    if os.path.isfile(examples) and os.path.isfile(os.path.join(index, "manifest.json")):
        with open(examples, encoding="utf-8") as f:
            saved = json.load(f)
        if saved.get("model") == model:
            return index, saved["queries"], saved["captions"]
        shutil.rmtree(folder)  # indexed with another model: build it again with this one
    print(f"Building the example collection in {folder} ({EXAMPLE_CLIPS} clips, indexed with {model})...")
    clips_dir = ensure_synthetic_corpus(os.path.join(folder, "clips"), num_videos=EXAMPLE_CLIPS, num_stills=0, seed=0)
    if index_main(["--model", model, "--videos", os.path.join(clips_dir, "videos"), "--out", index, "--quiet"]) != 0:
        raise SystemExit(f"Could not index the example collection in {folder} (see above).")
    with open(os.path.join(clips_dir, "MSRVTT_data.json"), encoding="utf-8") as f:
        sentences = json.load(f)["sentences"]
    candidates = sorted({(f"{s['video_id']}.mp4", s["caption"]) for s in sentences})
    video_index = VideoIndex.load(index, device="cpu")
    video_index.load_model(model)
    firsts = [hits[0].id for hits in video_index.search([caption for _, caption in candidates], k=1)]
    queries, used = [], set()
    for (clip, caption), first in zip(candidates, firsts):
        if first == clip and clip not in used and len(queries) < EXAMPLE_QUERIES:
            queries.append(caption)
            used.add(clip)
    if not queries:
        print("None of the example captions ranks its clip first with this model; the examples are unverified.")
        queries = [caption for _, caption in candidates[:EXAMPLE_QUERIES]]
    # The second tab's candidates: the captions of the first indexed clip (its example video) among the queries.
    own = [caption for clip, caption in candidates if clip == video_index.ids[0]][:2]
    captions = own + [caption for caption in queries if caption not in own]
    with open(examples, "w", encoding="utf-8") as f:
        json.dump({"model": model, "queries": queries, "captions": captions}, f, indent=1)
    return index, queries, captions


# Each hit's raw score and logit as its caption's tooltip: Gradio's gallery shows a caption as plain text, so the
# details travel in a hidden element (#score-details) and this script copies them onto the captions as they render.
HEAD = """<script>
new MutationObserver(() => {
  const holder = document.querySelector("#score-details [data-details]");
  if (!holder) return;
  const details = JSON.parse(holder.dataset.details);
  document.querySelectorAll("#results .caption-label").forEach((label, i) => {
    if (i < details.length && label.title !== details[i]) label.title = details[i];
  });
}).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
</script>"""


def build_app(demo: Demo) -> gr.Blocks:
    with gr.Blocks(title="S2CA text-video search") as app:
        gr.Markdown(
            f"# S2CA text-video search\n{len(demo.index)} videos indexed. The percentage under a hit is the model's "
            "share of belief, among the shown hits, that it is the video meant (hover it for the raw score); click a "
            "hit for its concept map."
        )
        with gr.Tab("Text to videos"):
            query = gr.Textbox(label="Text query", placeholder="a red circle moves left")
            search = gr.Button("Search", variant="primary")
            if demo.queries:
                gr.Examples([[q] for q in demo.queries], inputs=query, label="Example queries")
            gallery = gr.Gallery(
                label="Best videos", columns=3, height="auto", object_fit="contain", elem_id="results"
            )
            details = gr.HTML(elem_id="score-details")
            explanation = gr.Image(label="Concept map of the selected hit", type="filepath", elem_id="concept-map")
            hits = gr.State([])

            def run_search(text):
                found = demo.hits(text)
                payload = json.dumps([detail for _, _, detail in found]).replace("&", "&amp;").replace("'", "&#39;")
                shown = [(video, caption) for video, caption, _ in found]
                return shown, shown, f"<div hidden data-details='{payload}'></div>"

            def explain_hit(text, found, event: gr.SelectData):
                return demo.explain(text, found[event.index][0])

            search.click(run_search, inputs=query, outputs=[gallery, hits, details])
            query.submit(run_search, inputs=query, outputs=[gallery, hits, details])
            gallery.select(explain_hit, inputs=[query, hits], outputs=explanation)
        with gr.Tab("Video to captions"):
            with gr.Row():
                video = gr.Video(label="Video", height=320, sources=["upload"])
                captions = gr.Textbox(
                    label="Candidate captions (one per line)", lines=8, value="\n".join(demo.captions)
                )
            examples = demo.example_videos()
            if examples:
                gr.Examples([[path] for path in examples], inputs=video, label="Example videos")
            rank = gr.Button("Rank captions", variant="primary")
            ranked = gr.Dataframe(headers=["rank", "match", "caption"], label="Captions, best first")
            rank.click(demo.rank_captions, inputs=[video, captions], outputs=ranked)
    return app


def launch(app: gr.Blocks, host: str, port: int, block: bool = True) -> None:
    """Starts the server. No `allowed_paths`: Gradio serves only the files the app returns (each shown video is the
    app's own link or copy of exactly that indexed file, `Demo.serve`), never a folder. System fonts: the page
    fetches nothing from elsewhere."""
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, theme=theme, head=HEAD)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument(
        "--index", default=os.environ.get("S2CA_INDEX"), help="an s2ca-index folder (default: the example collection)"
    )
    parser.add_argument("--model", default=os.environ.get("S2CA_MODEL"), help="default: the model the index names")
    parser.add_argument(
        "--videos",
        help="build the index first (s2ca-index with --model) from this folder or corpus:NAME:DATA_DIR:SPLIT, "
        "unless it exists already",
    )
    parser.add_argument("--captions", help="a text file of candidate captions, one per line, for the second tab")
    parser.add_argument("--queries", help="a text file of example queries, one per line, for the first tab")
    parser.add_argument(
        "--videos_root",
        default=os.environ.get("S2CA_VIDEOS_ROOT"),
        help="where the indexed folder's videos are here (an index built elsewhere); default: the folder indexed",
    )
    parser.add_argument(
        "--examples_dir",
        default=os.environ.get(
            "S2CA_EXAMPLES_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
        ),
        help="where the example collection is built when no index is given (default: examples/ beside the app)",
    )
    # A Space sets GRADIO_SERVER_NAME=0.0.0.0 (and the port): the environment decides unless a flag is given.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    queries, captions = _lines(args.queries), _lines(args.captions)
    if not args.index:
        if not args.model:
            parser.error("give --model (or S2CA_MODEL, a Hub model id) for the example collection, or --index.")
        args.index, example_queries, example_captions = ensure_example_collection(args.examples_dir, args.model)
        queries, captions = queries or example_queries, captions or example_captions
    elif args.videos and not os.path.isfile(os.path.join(args.index, "manifest.json")):
        if not args.model:
            parser.error("--videos needs --model: the model that encodes the videos.")
        from s2ca_hf.retrieval.cli import index_main

        if index_main(["--model", args.model, "--videos", args.videos, "--out", args.index]) != 0:
            sys.exit(2)
    demo = Demo(args.index, args.model, captions, videos_root=args.videos_root, queries=queries)
    launch(build_app(demo), args.host, args.port)


def _lines(path: str | None) -> list[str] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
