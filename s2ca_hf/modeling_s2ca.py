"""PyTorch S2CA model: CLIP towers, a temporal module and shared concept prototypes for text-video retrieval.

S2CA: *Shared Concept Prototypes and Concept-level Alignment for text-video retrieval*, Li, Xin, Qian and Dong,
Neurocomputing 614, 128851 (2024), https://doi.org/10.1016/j.neucom.2024.128851.

Only the abstract is public; what it leaves open is reconstructed from GroupViT (Gumbel hard assignment of tokens to
learnable groups), GLSCL and DiCoSA (concepts shared by both modalities, compared concept by concept) and CLIP4Clip
(backbone, temporal module, loss). Every such choice is a field of `S2CAConfig`.

The defaults, and what was measured against them on the val split of the package's built-in concept-video corpus:

* Allocation is discrete by expert choice (`allocation="expert_choice"`), the same in training and evaluation: each
  video concept takes its 4 best tokens in every frame (never empty) and each word its best concept. With video
  concepts as tracks over the frames (`concept_tracks`) and the late-interaction re-ranker's loss
  (`late_interaction_weight=0.5`) it ranked 29.8 ± 1.2 val R@1 over 3 seeds on the built-in corpus (test 20.4 ± 0.4),
  against 29.3 ± 0.8 (test 19.0 ± 0.6) for soft allocation, the previous default: a tie on val within the noise of
  its 200 queries, 1.4 points ahead on test, and its concept score alone ranks at 17.7 ± 0.6 against 3.7 ± 1.6.
  Most of that content is each frame's refined [CLS] token, which every video concept takes as one of its 4 picks:
  with it masked out of the concept branch the concept score alone fell to 2.5 (one seed), the patch tokens of the
  towers being no more local than that. Soft allocation stays flat: every concept takes a near-uniform share of
  every token and its feature is one mean pool. The hard Gumbel-softmax of the first reconstruction trains on
  near-random groupings and leaves most concepts empty at evaluation (15-30 val points below soft). `"soft"` and
  `"gumbel"` remain options.
* The concept branch reads the towers' tokens but sends no gradient back into them, and is trained by the residual
  loss (NCE of the stop-gradient instance score plus the concept score), so it learns what the instance score still
  gets wrong instead of pulling the shared towers away from it. On the corpus's earlier version this tied seqTransf
  on val over 3 seeds (70.7 against 70.5 R@1), trailed it by about 1 on test, and the concept score added about 1
  point on val only. Training the sum NCE(s_inst + s_con), with or without its parts, a tenth of the concept gradient
  into the towers and adapter layers of the concept branch's own did not beat it on val.
* A concept's feature is what it aggregates and nothing else; the prototypes only route. With the prototype added
  to it, every concept feature stayed a copy of its prototype (cosine 0.998 between true pairs and all others alike).
* Concepts are weighted by how much both sides use them (a_k = sqrt(share of the item's tokens)): this tied
  weights 1 / (non-empty concepts) on val at half the size of phi and psi.
* The balance loss counts tokens by evaluation's noise-free argmax. A per-concept contrastive loss, an entropy
  regulariser on the allocation, frame features instead of patches as video tokens and one set of allocation
  projections per modality did not help on val.
* ATR (Align, Transform, Reconstruct) is a training-script option, off in the built-in corpus's recipe: with a
  teacher that knew no more than the students, every term and weight tried cost val R@1.

The file reads from leaves to root: outputs, the temporal transformer, the concept allocation, the pretrained-model
base, then `S2CAModel`, whose `encode_text` / `encode_video` / `forward` hold the whole forward pass.
"""

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import transformers.initialization as init
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CLIPModel, CLIPTextModel, CLIPVisionModel, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_s2ca import S2CAConfig


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


class _NestedModelOutput(ModelOutput):
    def to_tuple(self) -> tuple[Any, ...]:
        # Nested outputs become tuples too, as `CLIPOutput.to_tuple` does, so `return_dict=False` is all tuples.
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


# The pipeline every saved model carries (`S2CAPreTrainedModel.save_pretrained`), and its task.
PIPELINE_FILE = "pipeline_s2ca.py"
PIPELINE_TASK = "video-text-retrieval"
HANDLER_FILE = "handler.py"  # the Inference Endpoints handler every saved model carries too


@dataclass
class S2CAConceptOutput(_NestedModelOutput):
    r"""
    How one modality's tokens were allocated to the K shared concepts, and what the concepts became
    B is the batch, K `num_concepts`, N the number of tokens, D `projection_dim`.

    concept_features (`torch.FloatTensor` of shape `(B, K, D)`):
        The normalised conceptual aggregated features c-hat; an empty concept is all zeros.
    concept_weights (`torch.FloatTensor` of shape `(B, K)`):
        a: the square root of the share of the item's tokens in each concept, 0 for an empty one.
    empty_concepts (`torch.FloatTensor` of shape `(B, K)`):
        e: 1.0 where no token was allocated to the concept.
    token_counts (`torch.FloatTensor` of shape `(B, K)`):
        n: how many (valid) tokens were allocated to each concept.
    allocation (`torch.FloatTensor` of shape `(B, K, N)`):
        A: the allocation matrix, zero for padding: a softmax over K for every valid token (`allocation="soft"`), a
        one-hot over K (`"gumbel"`, and text under `"expert_choice"`), or, for video under `"expert_choice"`, 1 where
        a concept picked the token (a token may be picked by several concepts or none). Discrete allocations carry
        the straight-through gradient in training.
    allocation_logits (`torch.FloatTensor` of shape `(B, K, N)`):
        Z: the cross-attention logits between the prototypes and the tokens, before noise.
    token_mask (`torch.FloatTensor` of shape `(B, N)`):
        1.0 for the tokens that take part in the allocation.
    token_features (`torch.FloatTensor` of shape `(B, N, D)`, *optional*):
        Text with the late-interaction re-ranker (`late_interaction_weight > 0`) only: each token as a concept of
        its own (the feature its concept would have if it held that token alone), normalised; zero for padding.
    token_weights (`torch.FloatTensor` of shape `(B, N)`, *optional*):
        With `token_features`: the learned weight of each token in the late-interaction score (sums to 1).
    """

    concept_features: torch.FloatTensor | None = None
    concept_weights: torch.FloatTensor | None = None
    empty_concepts: torch.FloatTensor | None = None
    token_counts: torch.FloatTensor | None = None
    allocation: torch.FloatTensor | None = None
    allocation_logits: torch.FloatTensor | None = None
    token_mask: torch.FloatTensor | None = None
    token_features: torch.FloatTensor | None = None
    token_weights: torch.FloatTensor | None = None


