"""Concept maps: which words and which patches of which frames went to which shared concept, and what each concept
added to the score of one text-video pair.

    s2ca-explain --model runs/synthetic/final --video clip.mp4 --text "a red circle moves left" --out explain.png

`concept_map` reads everything from the model's own `encode_text` / `encode_video` outputs (the allocation
matrices) and from `S2CAModel.score_parts` (the score taken apart along phi and psi), so the picture cannot drift
from what the model computes. `plot_concept_map` draws it with matplotlib (the `viz` extra:
`pip install "s2ca-hf[viz]"`).
"""

import sys
from dataclasses import dataclass

import numpy as np
import torch

from .utils import ArgumentParser, first_paragraph, quiet_weight_loading


@dataclass
class ConceptMap:
    """One text-video pair seen through the concepts. F is the number of real frames, K `num_concepts`.

    Concept indices are the argmax of each token's allocation (its only concept under hard allocation, its largest
    share under `allocation="soft"`).
    """

    text: str
    words: list[str]  # the text's concept tokens (words, pieces of words and end-of-text), as the tokenizer split them
    word_concepts: list[int]  # the concept of each of them (-1: none took it)
    ends_word: list[bool]  # whether a token ends a word (a BPE piece inside a word is drawn joined to the next)
    frames: np.ndarray  # (F, H, W, 3) uint8: the frames the model saw, normalisation undone
    frame_concepts: np.ndarray  # (F,): the concept of each frame's refined [CLS] token
    patch_concepts: np.ndarray  # (F, side, side): the concept of each patch
    instance_score: float  # s_inst
    concept_scores: np.ndarray  # (K,): each concept's share of lambda_e * s_con; they sum to it
    num_concepts: int

    @property
    def score(self) -> float:
        """The model's score of the pair, s_inst + lambda_e * s_con."""
        return self.instance_score + float(self.concept_scores.sum())


def _undo_scaling(pixels: torch.Tensor, video_processor) -> np.ndarray:
    """`(F, 3, H, W)` model input back to `(F, H, W, 3)` uint8, by the processor's own rescale and normalisation."""
    frames = pixels.float()
    if video_processor.do_normalize:
        mean = torch.tensor(video_processor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(video_processor.image_std).view(1, 3, 1, 1)
        frames = frames * std + mean
    if video_processor.do_rescale:
        frames = frames / video_processor.rescale_factor
    return frames.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _word(token: str, tokenizer) -> tuple[str, bool]:
    """A token as shown, and whether it ends a word (CLIP's BPE marks a word's last piece with `</w>`)."""
    if token == tokenizer.eos_token:
        return "[end]", True
    return token.replace("</w>", ""), token.endswith("</w>")


def token_concepts(concepts) -> torch.Tensor:
    """`(B, N)`: the concept each token went to, -1 for none. A token that several concepts picked (expert-choice
    allocation) is shown in the one with the highest allocation logit; one that none picked, or padding, is -1."""
    picked = (concepts.allocation > 0) & concepts.token_mask.bool().unsqueeze(1)
    best = concepts.allocation_logits.masked_fill(~picked, torch.finfo(concepts.allocation_logits.dtype).min)
    return best.argmax(dim=1).masked_fill(~picked.any(dim=1), -1)


@torch.inference_mode()
def concept_map(model, processor, video, text: str) -> ConceptMap:
    """The concept map of one pair: `video` is anything the processor takes (a path, a URL, decoded frames)."""
    if model.concepts is None:
        raise ValueError("This model has no concepts (`use_concepts=False`): there is nothing to map.")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"The text is empty ({text!r}): give a caption to explain against the video.")
    inputs = processor(text=[text], videos=[video], return_tensors="pt").to(model.device)
    encoded_text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
    encoded_video = model.encode_video(inputs["pixel_values_videos"].to(model.dtype), inputs["frame_mask"])

    token_mask = encoded_text.token_mask[0].bool()
    ids = inputs["input_ids"][0][token_mask].tolist()
    shown = [_word(token, processor.tokenizer) for token in processor.tokenizer.convert_ids_to_tokens(ids)]
    words, ends_word = [word for word, _ in shown], [ends for _, ends in shown]
    word_concepts = token_concepts(encoded_text.concepts)[0][token_mask].tolist()

    real = inputs["frame_mask"][0].bool()
    num_frames = real.shape[0]
    video_concepts = token_concepts(encoded_video.concepts)[0].view(num_frames, -1)[real]
    # [CLS] then the patch grid, row-major, in every frame
    side = model.config.vision_config.image_size // model.config.vision_config.patch_size
    patch_concepts = video_concepts[:, 1:].reshape(-1, side, side).cpu().numpy()

    instance, per_concept = model.score_parts(encoded_text.embeds, encoded_video.embeds)
    return ConceptMap(
        text=text,
        words=words,
        word_concepts=word_concepts,
        ends_word=ends_word,
        frames=_undo_scaling(inputs["pixel_values_videos"][0][real].cpu(), processor.video_processor),
        frame_concepts=video_concepts[:, 0].cpu().numpy(),
        patch_concepts=patch_concepts,
        instance_score=float(instance[0, 0]),
        concept_scores=per_concept[0, 0].float().cpu().numpy(),
        num_concepts=model.config.num_concepts,
    )


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, the same pixels on every machine
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('Concept maps need matplotlib: pip install "s2ca-hf[viz]"') from error
    return plt


