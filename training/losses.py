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
    contrastive_loss,
    entropy_loss_from_statistics,
    entropy_statistics,
    late_interaction_score,
    per_concept_contrastive_loss,
)


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
    per_concept: torch.Tensor | None
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
        config = model.config
        also_correct = videos = None
        if video_index is not None:
            videos = self.gather(video_index)
            also_correct = videos[:, None] == videos[None, :]
            if positive_video_index is not None:  # (B, W) video indices padded with -1
                also_correct = also_correct | fits(self.gather(positive_video_index), videos)
        foil_instance = foil_features = foil_weights = foil_tokens = foil_token_weights = None
        if foil_input_ids is not None:
            foils = model.encode_text(foil_input_ids, foil_attention_mask)
            foil_instance, foil_mask = foils.instance_embeds, self.gather(foil_mask)
            if foil_positive_video_index is not None and videos is not None:
                # A foil is no negative for a video it happens to be true of (the reversed motion of a group's twin).
                foil_mask = foil_mask.bool()[:, None] & ~fits(self.gather(foil_positive_video_index), videos)
            if foils.concepts is not None:
                foil_features, foil_weights = foils.concepts.concept_features, foils.concepts.concept_weights
                foil_tokens, foil_token_weights = foils.concepts.token_features, foils.concepts.token_weights

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
        retrieval = model.retrieval_loss(
            instance, concept, scale=scale, also_correct=also_correct, foil_mask=foil_mask
        )
        late = None
        if config.late_interaction_weight > 0:
            # The re-ranker learns the same contrast, texts then foils against the batch's videos. Token rows are
            # padded to the longest text the model takes, so that batches of any length gather and stack.
            length = config.text_config.max_position_embeddings

            def tokens(part: torch.Tensor | None) -> torch.Tensor | None:
                return None if part is None else F.pad(part, (0, 0) * (part.dim() - 2) + (0, length - part.shape[1]))

            late = late_interaction_score(
                texts_then_foils(tokens(outputs.text_concepts.token_features), tokens(foil_tokens)),
                texts_then_foils(tokens(outputs.text_concepts.token_weights), tokens(foil_token_weights)),
                video_features,
            )
            late = contrastive_loss(scale * late, also_correct, foil_mask)
        # Terms that depend on this process's features: their gradient is summed over processes by the
        # scaling below (DDP averages it).
        per_process = retrieval if late is None else retrieval + config.late_interaction_weight * late
        if concept is not None and config.concept_contrastive_weight > 0:
            per_concept = per_concept_contrastive_loss(
                text_features[:batch],
                self.gather(1.0 - outputs.text_concepts.empty_concepts),
                video_features,
                self.gather(1.0 - outputs.video_concepts.empty_concepts),
                scale,
                also_correct,
            )
            per_process = per_process + config.concept_contrastive_weight * per_concept
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
            if config.entropy_loss_weight > 0:
                entropies = [
                    entropy_loss_from_statistics(
                        *(sum_with_grad(part, self.rank, self.world_size) for part in entropy_statistics(concepts))
                    )
                    for concepts in (outputs.text_concepts, outputs.video_concepts)
                ]
                per_process = per_process + config.entropy_loss_weight * 0.5 * (entropies[0] + entropies[1])
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
            instance_similarity=instance[:batch].detach(),
            concept_similarity=None if concept is None else concept[:batch].detach(),
        )
