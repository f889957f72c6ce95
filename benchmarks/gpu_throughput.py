"""Training-step and encoding throughput of S2CA against the CLIP4Clip-meanP step, side by side in one process.

    python benchmarks/gpu_throughput.py                      # on a GPU: ViT-B/32 sizes, bf16, batches 64/128/256
    python benchmarks/gpu_throughput.py --tiny --device cpu  # a check of the script itself at tiny sizes

Random weights and inputs (throughput does not depend on them). Each variant runs `--warmup` untimed steps, then
`--steps` timed ones; a step is forward (local-batch loss), backward and a fused AdamW update under bf16 autocast.
`+atr` adds train.py's Align-Transform-Reconstruct distillation (frozen random CLIP teacher, ATR heads); the other
S2CA variants are the step without ATR ("S2CA without ATR").
The reference is the same package with `use_concepts=False, temporal_module="mean"`: CLIP4Clip-meanP. Every ratio is
measured against the reference of the same batch size in the same run (docs/benchmarks.md §3: ratios, not absolute
times).
Effective TFLOP/s counts the FLOPs of one step with `torch.utils.flop_counter` and divides by the measured time.

Writes `benchmarks/results/gpu_throughput-<device name>.json` and `.md` (machine, versions, date, exact command).
"""

import datetime
import gc
import importlib
import json
import os
import platform
import re
import sys
import time

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from s2ca_hf import S2CAConfig, S2CAModel
from s2ca_hf.utils import ArgumentParser, first_paragraph


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TRAINING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training")


def load_training_module(name: str):
    """training/<name>.py, imported by name (the training scripts import each other so: `from losses import ...`)."""
    if TRAINING not in sys.path:
        sys.path.insert(0, TRAINING)
    return importlib.import_module(name)


def model_config(tiny: bool, **overrides) -> S2CAConfig:
    if not tiny:
        return S2CAConfig(**overrides)  # the defaults are ViT-B/32 + S2CA (docs/method.md)
    from s2ca_hf.tiny import tiny_config

    return tiny_config(**overrides)


def make_batch(config: S2CAConfig, batch: int, frames: int, words: int, device: str) -> dict:
    vision, text = config.vision_config, config.text_config
    input_ids = torch.randint(0, text.vocab_size - 2, (batch, words), device=device)
    input_ids[:, 0] = text.bos_token_id
    input_ids[:, -1] = text.eos_token_id
    pixels = torch.randn(batch, frames, 3, vision.image_size, vision.image_size, device=device)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values_videos": pixels,
        "frame_mask": torch.ones(batch, frames, dtype=torch.long, device=device),
    }


def autocast(device: str):
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


class Step:
    """One training step: forward (the loss of the local batch), backward and a fused AdamW update, under bf16
    autocast. With `atr`, the step is train.py's: the S2CA loss plus L_ATR from a frozen random CLIP teacher of the
    student's sizes, whose video tower runs every step (train.py caches it per video after the first epoch, so this is
    the first epoch's cost, the upper bound)."""

    def __init__(self, config: S2CAConfig, device: str, attn: str, compile_model: bool, atr: bool, words: int):
        self.device = device
        self.model = S2CAModel._from_config(config, attn_implementation=attn).to(device).train()
        self.teacher = None
        trainable = self.model
        if atr:
            from transformers import CLIPConfig, CLIPModel

            distill, losses = load_training_module("distill"), load_training_module("losses")
            clip_config = CLIPConfig(
                text_config=config.text_config.to_dict(),
                vision_config=config.vision_config.to_dict(),
                projection_dim=config.projection_dim,
            )
            clip_config._attn_implementation = attn
            self.teacher = distill.Teacher(CLIPModel(clip_config).to(device), cache_videos=False)
            heads = distill.ATRHeads(config.projection_dim, self.teacher.dim, max(words, config.num_frames), True)
            trainable = distill.S2CATrainingModule(self.model, heads.to(device))
            self.s2ca_loss, self.atr_loss = losses.S2CALoss(), distill.ATRLoss(1.0, 1.0, 1.0)
        self.trainable = trainable
        self.optimizer = torch.optim.AdamW(trainable.parameters(), lr=1e-6, fused=device.startswith("cuda"))
        self.forward = torch.compile(trainable) if compile_model else trainable

    def __call__(self, batch: dict, compiled: bool = True) -> torch.Tensor:
        forward = self.forward if compiled else self.trainable
        with autocast(self.device):
            if self.teacher is None:
                loss = forward(**batch, return_loss=True).loss
            else:
                result = forward(**batch)
                loss = self.s2ca_loss(self.model, result.outputs).loss
                loss = loss + self.atr_loss(self.model, result, self.teacher(**batch)).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_training(name: str, config: S2CAConfig, args, batch_size: int) -> dict:
    device = args.device
    attn = "eager" if "+eager" in name else args.attn
    step = Step(config, device, attn, "+compile" in name, "+atr" in name, args.words)
    batch = make_batch(config, batch_size, args.frames, args.words, device)
    for _ in range(args.warmup):
        step(batch)
    with FlopCounterMode(display=False) as counter:
        step(batch, compiled=False)  # counted uncompiled: the same arithmetic
    flops = counter.get_total_flops()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    result = {
        "variant": name,
        "batch": batch_size,
        "videos_per_s": batch_size * args.steps / seconds,
        "step_ms": 1000 * seconds / args.steps,
        "tflops_effective": flops * args.steps / seconds / 1e12,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
        "final_loss": float(loss.detach()),
    }
    del step, batch
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


