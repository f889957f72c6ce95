"""The S2CA training loss over the global batch, gathered across processes with gradient.

Modelled on open_clip's `ClipLoss` / `gather_features`: every process gathers the features of the whole global batch
(its own slice keeps its autograd history, the others arrive as constants), computes the same global loss, and
back-propagates through its own slice only. Scaling that loss by the number of processes makes DDP's gradient
*averaging* return exactly the gradient of one process over the global batch. `accelerator.gather` cannot be used
here: its output carries no gradient.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from s2ca_hf.modeling_s2ca import (
    S2CAModel,
    S2CAOutput,
    balance_loss_from_statistics,
    balance_statistics,
    concept_similarity,
    concept_usage,
    per_concept_contrastive_loss,
    routing_agreement_loss,
)


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
    per_concept: torch.Tensor | None
    routing_agreement: torch.Tensor | None
    instance_similarity: torch.Tensor  # [global batch, global batch]
    concept_similarity: torch.Tensor | None


class S2CALoss(nn.Module):
    """L = L_ret + w_div L_div + w_bal L_bal (METHOD.md §6) over the global batch.

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

    def forward(self, model: S2CAModel, outputs: S2CAOutput) -> S2CALossOutput:
        """`model` is the unwrapped S2CAModel (its config, logit scale and prototypes); `outputs` its forward output
        on this process's slice of the batch (text i describing video i)."""
        config = model.config
        text = self.gather(outputs.text_instance_embeds)
        video = self.gather(outputs.video_instance_embeds)
        instance = text @ video.t()
        concept = per_concept = None
        if outputs.text_concepts is not None:
            text_features = self.gather(outputs.text_concepts.concept_features)
            video_features = self.gather(outputs.video_concepts.concept_features)
            concept = concept_similarity(
                text_features,
                self.gather(outputs.text_concepts.concept_weights),
                video_features,
                self.gather(outputs.video_concepts.concept_weights),
                config.concept_weighting,
            )
        scale = scale_for_global_loss(model.logit_scale_value(), self.world_size)
        retrieval = model.retrieval_loss(instance, concept, scale=scale)
        # Terms that depend on this process's features: their gradient is summed over processes by the
        # scaling below (DDP averages it).
        per_process = retrieval
        if concept is not None and config.concept_contrastive_weight > 0:
            per_concept = per_concept_contrastive_loss(
                text_features,
                self.gather(1.0 - outputs.text_concepts.empty_concepts),
                video_features,
                self.gather(1.0 - outputs.video_concepts.empty_concepts),
                scale,
            )
            per_process = per_process + config.concept_contrastive_weight * per_concept
        agreement = None
        if concept is not None and config.routing_agreement_weight > 0:
            # Sinkhorn balances over the global batch, as SwAV's does over its gathered queue.
            agreement = routing_agreement_loss(
                self.gather(concept_usage(outputs.text_concepts)),
                self.gather(concept_usage(outputs.video_concepts)),
                config.routing_agreement_epsilon,
            )
            per_process = per_process + config.routing_agreement_weight * agreement
        diversity = balance = None
        if outputs.text_concepts is not None:
            balances = []
            for concepts in (outputs.text_concepts, outputs.video_concepts):
                counts, probability_sums, num_tokens = balance_statistics(concepts)
                balances.append(
                    balance_loss_from_statistics(
                        sum_with_grad(counts, self.rank, self.world_size),
                        sum_with_grad(probability_sums, self.rank, self.world_size),
                        sum_with_grad(num_tokens, self.rank, self.world_size),
                    )
                )
            balance = 0.5 * (balances[0] + balances[1])
            per_process = per_process + config.balance_loss_weight * balance
            # The prototypes are the same on every process: their term needs no scaling.
            diversity = model.concepts.diversity_loss()
        shared = 0.0 if diversity is None else config.diversity_loss_weight * diversity
        return S2CALossOutput(
            loss=self.world_size * per_process + shared,
            value=(per_process + shared).detach(),
            retrieval=retrieval.detach(),
            diversity=None if diversity is None else diversity.detach(),
            balance=None if balance is None else balance.detach(),
            per_concept=None if per_concept is None else per_concept.detach(),
            routing_agreement=None if agreement is None else agreement.detach(),
            instance_similarity=instance.detach(),
            concept_similarity=None if concept is None else concept.detach(),
        )
