"""Train S2CA: `accelerate launch training/train.py [--config training/configs/<recipe>.yaml] [--key value ...]`.

With no argument it trains on the built-in synthetic corpus (generated on first use) from a small CLIP pretrained on
that corpus's frames (`training/pretrain_clip.py`, also made on first use), evaluates on the test and compositional
splits and saves the model to `runs/synthetic/final`. On a real corpus:

    accelerate launch training/train.py --config training/configs/msrvtt.yaml --data_dir data/msrvtt \
        --video_dir data/msrvtt/videos --clip openai/clip-vit-base-patch32

Arguments are three dataclasses (model, data, training) filled from the YAML recipe, then from `--key value`
overrides (`train_arguments.py`); names follow `transformers.TrainingArguments` where it has one. The loss is the
S2CA loss over the global batch (`losses.py`) plus the ATR distillation from a frozen CLIP teacher (`distill.py`).
A corpus whose training rows carry minimal-pair groups (`group`) or false captions (`foils`) gets batches that hold
each group together (`s2ca_hf.data.GroupBatchSampler`) and its foils as extra negative texts (recipe fields
`group_batches`, `use_foils`).
Checkpoints are written with `accelerator.save_state` under `<output_dir>/checkpoints/checkpoint-<step>`
(`run_folder.py`: staged, then renamed, so a crash never leaves a half-written one) and
`--resume_from_checkpoint latest|PATH` continues exactly where one was written.
"""

import contextlib
import json
import math
import os
import time
from dataclasses import asdict

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from distill import ATRHeads, ATRLoss, S2CATrainingModule, Teacher, load_teacher
from losses import LOSS_KEYS, S2CALoss
from results import metrics_table
from run_folder import (
    RunLock,
    checkpoint_to_resume,
    log_step,
    prepare_output_dir,
    save_checkpoint,
    save_model,
    truncate_history,
)
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from train_arguments import DataArguments, ModelArguments, TrainingArguments, parse_arguments
from transformers import CLIPConfig, get_scheduler

from s2ca_hf import S2CAModel, S2CAProcessor
from s2ca_hf.data import GroupBatchSampler, VideoTextCollator, build_frame_cache, load_corpus, max_positives
from s2ca_hf.retrieval.evaluation import evaluate_corpus
from s2ca_hf.utils import quiet_weight_loading


CLIP_PREFIXES = ("student.text_model.", "student.vision_model.", "student.text_projection.")
CLIP_PREFIXES += ("student.visual_projection.", "student.logit_scale")


def parameter_groups(module: torch.nn.Module, args: TrainingArguments) -> list[dict]:
    """CLIP's weights at lr x clip_lr_scale, new modules at lr; no weight decay on biases, norms (every 1-d
    parameter, `logit_scale` included) and the concept prototypes."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            no_decay = parameter.ndim < 2 or name.endswith("prototypes")
            groups.setdefault((name.startswith(CLIP_PREFIXES), no_decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": args.learning_rate * (args.clip_lr_scale if is_clip else 1.0),
            "weight_decay": 0.0 if no_decay else args.weight_decay,
        }
        for (is_clip, no_decay), params in sorted(groups.items())
    ]


def step_metrics_table(results: dict[str, dict], step: int) -> str:
    """The eval splits' metrics as the training log prints them: fewer columns and digits than a results file."""
    table = metrics_table(results, "split", keys=("R@1", "R@5", "R@10", "MdR", "MnR"), digits=1)
    return f"\nRetrieval metrics at step {step}:\n{table}"


def evaluate(
    accelerator, module, processor, eval_sets: dict, batch_size: int, progress: bool = True
) -> dict[str, dict]:
    """Every eval split on the main process with `evaluate_corpus` (encode once, score by blocks)."""
    results = {}
    if accelerator.is_main_process:
        student = accelerator.unwrap_model(module).student
        with accelerator.autocast():
            for split, (dataset, cache) in eval_sets.items():
                out = evaluate_corpus(
                    student, processor, dataset, frame_cache=cache, batch_size=batch_size, progress=progress
                )
                results[split] = out["metrics"]
        module.train()
    accelerator.wait_for_everyone()
    return results