def concept_colours(num_concepts: int) -> np.ndarray:
    """`(K, 4)` RGBA: one colour per concept, the same in every picture of a model."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10" if num_concepts <= 10 else "tab20" if num_concepts <= 20 else "hsv")
    return np.array([palette(k if num_concepts <= 20 else k / num_concepts) for k in range(num_concepts)])


def plot_concept_map(concepts: ConceptMap, path: str | None = None, title: str | None = None):
    """Draws a `ConceptMap`: the frames with each patch tinted by its concept and a border in the colour of the
    frame token's concept, the caption's words in their concepts' colours, and a bar per concept with its share of
    the score next to s_inst. Saves a PNG when `path` is given; returns the matplotlib figure."""
    plt = _pyplot()
    # One more colour, transparent, at index -1: a token no concept took is left untinted.
    colours = np.vstack([concept_colours(concepts.num_concepts), np.zeros((1, 4))])
    num_frames = len(concepts.frames)
    figure = plt.figure(figsize=(max(2.0 * num_frames, 8.0), 6.2), dpi=100)
    grid = figure.add_gridspec(3, num_frames, height_ratios=[2.2, 0.7, 2.0], hspace=0.45)

    for f, frame in enumerate(concepts.frames):
        axis = figure.add_subplot(grid[0, f])
        height, width = frame.shape[:2]
        axis.imshow(frame)
        tint = colours[concepts.patch_concepts[f]].copy()
        tint[..., 3] = np.where(concepts.patch_concepts[f] >= 0, 0.45, 0.0)  # an untaken patch stays untinted
        axis.imshow(tint, extent=(0, width, height, 0), interpolation="nearest")
        for spine in axis.spines.values():
            spine.set_edgecolor(colours[concepts.frame_concepts[f]])
            spine.set_linewidth(4)
        axis.set_xticks([])
        axis.set_yticks([])
        frame_concept = concepts.frame_concepts[f]
        axis.set_title(f"frame {f + 1}: " + (f"c{frame_concept + 1}" if frame_concept >= 0 else "none"), fontsize=9)

    words_axis = figure.add_subplot(grid[1, :])
    words_axis.axis("off")
    # Monospace, so that a word's width is its length and the layout needs no renderer.
    # The pieces of one word touch (each in its concept's colour); words are a space apart.
    total = sum(len(word) + int(ends) for word, ends in zip(concepts.words, concepts.ends_word))
    position = 0
    for word, concept, ends in zip(concepts.words, concepts.word_concepts, concepts.ends_word):
        words_axis.text(
            position / max(total, 1),
            0.5,
            word,
            family="monospace",
            fontsize=11,
            va="center",
            bbox={"facecolor": colours[concept], "alpha": 0.55, "edgecolor": "none", "pad": 2},
        )
        position += len(word) + int(ends)

    bars_axis = figure.add_subplot(grid[2, :])
    labels = ["s_inst"] + [f"c{k + 1}" for k in range(concepts.num_concepts)]
    values = [concepts.instance_score, *concepts.concept_scores.tolist()]
    bars_axis.bar(labels, values, color=["0.55", *colours[:-1]])
    bars_axis.axhline(0.0, color="black", linewidth=0.8)
    bars_axis.set_ylabel("share of the score")
    bars_axis.set_title(
        f"score {concepts.score:.3f} = s_inst {concepts.instance_score:.3f} + concepts "
        f"{float(concepts.concept_scores.sum()):.3f}",
        fontsize=10,
    )
    figure.suptitle(title or f'"{concepts.text}"', fontsize=12)
    if path is not None:
        figure.savefig(path, bbox_inches="tight", metadata={"Software": None})
    return figure


def main(argv: list[str] | None = None) -> int:
    quiet_weight_loading()
    parser = ArgumentParser(prog="s2ca-explain", description=first_paragraph(__doc__))
    parser.add_argument("--model", required=True, help="a saved S2CA model folder or Hub id (with its processor)")
    parser.add_argument("--video", required=True, help="a video file or http(s) URL")
    parser.add_argument("--text", required=True, help="the caption to explain against the video")
    parser.add_argument("--out", default="explain.png", help="where to write the PNG")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from transformers import AutoModel, AutoProcessor

    try:
        model = AutoModel.from_pretrained(args.model).to(args.device).eval()
        processor = AutoProcessor.from_pretrained(args.model)
        concepts = concept_map(model, processor, args.video, args.text)
        plot_concept_map(concepts, args.out)
    except (OSError, ValueError, ImportError) as error:
        print(f"s2ca-explain: {error}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: score {concepts.score:.4f} (s_inst {concepts.instance_score:.4f}, concepts "
        f"{float(concepts.concept_scores.sum()):.4f}) over {len(concepts.frames)} frames"
    )
    return 0


def _explain_entry() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    _explain_entry()
