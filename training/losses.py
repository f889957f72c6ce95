"""The S2CA training loss over the global batch, gathered across processes with gradient.

Modelled on open_clip's `ClipLoss` / `gather_features`: every process gathers the features of the whole global batch
(its own slice keeps its autograd history, the others arrive as constants), computes the same global loss, and
back-propagates through its own slice only. Scaling that loss by the number of processes makes DDP's gradient
*averaging* return exactly the gradient of one process over the global batch. `accelerator.gather` cannot be used
here: its output carries no gradient.

Two things in a batch change its contrastive terms (`contrastive_loss`): rows that share a video (several captions of
one clip) are not each other's negatives, and foils, false captions of the batch's videos that this loss encodes with
the student's text tower, are extra negative texts for every video. Both are gathered like the features.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from s2ca_hf.modeling_s2ca import S2CAModel, S2CAOutput


# What the collator adds for the loss alone: which of the batch's videos each text fits, and the foils (with the
# videos each foil is true of).
FOIL_KEYS = ("foil_input_ids", "foil_attention_mask", "foil_mask", "foil_positive_video_index")
LOSS_KEYS = ("positive_video_index", *FOIL_KEYS)


def gather_global_batch(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Concatenates `tensor` from every process along dim 0; this process's slice stays differentiable, the others
    are constants (open_clip's `gather_features` with `gather_with_grad=False`, the own slice put back).

    Every process must pass the same shape (same local batch size: drop the last incomplete batch).
    """
    if world_size == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor.contiguous())
    gathered[rank] = tensor
    return torch.cat(gathered)


def sum_with_grad(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The sum of `tensor` over processes, differentiable through this process's term."""
    if world_size == 1:
        return tensor
    return gather_global_batch(tensor.unsqueeze(0), rank, world_size).sum(dim=0)


def fits(positive_video_index: torch.Tensor, videos: torch.Tensor) -> torch.Tensor:
    """`(N, B)` bool: whether row n's text fits video j of the batch, from its `(N, W)` video indices (-1 padding)
    and the batch's `(B,)` video indices."""
    return (positive_video_index[:, :, None] == videos[None, None, :]).any(dim=1)


def scale_for_global_loss(scale: torch.Tensor, world_size: int) -> torch.Tensor:
    """`exp(logit_scale)` multiplies the whole global matrix, so its gradient is already complete on every process:
    pre-divide that gradient by the process count that scales the loss (same value, 1/world_size of the gradient)."""
    return scale / world_size + (scale * (1 - 1 / world_size)).detach()


@dataclass
class S2CALossOutput:
    loss: torch.Tensor  # what to back-propagate: the global loss, with the per-process scaling DDP needs
    value: torch.Tensor  # the global loss itself (the same on every process), for logging
    retrieval: torch.Tensor
    diversity: torch.Tensor | None
    balance: torch.Tensor | None
    instance_similarity: torch.Tensor  # [global batch, global batch]
    concept_similarity: torch.Tensor | None


class S2CALoss(nn.Module):
    """The model's loss (`S2CAModel.compute_loss`, which composes every term) over the global batch.

    Args:
        rank: this process's index (`accelerator.process_index`).
        world_size: the number of processes (`accelerator.num_processes`).
    """

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.rank = rank
        self.world_size = world_size

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return gather_global_batch(tensor, self.rank, self.world_size)

    def sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return sum_with_grad(tensor, self.rank, self.world_size)

    def forward(
        self,
        model: S2CAModel,
        outputs: S2CAOutput,
        video_index: torch.Tensor | None = None,
        foil_input_ids: torch.Tensor | None = None,
        foil_attention_mask: torch.Tensor | None = None,
        foil_mask: torch.Tensor | None = None,
        positive_video_index: torch.Tensor | None = None,
        foil_positive_video_index: torch.Tensor | None = None,
    ) -> S2CALossOutput:
        """`model` is the unwrapped S2CAModel (its config, logit scale, prototypes and text tower); `outputs` its
        forward output on this process's slice of the batch (text i describing video i).

        `video_index` `(B,)` names each row's video: rows of one video are then not each other's negatives, nor is a
        text a negative of another video it fits (`positive_video_index` `(B, W)`: the indices of the videos each
        text fits, -1 padding; the built-in corpus's partial captions). The foil tensors are the collator's
        (`FOIL_KEYS`, one foil per row, `foil_mask` 1 for a real one, `foil_positive_video_index` the videos each
        foil is true of, which it is then no negative for): the foils are
        encoded here, with gradient, and scored against every video in both the instance and the concept score."""
        also_correct = videos = foils = None
        if video_index is not None:
            videos = self.gather(video_index)
            also_correct = videos[:, None] == videos[None, :]
            if positive_video_index is not None:  # (B, W) video indices padded with -1
                also_correct = also_correct | fits(self.gather(positive_video_index), videos)
        if foil_input_ids is not None:
            foils = model.encode_text(foil_input_ids, foil_attention_mask)
            foil_mask = self.gather(foil_mask)
            if foil_positive_video_index is not None and videos is not None:
                # A foil is no negative for a video it happens to be true of (the reversed motion of a group's twin).
                foil_mask = foil_mask.bool()[:, None] & ~fits(self.gather(foil_positive_video_index), videos)
        terms = model.compute_loss(
            outputs,
            foils,
            also_correct,
            foil_mask,
            scale=scale_for_global_loss(model.logit_scale_value(), self.world_size),
            gather=self.gather,
            sum_over_processes=self.sum_over_processes,
        )
        # The per-process terms' gradient is summed over processes by this scaling (DDP averages it); the prototypes
        # are the same on every process, so their term needs none.
        return S2CALossOutput(
            loss=self.world_size * terms.per_process + terms.shared,
            value=(terms.per_process + terms.shared).detach(),
            retrieval=terms.retrieval.detach(),
            diversity=None if terms.diversity is None else terms.diversity.detach(),
            balance=None if terms.balance is None else terms.balance.detach(),
            instance_similarity=terms.instance_similarity.detach(),
            concept_similarity=None if terms.concept_similarity is None else terms.concept_similarity.detach(),
        )