def build_distillation(
    model_args: ModelArguments, student: S2CAModel, clip: str, max_positions: int, rank: int = 0, world: int = 1
) -> tuple[Teacher | None, ATRHeads | None, ATRLoss | None]:
    """The frozen teacher, the heads the enabled terms need, and the loss; all `None` when every term is off (then
    training is the plain S2CA loss)."""
    weights = {
        t: getattr(model_args, f"{t}_weight") * getattr(model_args, t) for t in ("align", "transform", "reconstruct")
    }
    if not any(weights.values()):
        return None, None, None
    teacher = load_teacher(model_args.teacher or clip, cache_videos=model_args.cache_teacher_outputs)
    if teacher.clip.config.text_config.vocab_size != student.config.text_config.vocab_size:
        raise ValueError(
            f"Recipe field `teacher` ({model_args.teacher}) has another tokenizer than `clip` ({clip}): "
            "Reconstruct compares their text tokens position by position."
        )
    heads = None
    if weights["transform"] or weights["reconstruct"]:
        heads = ATRHeads(
            student.config.projection_dim,
            teacher.dim,
            max_positions,
            bool(weights["reconstruct"]),
            model_args.reconstruct_mask_ratio,
        )
    return teacher, heads, ATRLoss(weights["align"], weights["transform"], weights["reconstruct"], rank, world)


