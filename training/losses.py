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
import torch.nn.functional as F
from torch import nn

from s2ca_hf.modeling_s2ca import (
    S2CAModel,
    S2CAOutput,
    balance_loss_from_statistics,
    balance_statistics,
    concept_similarity,
    concept_usage,
    routing_agreement_loss,
)


FOIL_KEYS = ("foil_input_ids", "foil_attention_mask", "foil_mask")  # what the collator adds for foils


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


def per_concept_loss(
    text_features: torch.Tensor,
    text_present: torch.Tensor,
    video_features: torch.Tensor,
    video_present: torch.Tensor,
    scale: torch.Tensor,
    same_video: torch.Tensor | None = None,
) -> torch.Tensor:
    """`per_concept_contrastive_loss` (the model's L_k, whose arguments these are) with `contrastive_loss`'s rule for
    repeated videos: where `same_video` `(B, B)` says that rows i and j show one video, text i and video j (i != j)
    are neither positive nor negative for any concept. Without repeats it is the model's loss, term for term."""
    batch = text_features.shape[0]
    logits = scale * torch.einsum("ikd,jkd->kij", text_features, video_features)  # (K, texts, videos)
    lowest = torch.finfo(logits.dtype).min  # finite, so that rows without any candidate stay finite
    text_to_video = logits.masked_fill(~video_present.t().bool()[:, None, :], lowest)
    video_to_text = logits.transpose(1, 2).masked_fill(~text_present.t().bool()[:, None, :], lowest)
    if same_video is not None:
        repeats = same_video.bool() & ~torch.eye(batch, dtype=torch.bool, device=same_video.device)
        text_to_video = text_to_video.masked_fill(repeats, lowest)
        video_to_text = video_to_text.masked_fill(repeats.t(), lowest)
    labels = torch.arange(batch, device=logits.device).repeat(logits.shape[0])
    losses = 0.5 * (
        F.cross_entropy(text_to_video.flatten(0, 1), labels, reduction="none")
        + F.cross_entropy(video_to_text.flatten(0, 1), labels, reduction="none")
    )
    valid = (text_present * video_present).t().flatten().to(losses.dtype)
    return (losses * valid).sum() / valid.sum().clamp(min=1.0)


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
    """L = L_ret + w_div L_div + w_bal L_bal (docs/method.md §6) over the global batch.

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

    def forward(
        self,
        model: S2CAModel,
        outputs: S2CAOutput,
        video_index: torch.Tensor | None = None,
        foil_input_ids: torch.Tensor | None = None,
        foil_attention_mask: torch.Tensor | None = None,
        foil_mask: torch.Tensor | None = None,
    ) -> S2CALossOutput:
        """`model` is the unwrapped S2CAModel (its config, logit scale, prototypes and text tower); `outputs` its
        forward output on this process's slice of the batch (text i describing video i).

        `video_index` `(B,)` names each row's video: rows of one video are then not each other's negatives. The foil
        tensors are the collator's (`FOIL_KEYS`, one foil per row, `foil_mask` 1 for a real one): the foils are
        encoded here, with gradient, and scored against every video in both the instance and the concept score."""
        config = model.config
        same_video = None
        if video_index is not None:
            videos = self.gather(video_index)
            same_video = videos[:, None] == videos[None, :]
        foil_instance = foil_features = foil_weights = None
        if foil_input_ids is not None:
            foils = model.encode_text(foil_input_ids, foil_attention_mask)
            foil_instance, foil_mask = foils.instance_embeds, self.gather(foil_mask)
            if foils.concepts is not None:
                foil_features, foil_weights = foils.concepts.concept_features, foils.concepts.concept_weights

        def texts_then_foils(text: torch.Tensor, foil: torch.Tensor | None) -> torch.Tensor:
            # The global batch's texts first (text i describes video i), then the global batch's foils.
            text = self.gather(text)
            return text if foil is None else torch.cat([text, self.gather(foil)])

        text = texts_then_foils(outputs.text_instance_embeds, foil_instance)
        video = self.gather(outputs.video_instance_embeds)
        batch = video.shape[0]
        instance = text @ video.t()  # (B + F, B)
        concept = per_concept = None
        if outputs.text_concepts is not None:
            text_features = texts_then_foils(outputs.text_concepts.concept_features, foil_features)
            video_features = self.gather(outputs.video_concepts.concept_features)
            concept = concept_similarity(
                text_features,
                texts_then_foils(outputs.text_concepts.concept_weights, foil_weights),
                video_features,
                self.gather(outputs.video_concepts.concept_weights),
                config.concept_weighting,
            )
        scale = scale_for_global_loss(model.logit_scale_value(), self.world_size)
        retrieval = model.retrieval_loss(instance, concept, scale=scale, same_video=same_video, foil_mask=foil_mask)
        # Terms that depend on this process's features: their gradient is summed over processes by the
        # scaling below (DDP averages it).
        per_process = retrieval
        if concept is not None and config.concept_contrastive_weight > 0:
            per_concept = per_concept_loss(
                text_features[:batch],
                self.gather(1.0 - outputs.text_concepts.empty_concepts),
                video_features,
                self.gather(1.0 - outputs.video_concepts.empty_concepts),
                scale,
                same_video,
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
            instance_similarity=instance[:batch].detach(),
            concept_similarity=None if concept is None else concept[:batch].detach(),
        )
