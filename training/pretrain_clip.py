"""Pretrain a small CLIP on the built-in corpus's captioned stills, the offline stand-in for OpenAI CLIP.

    python training/pretrain_clip.py [--data_dir data/synthetic] [--output_dir runs/clip-synthetic] [--epochs 8]

The default training run (`accelerate launch training/train.py`) calls `ensure_pretrained_clip`, which trains it on
first use and reuses it afterwards, so S2CA starts from (and is distilled from) a CLIP that has learnt something,
never from random weights. It is an HF `CLIPModel` (a small ViT on 48-pixel frames in patches of 6, so that an
object spans several patches) saved with `save_pretrained`, with a CLIP BPE tokenizer whose vocabulary holds the
corpus's words, so `S2CAModel.from_clip(folder)` and `S2CAProcessor.from_clip(folder)` take it like any CLIP
checkpoint.

Like OpenAI CLIP, it knows more than fine-tuning will show: the stills (the corpus's "frames" split) come from a
wider world than the clips (more colours and shapes, three sizes, objects anywhere, captions that say where each
object is), and no augmentation moves them, so position is learnt, not washed out. Nothing about motion is learnt
here; that is left to fine-tuning on the clips. The corpus's open_vocab split measures what fine-tuning keeps of
the colours and shapes only the stills show.
"""

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer, get_cosine_schedule_with_warmup

from s2ca_hf.clip_bpe import byte_symbols, save_bpe_files
from s2ca_hf.data import load_corpus
from s2ca_hf.utils import ArgumentParser, first_paragraph


MARKER = "pretrain_clip.json"  # written last: its presence marks a complete checkpoint made with these arguments
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class PretrainArguments:
    data_dir: str = "data/synthetic"
    output_dir: str = "runs/clip-synthetic"
    image_size: int = 48
    patch_size: int = 6
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    projection_dim: int = 128
    max_text_length: int = 32
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    seed: int = 0


def write_word_tokenizer(folder: str, texts: list[str]) -> None:
    """A CLIP BPE vocabulary in which every word of `texts` is built by merges (usually into one token), on top of
    every byte, so that any text still tokenises."""
    vocab = byte_symbols()
    merges: list[tuple[str, str]] = []
    known = set(vocab)
    words = sorted({word for text in texts for word in re.findall(r"[a-z]+", text.lower())})
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merged = left + right
            if merged not in known:
                merges.append((left, right))
                vocab.append(merged)
                known.add(merged)
            left = merged
    save_bpe_files(folder, vocab, merges)


def load_images(paths: list[str], size: int) -> torch.Tensor:
    """`(N, 3, size, size)` CLIP-normalised images."""
    from PIL import Image

    mean = torch.tensor(OPENAI_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(3, 1, 1)
    images = []
    for path in paths:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        images.append((torch.from_numpy(array).permute(2, 0, 1) - mean) / std)
    return torch.stack(images)


def pretrain_clip(args: PretrainArguments, log=print) -> str:
    """Trains the small CLIP and saves it (model, tokenizer, image processor) into `args.output_dir`."""
    torch.manual_seed(args.seed)
    frames = load_corpus("synthetic", args.data_dir, "frames")
    train = load_corpus("synthetic", args.data_dir, "train")
    staging = tempfile.mkdtemp(prefix=".clip-", dir=os.path.dirname(os.path.abspath(args.output_dir)) or ".")
    try:
        write_word_tokenizer(staging, list(frames["text"]) + list(train["text"]))
        tokenizer = CLIPTokenizer.from_pretrained(staging)
        text = tokenizer(list(frames["text"]), padding="max_length", truncation=True, max_length=args.max_text_length)
        input_ids = torch.tensor(text["input_ids"])
        attention_mask = torch.tensor(text["attention_mask"])
        images = load_images(list(frames["video_path"]), args.image_size)
        tower = dict(hidden_size=args.hidden_size, num_hidden_layers=args.num_layers)
        tower |= dict(num_attention_heads=args.num_heads, intermediate_size=4 * args.hidden_size)
        config = CLIPConfig(
            text_config=dict(
                **tower,
                vocab_size=len(tokenizer),
                max_position_embeddings=args.max_text_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            ),
            vision_config=dict(**tower, image_size=args.image_size, patch_size=args.patch_size),
            projection_dim=args.projection_dim,
        )
        model = CLIPModel(config).train()
        steps_per_epoch = math.ceil(len(images) / args.batch_size)
        total = steps_per_epoch * args.epochs
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
        scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, total // 10), total)
        generator = torch.Generator().manual_seed(args.seed)
        start, step = time.time(), 0
        for epoch in range(args.epochs):
            order = torch.randperm(len(images), generator=generator)
            for first in range(0, len(images), args.batch_size):
                rows = order[first : first + args.batch_size]
                pixels = images[rows]
                loss = model(
                    input_ids=input_ids[rows],
                    attention_mask=attention_mask[rows],
                    pixel_values=pixels,
                    return_loss=True,
                ).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                step += 1
            if epoch % max(1, args.epochs // 6) == 0 or epoch == args.epochs - 1:
                log(f"epoch {epoch + 1}/{args.epochs}, loss {loss.item():.3f}, {time.time() - start:.0f}s")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        CLIPImageProcessor(
            size={"shortest_edge": args.image_size},
            crop_size={"height": args.image_size, "width": args.image_size},
            image_mean=OPENAI_MEAN,
            image_std=OPENAI_STD,
        ).save_pretrained(staging)
        with open(os.path.join(staging, MARKER), "w") as f:
            json.dump({"arguments": asdict(args), "steps": step, "final_loss": loss.item()}, f, indent=1)
        if os.path.isdir(args.output_dir):
            shutil.rmtree(args.output_dir)
        os.replace(staging, args.output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return args.output_dir


def ensure_pretrained_clip(args: PretrainArguments, log=print) -> str:
    """The checkpoint in `args.output_dir` if it was made with these arguments, else trains it (on first use)."""
    marker = os.path.join(args.output_dir, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            made_with = json.load(f).get("arguments", {})
        if made_with == asdict(args):
            return args.output_dir
        log(f"{args.output_dir} was pretrained with other arguments; training it again.")
    log(f"Pretraining a small CLIP on the frames of {args.data_dir} (first use; cached in {args.output_dir}).")
    return pretrain_clip(args, log=log)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    for name, value in asdict(PretrainArguments()).items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    args = PretrainArguments(**vars(parser.parse_args(argv)))
    start = time.time()
    path = ensure_pretrained_clip(args)
    print(f"CLIP saved to {path} ({time.time() - start:.0f}s).")


if __name__ == "__main__":
    main()
