"""A training run's output folder: checkpoints (staged, then renamed, so a crash never leaves a half-written one),
the saved models, the per-step log history, and the refusal to mix two runs in one folder.

    <output_dir>/checkpoints/checkpoint-<step>/   accelerator.save_state + trainer_state.json
    <output_dir>/best/, final/                    the student and its processor (save_pretrained)
    <output_dir>/log_history.jsonl                one line per optimizer step
    <output_dir>/eval_results.json                the run's summary (written by train.py)
    <output_dir>/.s2ca-run.lock                   held by the run's main process while it runs

Every checkpoint lists the sha256 of its files (`checksums.json`), so that resuming from a damaged one (a
truncated or flipped file) stops naming the file instead of training on from corrupt weights.
"""

import json
import os
import re
import shutil

import torch
from accelerate import Accelerator

from s2ca_hf.utils import FolderLock, file_sha256


CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_steps(folder: str) -> list[int]:
    """The steps of the `checkpoint-<digits>` folders in `folder`, sorted; anything else there is ignored."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(m.group(1)) for m in map(CHECKPOINT.fullmatch, os.listdir(folder)) if m)


def latest_checkpoint(output_dir: str) -> str | None:
    folder = os.path.join(output_dir, "checkpoints")
    steps = checkpoint_steps(folder)
    return os.path.join(folder, f"checkpoint-{steps[-1]}") if steps else None


def checkpoint_to_resume(output_dir: str, resume_from_checkpoint: str) -> str:
    """The folder `resume_from_checkpoint` ('latest' or a path) names; only a complete checkpoint whose files match
    their recorded checksums is accepted."""
    path = latest_checkpoint(output_dir) if resume_from_checkpoint == "latest" else resume_from_checkpoint
    complete = path is not None and CHECKPOINT.fullmatch(os.path.basename(os.path.normpath(path)))
    if not complete or not os.path.isfile(os.path.join(path, "trainer_state.json")):
        raise FileNotFoundError(
            f"resume_from_checkpoint={resume_from_checkpoint!r}: no complete checkpoint "
            f"({path or os.path.join(output_dir, 'checkpoints')})."
        )
    verify_checkpoint(path)
    return path


CHECKSUMS = "checksums.json"


def checkpoint_files(folder: str) -> list[str]:
    """Every file of a checkpoint folder (relative paths, sorted), but its checksum list."""
    files = []
    for directory, _, names in os.walk(folder):
        files += [os.path.relpath(os.path.join(directory, n), folder) for n in names]
    return sorted(f for f in files if f != CHECKSUMS)


def verify_checkpoint(folder: str) -> None:
    """Refuses a checkpoint whose files differ from the checksums written with it, naming the file. A checkpoint
    written before checksums were recorded is accepted as it is."""
    listed = os.path.join(folder, CHECKSUMS)
    if not os.path.isfile(listed):
        return
    with open(listed) as f:
        expected = json.load(f)
    for name, digest in expected.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"Checkpoint {folder} is damaged: {name} is missing. {_OLDER}")
        if file_sha256(path) != digest:
            raise ValueError(f"Checkpoint {folder} is damaged: {path} is not the file written there. {_OLDER}")


_OLDER = "Resume from an earlier checkpoint (--resume_from_checkpoint PATH) or start again."


class RunLock(FolderLock):
    """Held by a training run's main process for the whole run: a second run in the same output_dir stops at once
    instead of interleaving logs and checkpoints with the first (`FolderLock`: released even if the run is killed)."""

    lock_file = ".s2ca-run.lock"
    error = FileExistsError
    busy = "output_dir {folder} is in use by another training run ({holder}){waited}: wait for it or choose another."


def check_finite(module: torch.nn.Module, what: str) -> None:
    """Refuses to write a model with a NaN or infinite parameter: no run ends "Done" with a broken model."""
    broken = [name for name, p in module.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        names = ", ".join(broken[:3]) + (", ..." if len(broken) > 3 else "")
        raise FloatingPointError(
            f"Not saving {what}: {len(broken)} parameter tensor(s) hold NaN or infinite values ({names}). The "
            "training diverged (learning rate, weight_decay, a damaged checkpoint?)."
        )


RUN_FILES = ("best", "final", "log_history.jsonl", "eval_results.json")
STAGING = re.compile(r"\.staging-(\d+)")


def run_files(output_dir: str) -> list[str]:
    """What a training run wrote in `output_dir` (relative paths): checkpoints, staging folders, models, logs."""
    folder = os.path.join(output_dir, "checkpoints")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    written = [os.path.join("checkpoints", n) for n in names if CHECKPOINT.fullmatch(n) or STAGING.fullmatch(n)]
    return written + [n for n in RUN_FILES if os.path.exists(os.path.join(output_dir, n))]


def prepare_output_dir(output_dir: str, resume: str | None, overwrite: bool) -> None:
    """A second run in a folder that holds one would mix their logs and checkpoints: refuse it, unless the run
    resumes, or `overwrite_output_dir` says to delete the previous run's files (only those a run writes)."""
    present = run_files(output_dir)
    if not present or resume:
        return
    if not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} holds another run ({', '.join(present)}): resume it with "
            "--resume_from_checkpoint latest, replace it with --overwrite_output_dir true, or choose another folder."
        )
    for name in present:
        path = os.path.join(output_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def save_checkpoint(accelerator: Accelerator, output_dir: str, state: dict, limit: int | None) -> str:
    """`save_state` into a staging folder, then one rename: `checkpoint-<step>` is either complete or absent."""
    folder = os.path.join(output_dir, "checkpoints")
    final = os.path.join(folder, f"checkpoint-{state['global_step']}")
    staging = os.path.join(folder, f".staging-{state['global_step']}")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    if accelerator.is_main_process:
        with open(os.path.join(staging, "trainer_state.json"), "w") as f:
            json.dump(state, f, indent=1)
        checksums = {name: file_sha256(os.path.join(staging, name)) for name in checkpoint_files(staging)}
        with open(os.path.join(staging, CHECKSUMS), "w") as f:
            json.dump(checksums, f, indent=1)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        steps = checkpoint_steps(folder)
        for step in steps[: -limit or None] if limit else []:
            shutil.rmtree(os.path.join(folder, f"checkpoint-{step}"))
    accelerator.wait_for_everyone()
    return final


def save_model(accelerator: Accelerator, module: torch.nn.Module, processor, folder: str) -> None:
    """The student alone (no teacher, no ATR head) with its processor, staged then renamed."""
    student = accelerator.unwrap_model(module).student
    check_finite(student, folder)
    if accelerator.is_main_process:
        staging = folder.rstrip("/") + ".staging"
        shutil.rmtree(staging, ignore_errors=True)
        student.save_pretrained(staging, save_function=accelerator.save)
        processor.save_pretrained(staging)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    accelerator.wait_for_everyone()


def log_step(accelerator: Accelerator, history_path: str, record: dict, report: bool) -> None:
    """One line per optimizer step in `log_history.jsonl` (main process); trackers every `logging_steps`."""
    if accelerator.is_main_process:
        with open(history_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    if report:
        accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=record["step"])


def truncate_history(path: str, step: int) -> None:
    """Drops the lines a killed run logged after the checkpoint it is resumed from."""
    if os.path.isfile(path):
        with open(path) as f:
            kept = [line for line in f if json.loads(line)["step"] <= step]
        with open(path, "w") as f:
            f.writelines(kept)