@dataclass
class S2CAEncoderOutput(_NestedModelOutput):
    r"""
    Everything one tower produces for a batch of texts or of videos. E is `config.embedding_dim`, D `projection_dim`.

    embeds (`torch.FloatTensor` of shape `(B, E)`):
        The retrieval vector: phi(text) or psi(video), so that `phi @ psi.T` is the score.
    instance_embeds (`torch.FloatTensor` of shape `(B, D)`):
        The L2-normalised instance feature t (end-of-text state) or v (masked mean of the refined frames).
    concepts ([`S2CAConceptOutput`], *optional*):
        The concept allocation and features; `None` when `use_concepts=False`.
    tokens (`torch.FloatTensor` of shape `(B, N, D)`):
        The projected tokens X that are allocated to concepts (text tokens, or video patch / frame tokens).
    token_mask (`torch.FloatTensor` of shape `(B, N)`):
        m: 1.0 for word tokens and end-of-text (text), or for every token of a real frame (video).
    frame_features (`torch.FloatTensor` of shape `(B, F, D)`, *optional*):
        Video only: the temporally refined per-frame features, before normalisation.
    model_output (`BaseModelOutputWithPooling`):
        The CLIP tower's own output. For video, its batch is the real (unpadded) frames of the batch (under
        `torch.compile`: every frame slot, `V * F`, a padded slot encoded from zeros).
    """

    embeds: torch.FloatTensor | None = None
    instance_embeds: torch.FloatTensor | None = None
    concepts: S2CAConceptOutput | None = None
    tokens: torch.FloatTensor | None = None
    token_mask: torch.FloatTensor | None = None
    frame_features: torch.FloatTensor | None = None
    model_output: ModelOutput | None = None


@dataclass
class S2CAOutput(_NestedModelOutput):
    r"""
    T is the number of texts, V the number of videos (equal when `return_loss=True`), E `config.embedding_dim`,
    D `projection_dim`.

    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        The local-batch training loss (`S2CAModel.compute_loss`): retrieval loss plus the weighted concept terms.
    logits_per_text (`torch.FloatTensor` of shape `(T, V)`):
        `exp(logit_scale) * (s_inst + concept_score_weight * s_con)`, the scaled retrieval score.
    logits_per_video (`torch.FloatTensor` of shape `(V, T)`):
        The transpose of `logits_per_text`.
    text_embeds (`torch.FloatTensor` of shape `(T, E)`):
        phi(text), the `pooler_output` of `get_text_features`.
    video_embeds (`torch.FloatTensor` of shape `(V, E)`):
        psi(video), the `pooler_output` of `get_video_features`.
    text_instance_embeds (`torch.FloatTensor` of shape `(T, D)`):
        The normalised instance text features t.
    video_instance_embeds (`torch.FloatTensor` of shape `(V, D)`):
        The normalised instance video features v.
    instance_similarity (`torch.FloatTensor` of shape `(T, V)`):
        s_inst = t . v, unscaled.
    concept_similarity (`torch.FloatTensor` of shape `(T, V)`, *optional*):
        s_con, unscaled; `None` when `use_concepts=False`.
    retrieval_loss (`torch.FloatTensor` of shape `()`, *optional*):
        L_ret, returned when `return_loss=True`.
    diversity_loss (`torch.FloatTensor` of shape `()`, *optional*):
        L_div (unweighted), returned when `return_loss=True` and `use_concepts=True`.
    balance_loss (`torch.FloatTensor` of shape `()`, *optional*):
        L_bal (unweighted, mean of the two modalities), returned when `return_loss=True` and `use_concepts=True`.
    text_concepts ([`S2CAConceptOutput`], *optional*):
        The text concept allocation and features.
    video_concepts ([`S2CAConceptOutput`], *optional*):
        The video concept allocation and features.
    text_model_output (`BaseModelOutputWithPooling`):
        The output of the CLIP text tower.
    vision_model_output (`BaseModelOutputWithPooling`):
        The output of the CLIP vision tower over the real frames of the batch (every frame slot under
        `torch.compile`).
    """

    loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_instance_embeds: torch.FloatTensor | None = None
    video_instance_embeds: torch.FloatTensor | None = None
    instance_similarity: torch.FloatTensor | None = None
    concept_similarity: torch.FloatTensor | None = None
    retrieval_loss: torch.FloatTensor | None = None
    diversity_loss: torch.FloatTensor | None = None
    balance_loss: torch.FloatTensor | None = None
    text_concepts: S2CAConceptOutput | None = None
    video_concepts: S2CAConceptOutput | None = None
    text_model_output: ModelOutput | None = None
    vision_model_output: ModelOutput | None = None


@dataclass
class S2CALossTerms:
    """What `S2CAModel.compute_loss` returns: `per_process`, the terms computed from this process's features (a
    data-parallel trainer scales it by the process count, so that averaging gradients sums them), and `shared`, the
    terms of the parameters every process holds alike (the prototypes' diversity), so that the loss is `per_process +
    shared`; then each term on its own, unweighted (`None` where the configuration leaves it out)."""

    per_process: torch.Tensor
    shared: torch.Tensor
    retrieval: torch.Tensor
    late_interaction: torch.Tensor | None = None
    balance: torch.Tensor | None = None
    diversity: torch.Tensor | None = None
    instance_similarity: torch.Tensor | None = None  # (texts, videos) of the batch, foils left out
    concept_similarity: torch.Tensor | None = None


