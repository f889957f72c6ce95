"""Run by tests/test_losses.py under `accelerate launch --multi_gpu --num_processes 2`: the global-batch loss and
gradients of two CPU processes, compared on rank 0 with one process over the same global batch."""

import json
import os
import sys

import torch
from accelerate import Accelerator


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests"), REPO]  # this checkout's code first
sys.path.insert(1, os.path.join(REPO, "training"))  # the training scripts, imported by name

from conftest import make_inputs  # noqa: E402
from losses import S2CALoss  # noqa: E402

from s2ca_hf import S2CAModel  # noqa: E402
from s2ca_hf.tiny import tiny_config  # noqa: E402


GLOBAL_BATCH = 4


# "expert_choice+late": binary allocation, concept tracks and the late-interaction re-ranker, whose token features are
# gathered across processes too.
VARIANTS = {
    "expert_choice+late": dict(allocation="expert_choice", concept_tracks=True, late_interaction_weight=0.5),
}


def build_model(allocation: str) -> S2CAModel:
    torch.manual_seed(0)
    fields = VARIANTS.get(allocation, dict(allocation=allocation))
    model = S2CAModel(tiny_config(prototype_init_std=1.0, **fields))
    allocation = fields["allocation"]
    # Soft and expert-choice allocation are noise-free in training; Gumbel allocation is compared in eval mode
    # (argmax), so that two runs over the same data can be compared exactly.
    return model.eval() if allocation == "gumbel" else model.train()


def gradients(model) -> dict:
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def main(output_path: str, allocation: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    inputs = make_inputs(batch=GLOBAL_BATCH)
    per_process = GLOBAL_BATCH // world
    local = {key: value[rank * per_process : (rank + 1) * per_process] for key, value in inputs.items()}
    model = accelerator.prepare(build_model(allocation))
    result = S2CALoss(rank=rank, world_size=world)(accelerator.unwrap_model(model), model(**local))
    accelerator.backward(result.loss)
    if rank == 0:
        reference = build_model(allocation)
        expected = S2CALoss()(reference, reference(**inputs))
        expected.loss.backward()
        ours, theirs = gradients(accelerator.unwrap_model(model)), gradients(reference)
        report = {
            "world": world,
            "loss": float(result.value),
            "expected_loss": float(expected.value),
            "same_keys": sorted(ours) == sorted(theirs),
            "num_grads": len(theirs),
            # Relative to each gradient's size (some are in the hundreds, where float32 sums in another order
            # differ in the fifth decimal).
            "max_grad_diff": max(
                float((ours[name] - theirs[name]).abs().max() / theirs[name].abs().max().clamp(min=1.0))
                for name in theirs
            ),
        }
        with open(output_path, "w") as f:
            json.dump(report, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
