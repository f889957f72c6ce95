"""A two-minute, offline tour of S2CA: build a tiny model, encode a generated clip and a caption, print their score.

    python -m s2ca_hf.demo [--save_dir DIR]

The model is tiny and randomly initialised (nothing is downloaded), so the score itself means nothing; what the demo
shows is the whole path a trained checkpoint takes: the processor decodes a video file with PyAV and samples its
frames as CLIP4Clip does, the model turns the clip and the caption into the vectors psi and phi, and their dot
product is the retrieval score. With `--save_dir` it also writes the model and processor as Hub custom code and
loads them back with `AutoModel` / `AutoProcessor`.
"""

import os
import tempfile

import numpy as np
import torch

from . import S2CAModel, register_for_auto_class
from .tiny import tiny_config, tiny_processor
from .utils import ArgumentParser, first_paragraph
from .video_io import encode_frames


def write_moving_square(path: str, num_frames: int = 45, fps: int = 15, size: int = 64) -> str:
    """A 3-second clip of a red square sliding left to right over a grey background, encoded with PyAV (H.264)."""

    def frames():
        for i in range(num_frames):
            image = np.full((size, size, 3), 128, dtype=np.uint8)
            left = i * (size - 16) // max(num_frames - 1, 1)
            image[24:40, left : left + 16] = (220, 30, 30)
            yield image

    return encode_frames(path, frames(), fps, "libx264")


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--save_dir", help="also save the tiny model and processor here as Hub custom code")
    parser.add_argument("--caption", default="a red square slides to the right")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    workdir = tempfile.mkdtemp(prefix="s2ca-demo-")
    processor = tiny_processor(os.path.join(workdir, "tokenizer"), max_text_length=32)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer))).eval()
    video_path = write_moving_square(os.path.join(workdir, "square.mp4"))

    inputs = processor(text=[args.caption], videos=[video_path], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
        phi = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        psi = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    score = float(phi @ psi.t())
    config = model.config
    print("S2CA demo: a tiny, untrained model (random weights), so the score itself is meaningless.")
    print(f"video   {video_path}: 3 s at 15 fps -> {int(inputs['frame_mask'].sum())} frames (one per second)")
    print(f"caption {args.caption!r} -> {int(inputs['attention_mask'].sum())} tokens")
    print(
        f"phi(text) {tuple(phi.shape)}, psi(video) {tuple(psi.shape)}: "
        f"D + K d_c with D = {config.projection_dim}, K = {config.num_concepts} shared concepts of width "
        f"d_c = {config.concept_dim}"
    )
    print(
        f"concepts used: text {int((out.text_concepts.token_counts > 0).sum())}/{config.num_concepts}, "
        f"video {int((out.video_concepts.token_counts > 0).sum())}/{config.num_concepts}"
    )
    print(
        f"score s = phi . psi = {score:.4f} (instance {float(out.instance_similarity):.4f} + "
        f"concept {float(out.concept_similarity):.4f}); logit = {float(out.logits_per_text):.3f}"
    )
    result = {"score": score, "logit": float(out.logits_per_text), "video": video_path}

    if args.save_dir:
        from transformers import AutoModel, AutoProcessor

        register_for_auto_class()
        model.save_pretrained(args.save_dir)
        processor.save_pretrained(args.save_dir)
        reloaded = AutoModel.from_pretrained(args.save_dir, trust_remote_code=True).eval()
        reprocessor = AutoProcessor.from_pretrained(args.save_dir, trust_remote_code=True)
        with torch.inference_mode():
            again = reloaded(**reprocessor(text=[args.caption], videos=[video_path], return_tensors="pt"))
        print(f"saved to {args.save_dir}; reloaded with AutoModel: logit = {float(again.logits_per_text):.3f}")
        result["reloaded_logit"] = float(again.logits_per_text)
    return result


if __name__ == "__main__":
    main()