def _unchanged(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers (written here rather than imported: private transformers helpers get renamed between releases)
# ---------------------------------------------------------------------------------------------------------------------


def contrastive_loss(
    logits_per_text: torch.Tensor,
    also_correct: torch.Tensor | None = None,
    foil_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over the logits of B texts and F foils against B videos, `(B + F, B)` (CLIP4Clip's loss
    when F = 0): text i describes video i, so the diagonal holds the positives.

    `also_correct` `(B, B)` bool, optional, is True where text i also fits video j: the same clip (MSR-VTT puts
    several captions of a video in one batch) or another clip that shows everything text i says (a caption that names
    one object of several). Such a pair is neither a positive nor a negative: the off-diagonal True entries are removed
    (-inf) from both softmaxes, so that a model is never pushed to rank a correct video below another one. Without
    them nothing is removed and the loss is the plain one.

    The F rows after the B-th are foils: false captions (a direction reversed, two colours swapped), each an extra
    negative text in the video-to-text softmax only (a foil is not a query). `foil_mask` is required with them:
    `(F,)`, 1 for a real foil (negative for every video, its own included), or `(F, B)`, 1 where foil f is a negative
    for video j (0 where the foil happens to be true of that video); a 0 takes no part.
    """
    num_videos = logits_per_text.shape[1]
    num_foils = logits_per_text.shape[0] - num_videos
    if num_foils != (0 if foil_mask is None else foil_mask.shape[0]):
        shape = None if foil_mask is None else tuple(foil_mask.shape)
        raise ValueError(
            f"contrastive_loss takes the logits of B texts then F foils against B videos and a foil_mask of F "
            f"rows; got logits {tuple(logits_per_text.shape)} and foil_mask {shape}."
        )
    removed = torch.zeros_like(logits_per_text, dtype=torch.bool)
    if also_correct is not None:
        repeats = also_correct.bool() & ~torch.eye(num_videos, dtype=torch.bool, device=also_correct.device)
        removed[:num_videos] = repeats
    if num_foils:
        negative = foil_mask.bool()
        removed[num_videos:] = ~(negative if negative.dim() == 2 else negative[:, None])
    logits_per_text = logits_per_text.masked_fill(removed, float("-inf"))
    labels = torch.arange(num_videos, device=logits_per_text.device)
    text_to_video = F.cross_entropy(logits_per_text[:num_videos], labels)
    return 0.5 * (text_to_video + F.cross_entropy(logits_per_text.t(), labels))


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `features` `(B, N, D)` over the positions where `mask` `(B, N)` is 1, denominator clamped at 1."""
    mask = mask.to(features.dtype).unsqueeze(-1)
    return (features * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def concept_similarity(
    text_features: torch.Tensor,
    text_weights: torch.Tensor,
    video_features: torch.Tensor,
    video_weights: torch.Tensor,
) -> torch.Tensor:
    """The concept score s_con `(T, V)` from `(T, K, D)`, `(T, K)`, `(V, K, D)`, `(V, K)`: s_con(i, j) = sum_k
    a^t_ik a^v_jk <c^t_ik, c^v_jk>, where the weights a = sqrt(share of the item's tokens in k) are what
    `S2CAConceptAllocator` returns: a concept counts as much as both sides use it, and one that only one side uses
    adds nothing. A matrix product, so that the training loss can call it on features gathered from every process.
    """
    text_weighted = (text_weights.unsqueeze(-1) * text_features).flatten(1)
    video_weighted = (video_weights.unsqueeze(-1) * video_features).flatten(1)
    return text_weighted @ video_weighted.t()


def late_interaction_score(
    token_features: torch.Tensor, token_weights: torch.Tensor, video_concepts: torch.Tensor
) -> torch.Tensor:
    """The second-stage score: each text token's best-matching video concept (max-sim, as ColBERT and DRL's
    word-to-concept interaction do), weighted by the token's learned weight: sum_n w_n max_k <x_n, c^v_k>. Takes the
    token features `(T, N, D)` and weights `(T, N)` of `S2CAConceptOutput` and the video concepts (normalised; zero
    for an empty one, which then scores 0): `(V, K, D)` scores every text against every video `(T, V)`; `(T, C, K, D)`
    scores each text against its own C candidates `(T, C)` (a search's shortlist)."""
    pattern = "tnd,vkd->tvnk" if video_concepts.dim() == 3 else "tnd,tvkd->tvnk"
    similarities = torch.einsum(pattern, token_features, video_concepts)
    return (similarities.max(dim=-1).values * token_weights[:, None, :]).sum(dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Temporal module (CLIP4Clip seqTransf)
# ---------------------------------------------------------------------------------------------------------------------


class S2CATemporalAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, frames, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, frames, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        # Boolean mask: padded frames are never attended to, whatever their values, in every dtype.
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask[:, None, None, :])
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, width))


class S2CATemporalMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class S2CATemporalLayer(nn.Module):
    """A pre-norm transformer block over frames (CLIP's residual attention block, as CLIP4Clip's `transformerClip`)."""

    def __init__(self, config: S2CAConfig, width: int | None = None):
        super().__init__()
        width = width or config.projection_dim
        # The MLP keeps its ratio to the width (4 D unless set) at another width (the concept tracks').
        intermediate = config.temporal_intermediate_size * width // config.projection_dim
        self.norm1 = nn.LayerNorm(width)
        self.attn = S2CATemporalAttention(width, config.temporal_num_attention_heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = S2CATemporalMLP(width, intermediate, config.temporal_hidden_act)

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states), key_mask)
        return hidden_states + self.mlp(self.norm2(hidden_states))