def training_loss(
    module,
    batch: dict,
    video_index,
    s2ca_loss: S2CALoss,
    teacher: Teacher | None = None,
    atr_loss: ATRLoss | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(what to back-propagate, the global loss value to log): the S2CA loss over the global batch, plus L_ATR.

    The batch's foils and the videos each text fits (`LOSS_KEYS`) go to the S2CA loss alone, which encodes the foils
    with the student's text tower: the student's forward, its ATR heads and the teacher see the captions and videos
    only."""
    for_the_loss = {key: batch.pop(key) for key in LOSS_KEYS if key in batch}
    result = module(**batch)
    student = getattr(module, "module", module).student  # through DDP's wrapper
    loss = s2ca_loss(student, result.outputs, video_index, **for_the_loss)
    if teacher is None:
        return loss.loss, loss.value
    atr = atr_loss(student, result, teacher(**batch, video_index=video_index))
    return loss.loss + atr.loss, loss.value + atr.value


def own_data_sources(data_args: DataArguments) -> dict[str, str] | None:
    """train / val / test -> where your own pairs are (a file, or a split of `dataset_name`); None for a corpus."""
    if data_args.train_file is None and data_args.dataset_name is None:
        return None
    if data_args.train_file is not None and data_args.dataset_name is not None:
        raise ValueError("Give --train_file (with --validation_file, --test_file) or --dataset_name, not both.")
    if data_args.train_file is not None:
        files = {"train": data_args.train_file, "val": data_args.validation_file, "test": data_args.test_file}
        return {split: path for split, path in files.items() if path is not None}
    from datasets import get_dataset_split_names, load_from_disk

    name = data_args.dataset_name
    if os.path.isfile(os.path.join(name, "dataset_dict.json")):
        available = list(load_from_disk(name).keys())
    else:
        available = get_dataset_split_names(name, data_args.dataset_config_name)
    wanted = {"train": "train", "val": "validation", "test": "test"}
    if "train" not in available:
        raise ValueError(f"--dataset_name {name} has no train split (its splits: {available}).")
    return {split: hub_split for split, hub_split in wanted.items() if hub_split in available}


def load_own_split(data_args: DataArguments, sources: dict[str, str], split: str):
    from s2ca_hf.data import load_pairs

    columns = dict(
        video_column=data_args.video_column, caption_column=data_args.caption_column, video_dir=data_args.video_dir
    )
    if data_args.dataset_name is not None:
        return load_pairs(
            data_args.dataset_name, sources[split], dataset_config_name=data_args.dataset_config_name, **columns
        )
    return load_pairs(sources[split], **columns)


def synthetic_split_sizes(data_args: DataArguments, log) -> dict:
    """The evaluation split sizes to generate the synthetic corpus with. They only apply when the corpus is made: an
    existing corpus keeps its own, and a difference is logged (the recipe's sizes suit its number of clips)."""
    from s2ca_hf.data.synthetic import META_JSON

    sizes = {
        f"{split}_size": getattr(data_args, f"synthetic_{split}_size")
        for split in ("val", "test", "compositional", "open_vocab")
        if getattr(data_args, f"synthetic_{split}_size") is not None
    }
    meta_path = os.path.join(data_args.data_dir, META_JSON)
    if not os.path.isfile(meta_path):
        return sizes
    with open(meta_path) as f:
        existing = json.load(f).get("arguments", {})
    different = {k: (existing.get(k), v) for k, v in sizes.items() if existing.get(k) != v}
    if different:
        log(f"{data_args.data_dir} was generated with other split sizes (existing, asked: {different}); using it.")
    return {}


def main(argv: list[str] | None = None) -> dict:
    started = time.time()
    quiet_weight_loading()
    # 1. Arguments: recipe, then overrides; validated field by field.
    model_args, data_args, args, recipe_name = parse_arguments(argv)
    output_dir = args.output_dir
    cuda = torch.cuda.is_available() and not args.use_cpu
    mixed_precision = (
        ("bf16" if cuda and torch.cuda.is_bf16_supported() else "no")
        if args.mixed_precision == "auto"
        else args.mixed_precision
    )
    trackers = {"auto": [], "none": []}.get(args.report_to, args.report_to.split(","))
    if args.report_to == "auto":
        from accelerate.utils import is_tensorboard_available

        trackers = ["tensorboard"] if is_tensorboard_available() else []

    # 2. Accelerator: cpu=True on a CPU-only machine, else a 2-process launch silently runs 2 independent copies.
    accelerator = Accelerator(
        cpu=not cuda,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=trackers or None,
        project_dir=output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    # One run per folder: the main process holds the lock until the run ends, however it ends (a second run stops
    # here, before deleting anything).
    os.makedirs(output_dir, exist_ok=True)
    with RunLock(output_dir) if accelerator.is_main_process else contextlib.nullcontext():
        return run(accelerator, model_args, data_args, args, recipe_name, mixed_precision, started)


def run(accelerator, model_args, data_args, args, recipe_name: str, mixed_precision: str, started: float) -> dict:
    """The run itself (the output folder, then steps 3 to 8), under the run's lock."""
    output_dir = args.output_dir
    rank, world = accelerator.process_index, accelerator.num_processes
    log = accelerator.print
    set_seed(args.seed)
    # Every process checks before the main one deletes anything, so that a refusal stops all of them.
    if not args.overwrite_output_dir:
        prepare_output_dir(output_dir, args.resume_from_checkpoint, overwrite=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and args.overwrite_output_dir:
        prepare_output_dir(output_dir, args.resume_from_checkpoint, overwrite=True)
    accelerator.wait_for_everyone()
    os.makedirs(output_dir, exist_ok=True)

    # 3. Corpus, CLIP and processor. The synthetic corpus and its small CLIP are made on first use (main first).
    own = own_data_sources(data_args)
    if own is not None:  # your own pairs: evaluated on the splits given, selected on val if there is one
        data_args.eval_splits = [split for split in ("val", "test") if split in own]
        data_args.selection_split = "val" if "val" in own else "test"
        if not data_args.eval_splits and args.eval_strategy != "no":
            log("No validation or test pairs given (--validation_file, --test_file): the run is not evaluated.")
            args.eval_strategy, args.early_stopping_patience = "no", 0
    protocol = dict(item.split("=", 1) for item in data_args.protocol)
    if data_args.corpus == "synthetic":
        protocol["num_videos"] = data_args.synthetic_num_videos
        protocol.update(synthetic_split_sizes(data_args, log))
    with accelerator.main_process_first():
        if own is not None:
            train_set = load_own_split(data_args, own, "train")
        else:
            train_set = load_corpus(
                data_args.corpus, data_args.data_dir, data_args.train_split, video_dir=data_args.video_dir, **protocol
            )
        clip = model_args.clip
        if clip is None:
            if own is not None or data_args.corpus != "synthetic":
                raise ValueError(
                    "Recipe field `clip` is required for a real corpus (e.g. openai/clip-vit-base-patch32)."
                )
            from pretrain_clip import PretrainArguments, ensure_pretrained_clip

            pretrain = PretrainArguments(data_dir=data_args.data_dir, output_dir=model_args.pretrained_clip_dir)
            clip = ensure_pretrained_clip(pretrain, log=log)
    if os.path.sep in clip and not os.path.isdir(clip):  # a path, not a Hub id: say so instead of a Hub error
        raise FileNotFoundError(f"--clip (or --model_name_or_path) {clip}: no such folder.")
    clip_config = CLIPConfig.from_pretrained(clip)
    image_size = clip_config.vision_config.image_size
    processor = S2CAProcessor.from_clip(
        clip,
        max_text_length=data_args.max_words,
        max_frames=data_args.max_frames,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    eval_protocol = {k: v for k, v in protocol.items() if k not in ("train_csv", "expand_sentences")}
    eval_sets, train_cache = {}, None
    with accelerator.main_process_first():
        cache_kwargs = dict(
            cache_dir=data_args.frame_cache_dir,
            num_proc=data_args.preprocessing_num_workers,
            on_error=data_args.on_error,
        )
        if data_args.frame_cache:
            train_cache = build_frame_cache(train_set, processor, **cache_kwargs)
            train_set = train_cache.filter_corpus(train_set)
        for split in data_args.eval_splits:
            if own is not None:
                dataset = load_own_split(data_args, own, split)
            else:
                dataset = load_corpus(
                    data_args.corpus, data_args.data_dir, split, video_dir=data_args.video_dir, **eval_protocol
                )
            eval_sets[split] = (
                dataset,
                build_frame_cache(dataset, processor, **cache_kwargs) if data_args.frame_cache else None,
            )

    # 4. Student, ATR heads and teacher. The heads share the student's DDP wrapper; the teacher is never wrapped.
    student = S2CAModel.from_clip(clip, num_frames=data_args.max_frames, **model_args.model_config)
    if model_args.gradient_checkpointing:
        student.gradient_checkpointing_enable()
    max_positions = max(data_args.max_words, data_args.max_frames)
    teacher, heads, atr_loss = build_distillation(model_args, student, clip, max_positions, rank, world)
    teacher = teacher.to(accelerator.device) if teacher is not None else None
    module = S2CATrainingModule(student, heads).train()
    s2ca_loss = S2CALoss(rank=rank, world_size=world)

    # 5. Data loader, optimizer (parameter groups), schedule; `prepare` shards the data and wraps the module.
    collator = VideoTextCollator(
        processor,
        frame_cache=train_cache,
        on_error=data_args.on_error,
        return_video_index=True,
        seed=args.seed,
        return_foils=data_args.use_foils,
        # Texts that fit other videos of the batch (partial captions) are not scored as their negatives.
        positives_width=max_positives(train_set) or None,
    )
    group_sampler = None
    if data_args.group_batches and "group" in train_set.column_names:
        # Global batches of whole groups, which accelerate cuts into the processes' slices; full ones only.
        group_sampler = GroupBatchSampler(
            train_set["group"], train_set["video_index"], args.per_device_train_batch_size, world, seed=args.seed
        )
        batching = {"batch_sampler": group_sampler}
    else:
        batching = {
            "batch_size": args.per_device_train_batch_size,
            "shuffle": True,
            "drop_last": True,  # every process must gather the same number of features
            "generator": torch.Generator().manual_seed(args.seed),
        }
    train_loader = DataLoader(train_set, collate_fn=collator, num_workers=args.dataloader_num_workers, **batching)
    optimizer = torch.optim.AdamW(
        parameter_groups(module, args),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    module, optimizer, train_loader = accelerator.prepare(module, optimizer, train_loader)
    if len(train_loader) == 0:
        raise ValueError(
            f"{data_args.corpus} {data_args.train_split} has {len(train_set)} pairs: fewer than one batch of "
            f"{args.per_device_train_batch_size} x {world} processes; lower per_device_train_batch_size."
        )
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    # The prepared scheduler steps once per process at each optimizer step (accelerate's convention): scale both.
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps) * world,
        num_training_steps=total_steps * world,
    )
    scheduler = accelerator.prepare(scheduler)
    unwrapped = accelerator.unwrap_model(module)

    # 6. Resume: weights, optimizer, scheduler, RNG and the position in the data, from a complete checkpoint.
    state = {
        "global_step": 0,
        "epoch": 0,
        "epoch_batches": 0,
        "best_metric": None,
        "best_step": None,
        "evaluations": [],
    }
    history_path = os.path.join(output_dir, "log_history.jsonl")
    if args.resume_from_checkpoint:
        path = checkpoint_to_resume(output_dir, args.resume_from_checkpoint)
        accelerator.load_state(path)
        with open(os.path.join(path, "trainer_state.json")) as f:
            state = json.load(f)
        log(
            f"Resumed from {path}: step {state['global_step']}, epoch {state['epoch']}, batch {state['epoch_batches']}"
        )
    if accelerator.is_main_process:
        truncate_history(history_path, state["global_step"])
    accelerator.init_trackers(
        recipe_name, config={k: str(v) for a in (model_args, data_args, args) for k, v in asdict(a).items()}
    )
    if data_args.selection_split == "test" and data_args.eval_splits:
        log("Selecting the best checkpoint on the test split, as CLIP4Clip and its successors did (no val split).")
    log(
        f"{len(train_set)} training pairs, {world} process(es) x {args.per_device_train_batch_size} x "
        f"{args.gradient_accumulation_steps} accumulation = global batch "
        f"{world * args.per_device_train_batch_size * args.gradient_accumulation_steps}; {total_steps} steps, "
        f"mixed precision {mixed_precision}, ATR {atr_loss.weights if teacher else 'off'}, batches "
        f"{'of whole minimal-pair groups' if group_sampler else 'shuffled'}, foils "
        f"{'on' if data_args.use_foils and 'foils' in train_set.column_names else 'off'}."
    )

    # 7. The loop: accumulate -> forward -> global loss (+ ATR) -> backward -> clip -> step; log, evaluate, save.
    global_step = state["global_step"]
    bar = tqdm(
        total=total_steps,
        initial=global_step,
        disable=args.disable_tqdm or not accelerator.is_local_main_process,
        unit="step",
    )
    videos, clock, running = 0, time.time(), []

    def run_evaluation():
        results = evaluate(
            accelerator, module, processor, eval_sets, args.per_device_eval_batch_size, progress=not args.disable_tqdm
        )
        if accelerator.is_main_process and results:
            log(step_metrics_table(results, global_step))
            direction, _, metric = args.metric_for_best_model.partition("/")
            value = results[data_args.selection_split][direction][metric]
            best = state["best_metric"]
            if best is None or (value > best if metric.startswith("R@") else value < best):
                state["best_metric"], state["best_step"] = value, global_step
            state["evaluations"].append({"step": global_step, "metrics": results})
            accelerator.log(
                {f"eval/{s}/{d}/{m}": v for s, r in results.items() for d, ms in r.items() for m, v in ms.items()},
                step=global_step,
            )
        # Early stopping (HF's EarlyStoppingCallback): this many evaluations in a row without a better value.
        stale = sum(e["step"] > (state["best_step"] or 0) for e in state["evaluations"])
        stalled = bool(args.early_stopping_patience) and stale >= args.early_stopping_patience
        # Everyone learns whether this was the best and whether to stop, so that save_model's barrier and the end
        # of the loop are reached by all processes.
        flags = torch.tensor([float(state["best_step"] == global_step), float(stalled)], device=accelerator.device)
        best, stop = accelerator.gather(flags)[:2].tolist()
        if best:
            save_model(accelerator, module, processor, os.path.join(output_dir, "best"))
        if stop:
            state["stopped_early"] = global_step
            log(f"Stopping early at step {global_step}: no better {args.metric_for_best_model} on "
                f"{data_args.selection_split} in {args.early_stopping_patience} evaluations (best at step "
                f"{state['best_step']}).")  # fmt: skip

    for epoch in range(state["epoch"], num_epochs):
        train_loader.set_epoch(epoch)
        collator.set_epoch(epoch)  # the foil draws
        if group_sampler is not None:  # accelerate's per-process wrapper does not pass set_epoch on to it
            group_sampler.set_epoch(epoch)
        skip = state["epoch_batches"] if epoch == state["epoch"] else 0
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        state["epoch"], state["epoch_batches"] = epoch, skip
        for batch in loader:
            if not batch:
                raise RuntimeError("A whole training batch failed to decode; use the frame cache with on_error=skip.")
            # The random draws of a step (Gumbel noise, Reconstruct's masks) follow from (seed, position, process), so
            # a resumed run draws exactly what the uninterrupted one did.
            torch.manual_seed(args.seed + 1_000_003 * (epoch * len(train_loader) + state["epoch_batches"]) + rank)
            state["epoch_batches"] += 1
            with accelerator.accumulate(module):
                video_index = batch.pop("video_index")
                with accelerator.autocast():
                    total, value = training_loss(module, batch, video_index, s2ca_loss, teacher, atr_loss)
                if accelerator.gather(torch.isfinite(total.detach()).logical_not().reshape(1)).any():
                    raise FloatingPointError(
                        f"The training loss is NaN or infinite at step {global_step + 1} (epoch {epoch}): the model "
                        "is broken from here on, so the run stops. Causes: a learning rate or weight_decay too large, "
                        f"or a damaged checkpoint resumed. Complete checkpoints: {output_dir}/checkpoints."
                    )
                accelerator.backward(total)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(module.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            running.append(float(value))
            videos += batch["pixel_values_videos"].shape[0] * world
            if not accelerator.sync_gradients:
                continue
            with torch.no_grad():  # the logit_scale clamp at ln 100 (the forward clamps too; this keeps Adam honest)
                unwrapped.student.logit_scale.clamp_(max=unwrapped.student.config.logit_scale_max)
            global_step += 1
            state["global_step"] = global_step
            record = {
                "step": global_step,
                "loss": sum(running) / len(running),
                "lr": max(scheduler.get_last_lr()),
            }
            running = []
            log_step(accelerator, history_path, record, report=global_step % args.logging_steps == 0)
            bar.update(1)
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                lr=f"{record['lr']:.1e}",
                videos_s=f"{videos / (time.time() - clock):.1f}",
            )
            if args.eval_strategy == "steps" and global_step % args.eval_steps == 0:
                run_evaluation()
            if args.save_steps and global_step % args.save_steps == 0:
                save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
            if global_step >= total_steps or state.get("stopped_early"):
                break
        if state["epoch_batches"] >= len(train_loader):
            state["epoch"], state["epoch_batches"] = epoch + 1, 0
        finished = global_step >= total_steps or state.get("stopped_early")
        if args.eval_strategy == "epoch" or (finished and args.eval_strategy != "no"):
            if not state["evaluations"] or state["evaluations"][-1]["step"] != global_step:
                run_evaluation()
        if not (args.save_steps and global_step % args.save_steps == 0):
            save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
        if global_step >= total_steps or state.get("stopped_early"):
            break
    bar.close()

    # 8. The final model (student + processor), the results file and the summary.
    final_dir = os.path.join(output_dir, "final")
    save_model(accelerator, module, processor, final_dir)
    summary = {
        "recipe": recipe_name,
        "final_model": final_dir,
        "best_model": os.path.join(output_dir, "best") if state["best_step"] is not None else None,
        "best_step": state["best_step"],
        "selection": f"{data_args.selection_split} {args.metric_for_best_model}",
        "global_step": global_step,
        "stopped_early": state.get("stopped_early"),
        "final_metrics": state["evaluations"][-1]["metrics"] if state["evaluations"] else None,
        "evaluations": state["evaluations"],
        "seconds": round(time.time() - started, 1),
    }
    if accelerator.is_main_process:
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump(summary, f, indent=1)
        log(
            f"Done in {summary['seconds'] / 60:.1f} min: model in {final_dir}"
            + (
                f", best (step {state['best_step']}, {summary['selection']} = {state['best_metric']:.1f}) in "
                f"{summary['best_model']}"
                if summary["best_model"]
                else ""
            )
            + f"; results in {output_dir}/eval_results.json."
        )
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()