@torch.inference_mode()
def measure_encoding(name: str, config: S2CAConfig, args) -> dict:
    device = args.device
    model = S2CAModel._from_config(config, attn_implementation=args.attn).to(device).eval()
    batch = make_batch(config, args.encode_batch, args.frames, args.words, device)
    pixels, frame_mask = batch["pixel_values_videos"], batch["frame_mask"]
    with autocast(device):
        for _ in range(args.warmup):
            model.get_video_features(pixels, frame_mask)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            model.get_video_features(pixels, frame_mask)
        synchronize(device)
    seconds = time.perf_counter() - start
    del model
    gc.collect()
    return {"variant": name, "batch": args.encode_batch, "videos_per_s": args.encode_batch * args.steps / seconds}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def markdown(report: dict) -> str:
    lines = [
        f"# Training-step throughput on {report['device_name']}",
        "",
        f"{report['date']} · torch {report['versions']['torch']} · transformers {report['versions']['transformers']}"
        f" · {'tiny sizes (a check of the script, not a measurement)' if report['tiny'] else 'ViT-B/32 sizes'}"
        f" · {report['frames']} frames · bf16 autocast · random weights",
        "",
        "| variant | batch | videos/s | ratio to meanP | step ms | effective TFLOP/s | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["training"]:
        peak = "–" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        lines.append(
            f"| {row['variant']} | {row['batch']} | {row['videos_per_s']:.1f} | {row['ratio_to_meanp']:.2f} | "
            f"{row['step_ms']:.1f} | {row['tflops_effective']:.2f} | {peak} |"
        )
    lines += ["", "| encoding | batch | videos/s | ratio to CLIP (meanP) |", "|---|---|---|---|"]
    for row in report["encoding"]:
        lines.append(f"| {row['variant']} | {row['batch']} | {row['videos_per_s']:.1f} | {row['ratio_to_clip']:.2f} |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


VARIANTS = {
    # name: config overrides (on top of the S2CA defaults)
    "clip4clip-meanP": {"use_concepts": False, "temporal_module": "mean"},
    "clip4clip-meanP+compile": {"use_concepts": False, "temporal_module": "mean"},
    "s2ca-patches": {},
    "s2ca-patches+compile": {},
    "s2ca-patches+eager-attention": {},
    "s2ca-patches+atr": {},
    "s2ca-soft": {"allocation": "soft", "concept_tracks": False, "late_interaction_weight": 0.0},
}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--encode_batch", type=int, default=512)
    parser.add_argument("--attn", default="sdpa", help="attention of the CLIP towers (sdpa, eager, flash_attention_2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tiny", action="store_true", help="tiny model sizes: check the script, measure nothing")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    training = []
    for batch_size in args.batch_sizes:
        reference = None
        for name in args.variants:
            config = model_config(args.tiny, **VARIANTS[name])
            try:
                row = measure_training(name, config, args, batch_size)
            except torch.OutOfMemoryError:
                print(f"{name} at batch {batch_size}: out of memory", flush=True)
                gc.collect()
                torch.cuda.empty_cache()  # give the next variant the memory this one's failed step held
                continue
            if name == "clip4clip-meanP":
                reference = row["videos_per_s"]
            row["ratio_to_meanp"] = row["videos_per_s"] / reference if reference else float("nan")
            print(json.dumps(row), flush=True)
            training.append(row)

    encoding = []
    clip_rate = None
    for name, overrides in (("clip (meanP)", VARIANTS["clip4clip-meanP"]), ("s2ca", {})):
        row = measure_encoding(name, model_config(args.tiny, **overrides), args)
        clip_rate = clip_rate or row["videos_per_s"]
        row["ratio_to_clip"] = row["videos_per_s"] / clip_rate
        print(json.dumps(row), flush=True)
        encoding.append(row)

    report = {
        "device": args.device,
        "device_name": device_name(args.device),
        "tiny": args.tiny,
        "frames": args.frames,
        "training": training,
        "encoding": encoding,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version},
        "command": " ".join(["python benchmarks/gpu_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "gpu_throughput-" + re.sub(r"[^A-Za-z0-9]+", "-", report["device_name"]).strip("-"))
    if args.tiny:
        stem += "-tiny-check"
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