class S2CATemporalTransformer(nn.Module):
    """CLIP4Clip's seqTransf: frame position embeddings, a few transformer layers, and a residual to the input."""

    def __init__(self, config: S2CAConfig, width: int | None = None):
        super().__init__()
        width = width or config.projection_dim
        self.position_embedding = nn.Embedding(config.temporal_max_position_embeddings, width)
        self.layers = nn.ModuleList(
            [S2CATemporalLayer(config, width) for _ in range(config.temporal_num_hidden_layers)]
        )
        self.gradient_checkpointing = False

    def forward(self, frame_features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        num_frames = frame_features.shape[1]
        if num_frames > self.position_embedding.num_embeddings:
            raise ValueError(
                f"Got {num_frames} frames but the temporal transformer has position embeddings for "
                f"{self.position_embedding.num_embeddings} (`temporal_max_position_embeddings`)."
            )
        key_mask = frame_mask.bool()
        # A video with no real frame (one that failed to decode) attends to all its slots instead of to none, which
        # would give NaN; its features are masked out downstream anyway.
        key_mask = key_mask | ~key_mask.any(dim=1, keepdim=True)
        hidden_states = frame_features + self.position_embedding.weight[:num_frames]
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden_states = checkpoint(layer, hidden_states, key_mask, use_reentrant=False)
            else:
                hidden_states = layer(hidden_states, key_mask)
        return hidden_states + frame_features


# ---------------------------------------------------------------------------------------------------------------------
# Shared concept prototypes: allocation and conceptual aggregated features
# ---------------------------------------------------------------------------------------------------------------------


class S2CAConceptAllocator(nn.Module):
    """Allocates one modality's tokens to the shared prototypes and aggregates them into one feature per concept."""

    def __init__(self, config: S2CAConfig):
        super().__init__()
        width, concept_width = config.projection_dim, config.concept_dim
        self.allocation = config.allocation
        self.eps = config.concept_eps
        self.tokens_per_concept = config.tokens_per_concept
        self.scale = width**-0.5
        self.norm_prototypes = nn.LayerNorm(width)
        self.norm_tokens = nn.LayerNorm(width)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, concept_width)
        self.o_proj = nn.Linear(concept_width, concept_width)
        self.norm_out = nn.LayerNorm(concept_width)

    def allocate(
        self,
        logits: torch.Tensor,
        tau: float,
        token_mask: torch.Tensor | None = None,
        num_frames: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the allocation A `(B, K, N)` and the hard one-hot it stands for (no gradient). `num_frames`: the
        tokens are video tokens, that many frames of equally many tokens each (`token_mask` `(B, N)`: which are
        real; default all)."""
        num_concepts = logits.shape[1]
        if self.allocation == "expert_choice":
            return self.expert_choice(logits, tau, token_mask, num_frames)
        if self.allocation == "soft":
            allocation = logits.softmax(dim=1)
            return allocation, F.one_hot(allocation.argmax(dim=1), num_concepts).transpose(1, 2).to(logits.dtype)
        if self.training:
            gumbels = -torch.empty_like(logits).exponential_().log()
            noisy = logits + gumbels
            soft = (noisy / tau).softmax(dim=1)
            hard = F.one_hot(noisy.argmax(dim=1), num_concepts).transpose(1, 2).to(logits.dtype)
            # Straight-through: the forward pass sees the one-hot, the backward pass the softmax's gradient.
            return hard - soft.detach() + soft, hard
        # Evaluation is noise-free, so the same input always gives the same vectors (a stored index relies on it).
        hard = F.one_hot(logits.argmax(dim=1), num_concepts).transpose(1, 2).to(logits.dtype)
        return hard, hard

    def expert_choice(
        self, logits: torch.Tensor, tau: float, token_mask: torch.Tensor | None, num_frames: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary allocation, the same in training and evaluation. Video (`num_frames` given): every concept picks its
        `tokens_per_concept` highest-scoring tokens of each frame, so it is never empty and its picks follow it
        through the clip; a token may serve several concepts or none. Text: each token goes to its best concept.
        The backward pass is the straight-through gradient of the matching softmax (over a frame's tokens for
        video, scaled to the same total; over the concepts for text)."""
        if num_frames is None:
            soft = (logits / tau).softmax(dim=1)
            hard = F.one_hot(logits.argmax(dim=1), logits.shape[1]).transpose(1, 2).to(logits.dtype)
            return hard - soft.detach() + soft, hard
        batch, num_concepts, num_tokens = logits.shape
        per_frame = logits.view(batch, num_concepts, num_frames, num_tokens // num_frames)
        picks = min(self.tokens_per_concept, per_frame.shape[-1])
        # Padding (whole padded frames) cannot be picked; its column is zeroed by the caller anyway.
        masked = per_frame
        if token_mask is not None:
            valid = token_mask.view(batch, 1, num_frames, -1).bool()
            masked = per_frame.masked_fill(~valid, torch.finfo(logits.dtype).min)
        chosen = masked.topk(picks, dim=-1).indices
        hard = torch.zeros_like(per_frame).scatter_(-1, chosen, 1.0)
        soft = picks * (masked / tau).softmax(dim=-1)
        allocation = (hard - soft.detach() + soft).view_as(logits)
        return allocation, hard.view_as(logits)

    def forward(
        self,
        prototypes: torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        tau: float,
        tracks: "S2CAConceptTracks | None" = None,
        num_frames: int | None = None,
        with_token_features: bool = False,
    ) -> S2CAConceptOutput:
        token_mask = token_mask.to(tokens.dtype)
        normed_tokens = self.norm_tokens(tokens)
        queries = self.q_proj(self.norm_prototypes(prototypes))
        logits = torch.einsum("kd,bnd->bkn", queries, self.k_proj(normed_tokens)) * self.scale
        allocation, hard = self.allocate(logits, tau, token_mask, num_frames)
        # Padding is removed after the softmax over K: -inf in Z would turn a padded token's column into NaN.
        allocation = allocation * token_mask.unsqueeze(1)
        hard = hard * token_mask.unsqueeze(1)
        token_counts = allocation.sum(dim=-1)
        values = self.v_proj(normed_tokens)
        if tracks is None:
            aggregated = torch.einsum("bkn,bnd->bkd", allocation, values)
            aggregated = aggregated / (token_counts.unsqueeze(-1) + self.eps)
            # What the concept holds and nothing else: a static prototype added here would be the same for every
            # item and drown the content (concept features of true pairs and of all others then agree alike).
            features = self.norm_out(self.o_proj(aggregated))
        else:
            # Video tokens are frame-major (F frames of T tokens each): aggregate frame by frame into a track.
            batch, num_concepts = allocation.shape[:2]
            per_frame = allocation.view(batch, num_concepts, num_frames, -1)
            aggregated = torch.einsum(
                "bkft,bftd->bkfd", per_frame, values.view(batch, num_frames, -1, values.shape[-1])
            )
            aggregated = aggregated / (per_frame.sum(dim=-1, keepdim=True) + self.eps)
            states = self.o_proj(aggregated)
            frame_mask = token_mask.view(batch, num_frames, -1)[:, :, 0]
            features = self.norm_out(tracks(states, per_frame, frame_mask))
        # An empty concept would be the same vector on both sides (from biases alone) and score a spurious cosine of 1:
        # zero it.
        if self.allocation == "soft":
            empty = (token_counts.detach() == 0).to(tokens.dtype)
        else:
            empty = (hard.sum(dim=-1) == 0).to(tokens.dtype)
        present = 1.0 - empty
        features = present.unsqueeze(-1) * F.normalize(features, dim=-1)
        token_features = None
        if with_token_features:
            # Each token aggregated alone into the concept it went to (the same value and output maps as above).
            own = self.o_proj(values / (1.0 + self.eps))
            token_features = token_mask.unsqueeze(-1) * F.normalize(self.norm_out(own), dim=-1)
        # a_k = sqrt(n_k / N): the clamp keeps the root's gradient finite for a concept that gets almost nothing.
        share = token_counts / token_mask.sum(dim=-1, keepdim=True).clamp(min=1.0)
        weights = present * share.clamp(min=1e-6).sqrt()
        return S2CAConceptOutput(
            concept_features=features,
            concept_weights=weights,
            empty_concepts=empty,
            token_counts=token_counts,
            allocation=allocation,
            allocation_logits=logits,
            token_mask=token_mask,
            token_features=token_features,
        )


class S2CAConceptTracks(nn.Module):
    """Video concepts as tracks (`concept_tracks=True`): a concept's feature in each frame, with where it lies in that
    frame (its share of the frame's patches and their centroid), refined over the frames by a temporal transformer of
    its own and averaged over the real frames.

    A concept pooled over the whole clip keeps what its object looks like but loses where it goes and how its size
    changes, so the concept score cannot tell "moves left" from "moves right"; motion was the attribute every variant
    missed most.
    """

    def __init__(self, config: S2CAConfig):
        super().__init__()
        self.geometry_proj = nn.Linear(3, config.concept_dim)
        self.temporal = S2CATemporalTransformer(config, config.concept_dim)

    @staticmethod
    def geometry(per_frame_allocation: torch.Tensor) -> torch.Tensor:
        """`(B, K, F, 3)`: each concept's share of each frame's patches and the centroid (x, y in [-1, 1]) of its
        allocation over the patch grid, from the allocation `(B, K, F, 1 + P)` (token 0 of a frame is its [CLS])."""
        patches = per_frame_allocation[..., 1:]
        side = math.isqrt(patches.shape[-1])
        if side * side != patches.shape[-1]:
            raise ValueError(f"concept_tracks needs a square patch grid, got {patches.shape[-1]} patches per frame.")
        coordinates = torch.linspace(-1.0, 1.0, side, device=patches.device, dtype=patches.dtype)
        x = coordinates.repeat(side)  # CLIP's patches are row-major: index = row * side + column
        y = coordinates.repeat_interleave(side)
        mass = patches.sum(dim=-1)
        centroid_x = (patches * x).sum(dim=-1) / mass.clamp(min=1e-6)
        centroid_y = (patches * y).sum(dim=-1) / mass.clamp(min=1e-6)
        return torch.stack([mass / patches.shape[-1], centroid_x, centroid_y], dim=-1)

    def forward(
        self, states: torch.Tensor, per_frame_allocation: torch.Tensor, frame_mask: torch.Tensor
    ) -> torch.Tensor:
        """Pools the per-frame concept states `(B, K, F, D)` into one feature per concept `(B, K, D)`."""
        batch, num_concepts, num_frames, width = states.shape
        states = states + self.geometry_proj(self.geometry(per_frame_allocation))
        mask = frame_mask.repeat_interleave(num_concepts, dim=0)
        refined = self.temporal(states.reshape(batch * num_concepts, num_frames, width), mask)
        return masked_mean(refined, mask).view(batch, num_concepts, width)


class S2CAConceptModule(nn.Module):
    """The K prototypes and the allocator, both shared by text and video, and, with `concept_tracks`, the video
    concepts' temporal module."""

    def __init__(self, config: S2CAConfig):
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(config.num_concepts, config.projection_dim))
        self.allocator = S2CAConceptAllocator(config)
        self.tracks = S2CAConceptTracks(config) if config.concept_tracks else None
        # The late-interaction re-ranker's token weights (DRL's text weight branch): a linear map of each token.
        self.token_weights = nn.Linear(config.concept_dim, 1) if config.has_late_interaction else None

    def forward(
        self, tokens: torch.Tensor, token_mask: torch.Tensor, modality: str, tau: float, num_frames: int | None = None
    ) -> S2CAConceptOutput:
        """`num_frames`: video tokens come as that many frames of equally many tokens each."""
        if modality == "video":
            return self.allocator(self.prototypes, tokens, token_mask, tau, tracks=self.tracks, num_frames=num_frames)
        if self.token_weights is None:
            return self.allocator(self.prototypes, tokens, token_mask, tau)
        concepts = self.allocator(self.prototypes, tokens, token_mask, tau, with_token_features=True)
        weight_logits = self.token_weights(concepts.token_features).squeeze(-1)
        lowest = torch.finfo(weight_logits.dtype).min
        concepts.token_weights = weight_logits.masked_fill(~token_mask.bool(), lowest).softmax(dim=-1)
        return concepts

    def diversity_loss(self) -> torch.Tensor:
        """L_div: mean over k != l of the squared cosine between prototypes k and l."""
        normed = F.normalize(self.prototypes, dim=-1)
        cosines = normed @ normed.t()
        num_concepts = cosines.shape[0]
        if num_concepts < 2:
            return cosines.new_zeros(())
        off_diagonal = ~torch.eye(num_concepts, dtype=torch.bool, device=cosines.device)
        # A product with the mask rather than a boolean gather, whose data-dependent shape breaks torch.compile.
        return (cosines.pow(2) * off_diagonal).sum() / (num_concepts * (num_concepts - 1))


def balance_statistics(concepts: S2CAConceptOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sums behind L_bal over a batch's valid tokens: tokens that evaluation's noise-free argmax allocates to
    each concept `(K,)` (no gradient), noise-free softmax probability of each concept summed over tokens `(K,)`, and
    the token count.

    The counts come from argmax(Z), not from training's noisy allocation: with small logits the noisy one is close to
    uniform whatever Z does, and L_bal could not see the collapse that evaluation shows
    (two thirds of an item's tokens in one concept at evaluation, measured). Sums rather than means, so that
    the training loss can add them up across processes and get the global value.
    """
    logits, mask = concepts.allocation_logits, concepts.token_mask
    num_concepts = logits.shape[1]
    hard = F.one_hot(logits.detach().argmax(dim=1), num_concepts).transpose(1, 2).to(logits.dtype)
    counts = (hard * mask.unsqueeze(1)).sum(dim=(0, 2))
    probability_sums = (logits.softmax(dim=1) * mask.unsqueeze(1)).sum(dim=(0, 2))
    return counts, probability_sums, mask.sum()


def balance_loss_from_statistics(
    counts: torch.Tensor, probability_sums: torch.Tensor, num_tokens: torch.Tensor
) -> torch.Tensor:
    """L_bal = K sum_k f_k P_k (Switch Transformer's load-balancing loss) from `balance_statistics`' sums: f_k the
    fraction of tokens hard-allocated to concept k, P_k the mean noise-free softmax probability of k; smallest when
    the allocation is uniform over the concepts."""
    num_tokens = num_tokens.clamp(min=1.0)
    return counts.shape[0] * ((counts / num_tokens) * (probability_sums / num_tokens)).sum()


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained-model base
# ---------------------------------------------------------------------------------------------------------------------


class S2CAPreTrainedModel(PreTrainedModel):
    config: S2CAConfig
    config_class = S2CAConfig
    base_model_prefix = "s2ca"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "S2CATemporalLayer"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, and the folder is a pipeline and an endpoint too: `pipeline_s2ca.py`
        beside the model code with `custom_pipelines` in the config, so that `pipeline(model=folder,
        trust_remote_code=True)` loads any saved model (a training run's `final/`, `push_to_hub`) where this package
        is not installed, and `handler.py`, the custom handler of Inference Endpoints."""
        folders = [os.path.dirname(os.path.abspath(__file__))]  # the package, or the remote code's module copy
        if os.path.isdir(str(self.name_or_path)):  # remote code loaded from a folder: that folder's copies
            folders.append(str(self.name_or_path))
        sources = {}
        for name in (PIPELINE_FILE, HANDLER_FILE):
            found = [os.path.join(folder, name) for folder in folders if os.path.isfile(os.path.join(folder, name))]
            if found:
                sources[name] = found[0]
        if PIPELINE_FILE in sources:
            self.config.custom_pipelines = {
                PIPELINE_TASK: {"impl": f"{PIPELINE_FILE[:-3]}.VideoTextRetrievalPipeline", "pt": ["AutoModel"],
                                "type": "multimodal"},
            }  # fmt: skip
        elif hasattr(self.config, "custom_pipelines"):  # no file to point it at: the folder claims no pipeline
            del self.config.custom_pipelines
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for name, source in sources.items():
                target = os.path.join(save_directory, name)
                if not os.path.isfile(target) or not os.path.samefile(source, target):
                    shutil.copyfile(source, target)

    def _init_weights(self, module: nn.Module):
        # The CLIP towers are sub-models and are initialised by CLIP's own `_init_weights`.
        super()._init_weights(module)
        config = self.config
        if isinstance(module, S2CAModel):
            factor = config.initializer_factor
            init.normal_(module.text_projection.weight, std=config.text_config.hidden_size**-0.5 * factor)
            init.normal_(module.visual_projection.weight, std=config.vision_config.hidden_size**-0.5 * factor)
            init.constant_(module.logit_scale, config.logit_scale_init_value)
        elif isinstance(module, S2CAConceptModule):
            init.trunc_normal_(module.prototypes, std=config.prototype_init_std)


# ---------------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------------


class S2CAModel(S2CAPreTrainedModel):
    r"""
    S2CA for text-video retrieval: CLIP text and vision towers, a temporal module over frames, and K concept prototypes
    shared by both modalities. A text and a video each become an instance feature and K concept features; the score
    is `s_inst + concept_score_weight * s_con`, and it factorises as phi @ psi.T with phi and psi the
    `pooler_output` of `get_text_features` and `get_video_features`, so that videos can be encoded once and searched
    with a dot product.

    Example:

    ```python
    >>> import torch
    >>> from s2ca_hf import S2CAModel, S2CAProcessor

    >>> model = S2CAModel.from_pretrained("org/s2ca-msrvtt").eval()  # or .from_clip("openai/clip-vit-base-patch32")
    >>> processor = S2CAProcessor.from_pretrained("org/s2ca-msrvtt")
    >>> inputs = processor(text=["a man is cooking"], videos=["clip.mp4"], return_tensors="pt")
    >>> with torch.inference_mode():
    ...     outputs = model(**inputs)
    >>> outputs.logits_per_text.shape
    torch.Size([1, 1])
    ```
    """

    def __init__(self, config: S2CAConfig):
        super().__init__(config)
        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.temporal = S2CATemporalTransformer(config) if config.temporal_module == "transformer" else None
        self.concepts = S2CAConceptModule(config) if config.use_concepts else None
        self.gumbel_tau = float(config.gumbel_tau)
        self.post_init()

    @classmethod
    def from_clip(
        cls,
        clip_name_or_path: str,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        attn_implementation: str | None = None,
        dtype: torch.dtype | None = None,
        **config_overrides,
    ) -> "S2CAModel":
        """Builds an S2CA model whose towers, projections and logit scale are copied from a `CLIPModel` checkpoint.

        `clip_name_or_path` is a Hub id (`"openai/clip-vit-base-patch32"`) or a local folder saved with
        `CLIPModel.save_pretrained`. The temporal module and the concept modules are freshly initialised;
        `config_overrides` set any other `S2CAConfig` field (`num_concepts=16`, `temporal_module="mean"`, ...).
        """
        clip = CLIPModel.from_pretrained(
            clip_name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        projection_dim = clip.config.projection_dim
        text_config = {**clip.config.text_config.to_dict(), "projection_dim": projection_dim}
        vision_config = {**clip.config.vision_config.to_dict(), "projection_dim": projection_dim}
        config = S2CAConfig(
            text_config=text_config,
            vision_config=vision_config,
            projection_dim=projection_dim,
            logit_scale_init_value=float(clip.logit_scale.detach()),
            **config_overrides,
        )
        model = cls._from_config(config, attn_implementation=attn_implementation)
        clip_state = clip.state_dict()
        result = model.load_state_dict(clip_state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{clip_name_or_path}: CLIP weights with no place in S2CAModel: {result.unexpected_keys}")
        not_copied = [key for key in clip_state if key in result.missing_keys]
        if not_copied:
            raise ValueError(f"{clip_name_or_path}: CLIP weights that were not copied: {not_copied}")
        if dtype is not None:
            model = model.to(dtype)
        return model

    def _retrieval_vector(self, instance: torch.Tensor, concepts: S2CAConceptOutput | None):
        # phi(text) = [t ; sqrt(lambda_e) a*c], psi(video) = [v ; sqrt(lambda_e) a*c]: their dot product is
        # s_inst + lambda_e * s_con exactly.
        if concepts is None:
            return instance
        weighted = concepts.concept_weights.unsqueeze(-1) * concepts.concept_features
        return torch.cat([instance, math.sqrt(self.config.concept_score_weight) * weighted.flatten(1)], dim=-1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> S2CAEncoderOutput:
        r"""
        Encodes texts into their instance feature, concept features and retrieval vector phi.

        Args:
            input_ids (`torch.LongTensor` of shape `(T, L)`): CLIP token ids (start token, words, end-of-text).
            attention_mask (`torch.LongTensor` of shape `(T, L)`, *optional*): 1 for real tokens, 0 for padding.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        tokens = self.text_projection(outputs.last_hidden_state)
        instance = F.normalize(self.text_projection(outputs.pooler_output), dim=-1)

        # Concept tokens are the words and the end-of-text token: not the start token, nothing after end-of-text.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        eos_token_id = self.config.text_config.eos_token_id
        if eos_token_id == 2:  # old CLIP configs: end-of-text is the largest id, as CLIP's own pooling assumes
            eos_position = input_ids.argmax(dim=-1)
        else:
            eos_position = (input_ids == eos_token_id).int().argmax(dim=-1)
        start_position = attention_mask.int().argmax(dim=-1)
        token_mask = (
            attention_mask.bool()
            & (positions[None, :] <= eos_position[:, None])
            & (positions[None, :] != start_position[:, None])
        ).to(tokens.dtype)

        concepts = None
        if self.concepts is not None:
            # Detached: the concept branch learns on top of the towers and never pulls them from the instance score.
            concepts = self.concepts(tokens.detach(), token_mask, "text", self.gumbel_tau)
        return S2CAEncoderOutput(
            embeds=self._retrieval_vector(instance, concepts),
            instance_embeds=instance,
            concepts=concepts,
            tokens=tokens,
            token_mask=token_mask,
            model_output=outputs,
        )

    def encode_video(
        self, pixel_values_videos: torch.Tensor, frame_mask: torch.Tensor | None = None, **kwargs
    ) -> S2CAEncoderOutput:
        r"""
        Encodes videos into their instance feature, concept features and retrieval vector psi.

        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(V, F, 3, H, W)`): normalised frames, as
                `S2CAVideoProcessor` returns them.
            frame_mask (`torch.LongTensor` of shape `(V, F)`, *optional*): 1 for real frames, 0 for padding; missing
                means every frame is real. Padded frames never enter the vision tower (under torch.compile they
                enter as zeros and their outputs are dropped). Every video needs at least one real frame (a
                `ValueError` names those that have none; the check is eager-only).
        """
        batch, num_frames = pixel_values_videos.shape[:2]
        if frame_mask is None:
            frame_mask = torch.ones(batch, num_frames, dtype=torch.long, device=pixel_values_videos.device)
        if frame_mask.shape != (batch, num_frames):
            raise ValueError(
                f"frame_mask has shape {tuple(frame_mask.shape)}, pixel_values_videos {batch} videos of {num_frames} "
                "frames: it must be (videos, frames)."
            )
        # Under torch.compile nothing here may depend on the mask's values on the host (a graph break each): the
        # empty-video check is eager-only, and the real frames are masked instead of gathered (below).
        compiling = torch.compiler.is_compiling()
        empty = [] if compiling else (~frame_mask.bool().any(dim=1)).nonzero().flatten().tolist()
        if empty:
            # Such a video has nothing to encode: its psi would be a vector of zeros that scores 0 against every
            # text, which silently ranks it in the middle. A video that failed to decode is left out upstream.
            raise ValueError(
                f"Video(s) at batch position(s) {empty} have no real frame (frame_mask is all zero): there is nothing "
                "to encode. Leave videos that failed to decode out of the batch."
            )
        real = frame_mask.reshape(-1).bool()
        frames = pixel_values_videos.flatten(0, 1)
        if compiling:
            # A boolean gather has a data-dependent shape, which breaks the graph: the tower runs on every slot, a
            # padded one on zeros (so that whatever it held cannot reach a gradient), and its output is dropped below.
            # Each frame is encoded on its own, so the real frames' outputs are those of the eager gather (allclose).
            frames = frames.masked_fill(~real[:, None, None, None], 0.0)
        else:
            frames = frames[real]
        outputs = self.vision_model(pixel_values=frames, return_dict=True, **kwargs)
        want_patches = self.concepts is not None  # the concept branch reads every patch; the instance feature does not
        if want_patches:
            hidden = self.vision_model.post_layernorm(outputs.last_hidden_state)
        else:
            hidden = outputs.pooler_output.unsqueeze(1)
        hidden = self.visual_projection(hidden)
        # Scatter the real frames back into their slots; padded slots hold zeros.
        if compiling:
            frame_tokens = hidden.masked_fill(~real.view(-1, *[1] * (hidden.dim() - 1)), 0.0)
        else:
            frame_tokens = hidden.new_zeros(batch * num_frames, *hidden.shape[1:])
            frame_tokens[real] = hidden
        frame_tokens = frame_tokens.view(batch, num_frames, *hidden.shape[1:])

        frame_mask = frame_mask.to(frame_tokens.dtype)
        frame_features = frame_tokens[:, :, 0]
        if self.temporal is not None:
            frame_features = self.temporal(frame_features, frame_mask)
        instance = F.normalize(masked_mean(F.normalize(frame_features, dim=-1), frame_mask), dim=-1)

        tokens, token_mask = frame_features, frame_mask
        if want_patches:
            # Each frame's [CLS] is replaced by its temporally refined feature; patches keep their own.
            patches = frame_tokens[:, :, 1:]
            tokens = torch.cat([frame_features.unsqueeze(2), patches], dim=2).flatten(1, 2)
            token_mask = frame_mask.unsqueeze(-1).expand(-1, -1, frame_tokens.shape[2]).flatten(1)

        concepts = None
        if self.concepts is not None:
            concepts = self.concepts(tokens.detach(), token_mask, "video", self.gumbel_tau, num_frames=num_frames)
        return S2CAEncoderOutput(
            embeds=self._retrieval_vector(instance, concepts),
            instance_embeds=instance,
            concepts=concepts,
            tokens=tokens,
            token_mask=token_mask,
            frame_features=frame_features,
            model_output=outputs,
        )

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Returns a [`BaseModelOutputWithPooling`] whose `pooler_output` is phi(text), `(T, E)` with E =
        `config.embedding_dim` (the transformers v5 convention of `CLIPModel.get_text_features`); `last_hidden_state`,
        `hidden_states` and `attentions` are the CLIP text tower's. E is D + K d_c, D without concepts (d_c =
        `concept_dim`, D unless set).

        Layout (D = `projection_dim`, K = `num_concepts`), t the normalised instance feature, c_k the normalised
        concept features (zero if empty): `[t (D) ; sqrt(lambda_e) * a_k * c_k for k = 1..K (K*d_c)]`, a_k =
        sqrt(share of the text's tokens in k). `phi @ psi.T` (both `pooler_output`s) is the retrieval score
        (unscaled). The vector is not unit-norm: compare with a
        plain inner product, never a cosine.

        Example:

        ```python
        >>> phi = model.get_text_features(**processor(text=["a dog runs"], return_tensors="pt")).pooler_output
        ```
        """
        return _features_output(self.encode_text(input_ids, attention_mask, **kwargs))

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, frame_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Returns a [`BaseModelOutputWithPooling`] whose `pooler_output` is psi(video), `(V, E)` (`last_hidden_state`
        and the rest: the vision tower's, over the real frames of the batch). psi is
        `[v (D) ; sqrt(lambda_e) * a_k * c_k for k = 1..K]`, laid out as `get_text_features`. Store it once per
        video.

        Example:

        ```python
        >>> psi = model.get_video_features(**processor(videos=["clip.mp4"], return_tensors="pt")).pooler_output
        ```
        """
        return _features_output(self.encode_video(pixel_values_videos, frame_mask, **kwargs))

    @staticmethod
    def score(text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> torch.Tensor:
        """The retrieval score `(T, V)` of vectors from `get_text_features` and `get_video_features` (unscaled)."""
        return text_embeds @ video_embeds.t()

    def score_parts(self, text_embeds: torch.Tensor, video_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The score of `score` taken apart along the layout of phi and psi: s_inst `(T, V)` and each concept's share
        of lambda_e * s_con `(T, V, K)`, which sum to `score(text_embeds, video_embeds)` (what a concept map shows)."""
        width, num_concepts = self.config.projection_dim, self.config.num_concepts
        instance = text_embeds[:, :width] @ video_embeds[:, :width].t()
        if self.concepts is None:
            return instance, instance.new_zeros(*instance.shape, 0)
        text_blocks = text_embeds[:, width:].view(-1, num_concepts, self.config.concept_dim)
        video_blocks = video_embeds[:, width:].view(-1, num_concepts, self.config.concept_dim)
        return instance, torch.einsum("tkd,vkd->tvk", text_blocks, video_blocks)

    def similarities(
        self, text: S2CAEncoderOutput, video: S2CAEncoderOutput
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """s_inst `(T, V)` and s_con `(T, V)` (or None without concepts), both unscaled."""
        instance = text.instance_embeds @ video.instance_embeds.t()
        if text.concepts is None:
            return instance, None
        concept = concept_similarity(
            text.concepts.concept_features,
            text.concepts.concept_weights,
            video.concepts.concept_features,
            video.concepts.concept_weights,
        )
        return instance, concept

    def video_concepts_from_embeds(self, video_embeds: torch.Tensor) -> torch.Tensor:
        """The normalised video concept features `(V, K, d_c)` that psi `(V, E)` stores (the block after the instance
        feature, normalised again to undo the concept weights; an empty concept stays zero): what a search index
        holds already."""
        width, num_concepts, concept_width = (
            self.config.projection_dim,
            self.config.num_concepts,
            self.config.concept_dim,
        )
        blocks = video_embeds[:, width : width + num_concepts * concept_width].reshape(-1, num_concepts, concept_width)
        return F.normalize(blocks, dim=-1)

    def late_interaction_scores(self, text_concepts: S2CAConceptOutput, video_embeds: torch.Tensor) -> torch.Tensor:
        """The second-stage score `(T, V)` of encoded texts (`encode_text(...).concepts`) against psi `(V, E)`
        (`late_interaction_score`); needs `late_interaction_weight > 0`. A search re-ranks the first stage's top
        candidates by `score + late_interaction_scores`."""
        if not self.config.has_late_interaction:
            raise ValueError(
                "This model has no late-interaction re-ranker (config.late_interaction_weight is 0, or it has no "
                "concepts)."
            )
        if text_concepts is None or text_concepts.token_weights is None:
            raise ValueError("The texts were not encoded by a model with the late-interaction re-ranker.")
        return late_interaction_score(
            text_concepts.token_features, text_concepts.token_weights, self.video_concepts_from_embeds(video_embeds)
        )

    def logit_scale_value(self) -> torch.Tensor:
        # Clamped at ln(100), as CLIP and CLIP4Clip do, so the temperature cannot collapse during training.
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    def retrieval_loss(
        self,
        instance_similarity: torch.Tensor,
        concept_similarity: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        also_correct: torch.Tensor | None = None,
        foil_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_ret = NCE(S_inst) + lambda_c * NCE(sg(S_inst) + lambda_e * S_con) over the similarities `(B + F, B)` of B
        texts and F foils against B videos (`contrastive_loss`, whose `also_correct` and `foil_mask` it passes on to
        both terms; without them, F = 0 and the matrices are square). sg is a stop-gradient: the concept score learns
        on top of a fixed instance score, so what moves it is the pairs the instance score still confuses, not the
        evidence it already has (training the sum or the concept score alone ranked lower on val).

        Local here; the training script passes gathered matrices and its own `scale`, `exp(logit_scale)` with the
        gradient scaling its distribution needs."""
        scale = self.logit_scale_value() if scale is None else scale

        def contrastive(similarity: torch.Tensor) -> torch.Tensor:
            return contrastive_loss(scale * similarity, also_correct, foil_mask)

        instance = contrastive(instance_similarity)
        if concept_similarity is None:
            return instance
        residual = contrastive(instance_similarity.detach() + self.config.concept_score_weight * concept_similarity)
        return instance + self.config.concept_loss_weight * residual

    def compute_loss(
        self,
        outputs: "S2CAOutput",
        foils: S2CAEncoderOutput | None = None,
        also_correct: torch.Tensor | None = None,
        foil_mask: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        gather: Callable[[torch.Tensor], torch.Tensor] = _unchanged,
        sum_over_processes: Callable[[torch.Tensor], torch.Tensor] = _unchanged,
    ) -> S2CALossTerms:
        """The training loss of a batch (text i describes video i), composed here and only here: L_ret
        (`retrieval_loss`) + w_late x NCE of the late-interaction score + w_bal L_bal + w_div L_div, each weight a
        config field, a term left out at weight 0.

        `forward(return_loss=True)` calls it on the local batch. A data-parallel trainer passes `gather` (each
        process's features concatenated over the processes, this process's slice differentiable) and
        `sum_over_processes` (the allocation statistics of L_bal summed over the processes), and its own
        `scale` (`exp(logit_scale)`; default this model's). `foils` (encoded false captions, one per row, negatives
        in the video-to-text softmaxes where `foil_mask` says so) and `also_correct` (texts that fit another video of
        the batch: neither positive nor negative) follow `contrastive_loss`."""
        config = self.config
        scale = self.logit_scale_value() if scale is None else scale

        def texts_then_foils(text: torch.Tensor | None, foil: torch.Tensor | None) -> torch.Tensor | None:
            if text is None:
                return None
            text = gather(text)
            return text if foil is None else torch.cat([text, gather(foil)])

        def of_foils(part: str) -> torch.Tensor | None:  # a concept output of the foils, if any
            return None if foils is None else getattr(foils.concepts, part)

        text_concepts, video_concepts = outputs.text_concepts, outputs.video_concepts
        text = texts_then_foils(outputs.text_instance_embeds, None if foils is None else foils.instance_embeds)
        video = gather(outputs.video_instance_embeds)
        batch = video.shape[0]
        instance = text @ video.t()  # (B + F, B)
        concept = None
        if text_concepts is not None:
            text_features = texts_then_foils(text_concepts.concept_features, of_foils("concept_features"))
            video_features = gather(video_concepts.concept_features)
            concept = concept_similarity(
                text_features,
                texts_then_foils(text_concepts.concept_weights, of_foils("concept_weights")),
                video_features,
                gather(video_concepts.concept_weights),
            )
        retrieval = self.retrieval_loss(instance, concept, scale, also_correct, foil_mask)
        per_process, terms = retrieval, {}
        if text_concepts is not None and config.has_late_interaction:
            # Token rows padded to the longest text the model takes, so that batches of any length gather and stack.
            length = config.text_config.max_position_embeddings

            def padded(part: torch.Tensor | None) -> torch.Tensor | None:
                return None if part is None else F.pad(part, (0, 0) * (part.dim() - 2) + (0, length - part.shape[1]))

            late = late_interaction_score(
                texts_then_foils(padded(text_concepts.token_features), padded(of_foils("token_features"))),
                texts_then_foils(padded(text_concepts.token_weights), padded(of_foils("token_weights"))),
                video_features,
            )
            terms["late_interaction"] = contrastive_loss(scale * late, also_correct, foil_mask)
            per_process = per_process + config.late_interaction_weight * terms["late_interaction"]
        shared = retrieval.new_zeros(())
        if text_concepts is not None:
            # Over the global batch's tokens: the statistics are sums, added up over the processes.
            sides = (text_concepts, video_concepts)
            terms["balance"] = 0.5 * sum(
                balance_loss_from_statistics(*map(sum_over_processes, balance_statistics(side))) for side in sides
            )
            per_process = per_process + config.balance_loss_weight * terms["balance"]
            terms["diversity"] = self.concepts.diversity_loss()
            shared = config.diversity_loss_weight * terms["diversity"]
        return S2CALossTerms(
            per_process=per_process,
            shared=shared,
            retrieval=retrieval,
            instance_similarity=instance[:batch],
            concept_similarity=None if concept is None else concept[:batch],
            **terms,
        )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> S2CAOutput | tuple:
        r"""
        Scores every text against every video.

        Args:
            input_ids (`torch.LongTensor` of shape `(T, L)`): token ids from `S2CAProcessor`.
            attention_mask (`torch.LongTensor` of shape `(T, L)`, *optional*): 1 for real tokens.
            pixel_values_videos (`torch.FloatTensor` of shape `(V, F, 3, H, W)`): frames from `S2CAProcessor`.
            frame_mask (`torch.LongTensor` of shape `(V, F)`, *optional*): 1 for real frames.
            return_loss (`bool`, *optional*, defaults to `False`): also compute the local-batch loss (needs T == V,
                text i describing video i).
            return_dict (`bool`, *optional*): return a tuple instead of an [`S2CAOutput`] when `False`.

        Example:

        ```python
        >>> outputs = model(**processor(text=["a dog runs", "a cat"], videos=[clip_a, clip_b], return_tensors="pt"))
        >>> outputs.logits_per_text.softmax(dim=-1)  # which video each text describes
        ```
        """
        if input_ids is None or pixel_values_videos is None:
            raise ValueError("S2CAModel.forward needs both `input_ids` and `pixel_values_videos`.")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        text = self.encode_text(input_ids, attention_mask, **kwargs)
        video = self.encode_video(pixel_values_videos, frame_mask, **kwargs)

        instance_sim, concept_sim = self.similarities(text, video)
        score = instance_sim if concept_sim is None else instance_sim + self.config.concept_score_weight * concept_sim
        logits_per_text = self.logit_scale_value() * score

        if return_loss and logits_per_text.shape[0] != logits_per_text.shape[1]:
            raise ValueError(
                f"return_loss=True needs one text per video (text i describes video i); got "
                f"{logits_per_text.shape[0]} texts and {logits_per_text.shape[1]} videos."
            )
        fields = dict(
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            text_embeds=text.embeds,
            video_embeds=video.embeds,
            text_instance_embeds=text.instance_embeds,
            video_instance_embeds=video.instance_embeds,
            instance_similarity=instance_sim,
            concept_similarity=concept_sim,
            text_concepts=text.concepts,
            video_concepts=video.concepts,
            text_model_output=text.model_output,
            vision_model_output=video.model_output,
        )
        if return_loss:
            terms = self.compute_loss(S2CAOutput(**fields))
            fields.update(
                loss=terms.per_process + terms.shared,
                retrieval_loss=terms.retrieval,
                diversity_loss=terms.diversity,
                balance_loss=terms.balance,
            )
        output = S2CAOutput(**fields)
        return output if return_dict else output.to_tuple()


def _features_output(encoded: S2CAEncoderOutput) -> BaseModelOutputWithPooling:
    tower = encoded.model_output
    return BaseModelOutputWithPooling(
        last_hidden_state=getattr(tower, "last_hidden_state", None),
        pooler_output=encoded.embeds,
        hidden_states=getattr(tower, "hidden_states", None),
        attentions=getattr(tower, "attentions", None),
    )


__all__ = [
    "S2CAConceptOutput",
    "S2CAEncoderOutput",
    "S2CAModel",
    "S2CAOutput",
    "S2CAPreTrainedModel",
    "balance_loss_from_statistics",
    "balance_statistics",
    "concept_similarity",
    "contrastive_loss",
]
