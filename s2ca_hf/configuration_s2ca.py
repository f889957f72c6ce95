"""S2CA model configuration.

S2CA: *Shared Concept Prototypes and Concept-level Alignment for text-video retrieval*, Li, Xin, Qian and Dong,
Neurocomputing 614, 128851 (2024), https://doi.org/10.1016/j.neucom.2024.128851.

Only the paper's abstract is public. Every choice the abstract leaves open is a field of `S2CAConfig`, so that it
can be changed when the full paper is read (see the package README, "The method is a reconstruction").
"""

import difflib
import math

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)


# Fields of earlier releases that only shaped training (a temperature anneal, a loss term, the noise or the gradient
# of the concept branch): a saved model that has them computes what it computed, so they are dropped without a word.
_TRAINING_ONLY_REMOVED = (
    "gumbel_tau_min",
    "gumbel_anneal_start",
    "routing_agreement_weight",
    "routing_agreement_epsilon",
    "gumbel_noise_scale",
    "concept_gradient_scale",
    "concept_contrastive_weight",
    "entropy_loss_weight",
    "retrieval_loss",
)
# Fields of earlier releases that shaped the model itself, with the one value this release computes: a saved config at
# that value loads as it was; any other value is refused, since these weights would compute something else.
_ARCHITECTURE_REMOVED = {
    "concept_weighting": "usage",
    "video_tokens": "patches",
    "share_concept_projections": True,
    "concept_adapter_layers": 0,
}

_CHOICES = {
    "temporal_module": ("mean", "transformer"),
    "allocation": ("gumbel", "soft", "expert_choice"),
}


def _is_number(value, integer: bool = False) -> bool:
    allowed = int if integer else (int, float)
    return isinstance(value, allowed) and not isinstance(value, bool)


class S2CAConfig(PretrainedConfig):
    r"""
    Configuration of an [`S2CAModel`]: two CLIP towers, a temporal module and the shared concept prototypes.

    The defaults are S2CA on OpenAI CLIP ViT-B/32 (`openai/clip-vit-base-patch32`): joint dimension 512, 12 frames,
    a 4-layer temporal transformer, and 16 shared concepts over the words of a caption and the patch tokens of every
    frame, allocated discretely by expert choice: each video concept takes its 4 best tokens in every frame and
    follows them over the frames as a track, each word goes to its best concept, and a late-interaction re-ranker
    (each word against its best video concept) is trained beside. The concept branch reads the towers' tokens
    without sending a gradient back into them, and is trained by the residual loss `L_ret = NCE(S_inst) + lambda_c *
    NCE(sg(S_inst) + lambda_e * S_con)` (sg a stop-gradient): the instance score is trained alone and the concept
    score on what it still gets wrong. Concepts are weighted by usage, so that phi and psi have D + K d_c numbers.
    The hard Gumbel-softmax allocation of the paper's abstract is `allocation="gumbel"`.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*):
            The CLIP text tower. `None` gives the ViT-B/32 text tower.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The CLIP vision tower. `None` gives the ViT-B/32 vision tower.
        projection_dim (`int`, *optional*, defaults to 512):
            D, the joint text-video dimension (CLIP's projection size). Must equal the `projection_dim` of both
            sub-configs.
        num_frames (`int`, *optional*, defaults to 12):
            F, the number of frames per video the model is trained with (64 for DiDeMo and ActivityNet). The
            processor's `max_frames` defaults to it; the model accepts any count up to
            `temporal_max_position_embeddings`.
        temporal_module (`str`, *optional*, defaults to `"transformer"`):
            `"mean"` (CLIP4Clip meanP: no temporal parameters) or `"transformer"` (CLIP4Clip seqTransf: frame
            position embeddings, a small transformer over frames and a residual to its input).
        temporal_num_hidden_layers (`int`, *optional*, defaults to 4):
            Layers of the temporal transformer.
        temporal_num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads of the temporal transformer; must divide `projection_dim`.
        temporal_intermediate_size (`int`, *optional*):
            MLP width of the temporal transformer; by default 4 x `projection_dim` (2048 for ViT-B/32).
        temporal_max_position_embeddings (`int`, *optional*, defaults to 128):
            Largest number of frames the temporal transformer has position embeddings for.
        temporal_hidden_act (`str`, *optional*, defaults to `"quick_gelu"`):
            Activation of the temporal transformer's MLP (CLIP's QuickGELU, as CLIP4Clip).
        use_concepts (`bool`, *optional*, defaults to `True`):
            Whether the shared concept prototypes are used. `False` gives the CLIP4Clip baseline (meanP or seqTransf
            by `temporal_module`): the score is the instance score alone.
        num_concepts (`int`, *optional*, defaults to 16):
            K, the number of shared concept prototypes (16 ranked above 4 and 8 on val).
        concept_dim (`int`, *optional*):
            d_c, the width of the concept features (at most `projection_dim`; default `projection_dim`). psi stores
            D + K d_c numbers per video, so a narrower concept width shrinks every index.
        allocation (`str`, *optional*, defaults to `"expert_choice"`):
            How tokens are allocated to concepts. `"expert_choice"` (the default): binary in training and evaluation
            alike, no noise. Each video concept picks its `tokens_per_concept` best tokens in every frame
            (expert-choice routing, so a video concept is never empty and its picks trace where it is frame by
            frame); each text token goes to its best concept (an empty text concept is one the caption does not
            mention, and the score ignores it). The gradient is the straight-through one of the softmax over the
            frame's tokens (video) or over the concepts (text).
            `"soft"`: a plain softmax over the concepts, no noise, no one-hot: every concept takes a near-uniform
            share of every token, and the concept features become one mean pool.
            `"gumbel"` (the paper's abstract): Gumbel-softmax (standard Gumbel noise) with a hard one-hot forward
            pass and a straight-through gradient in training, argmax (no noise) in evaluation; it left most concepts
            empty at evaluation and ranked 15-30 val R@1 points below soft allocation.
        gumbel_tau (`float`, *optional*, defaults to 1.0):
            Temperature of the softmax whose gradient the hard allocations pass straight through.
        concept_tracks (`bool`, *optional*, defaults to `True`):
            Whether video concepts are tracks: aggregated frame by frame (each frame's concept feature plus its share
            of the frame's patches and their centroid), refined over the frames by a temporal transformer of their
            own (`temporal_*` sizes) and averaged over the real frames, so that a concept can carry its object's
            motion. `False`: each concept pools its tokens over the whole clip.
        concept_eps (`float`, *optional*, defaults to 1.0):
            epsilon in the aggregation `sum_n A_kn V_n / (n_k + epsilon)` (GroupViT's smoothing).
        concept_score_weight (`float`, *optional*, defaults to 1.0):
            lambda_e, the weight of the concept similarity in the retrieval score `s = s_inst + lambda_e * s_con`.
        concept_loss_weight (`float`, *optional*, defaults to 1.0):
            lambda_c, the weight of the concept term in the residual loss `L_ret = NCE(S_inst) + lambda_c *
            NCE(sg(S_inst) + lambda_e * S_con)`.
        tokens_per_concept (`int`, *optional*, defaults to 4):
            With `allocation="expert_choice"`: how many tokens of each frame every video concept picks.
        late_interaction_weight (`float`, *optional*, defaults to 0.5):
            Weight of the contrastive loss of the late-interaction re-ranker; above 0 the model has one
            (`S2CAModel.late_interaction_scores`): the second stage of a search scores each caption token against the
            video's best-matching concept, read from psi, with learned token weights, and re-ranks the first
            stage's top candidates.
        diversity_loss_weight (`float`, *optional*, defaults to 0.01):
            Weight of the prototype diversity regulariser (mean squared cosine between distinct prototypes).
        balance_loss_weight (`float`, *optional*, defaults to 0.01):
            Weight of the anti-collapse balance regulariser `K sum_k f_k P_k` (Switch-Transformer form), averaged
            over the two modalities.
        prototype_init_std (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated-normal prototype initialisation.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
            Initial log of the inverse temperature (CLIP's ln(1/0.07)). `S2CAModel.from_clip` copies the
            checkpoint's value instead.
        logit_scale_max (`float`, *optional*, defaults to 4.6052):
            The logit scale is clamped at this value (ln 100) in the forward pass, as CLIP and CLIP4Clip do.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the new linear layers and embeddings.
        initializer_factor (`float`, *optional*, defaults to 1.0):
            Scale of the CLIP-style initialisation of the text and video projections.

    Example:

    ```python
    >>> from s2ca_hf import S2CAConfig, S2CAModel

    >>> config = S2CAConfig()  # ViT-B/32 towers, K = 16 concepts
    >>> model = S2CAModel(config)  # randomly initialised; use S2CAModel.from_clip(...) to start from CLIP
    >>> config.num_concepts
    16
    ```"""

    model_type = "s2ca"
    # transformers <= 5.20 reads `sub_configs`; later releases read `sub_configs_defaults`. Declaring both keeps the
    # sub-config machinery (attention implementation, dtype, save/load) working across the supported range.
    sub_configs = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}
    sub_configs_defaults = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    text_config: dict | CLIPTextConfig | None = None
    vision_config: dict | CLIPVisionConfig | None = None
    projection_dim: int = 512
    num_frames: int = 12
    temporal_module: str = "transformer"
    temporal_num_hidden_layers: int = 4
    temporal_num_attention_heads: int = 8
    temporal_intermediate_size: int | None = None
    temporal_max_position_embeddings: int = 128
    temporal_hidden_act: str = "quick_gelu"
    use_concepts: bool = True
    num_concepts: int = 16
    concept_dim: int | None = None
    allocation: str = "expert_choice"
    gumbel_tau: float | int = 1.0
    concept_tracks: bool = True
    tokens_per_concept: int = 4
    late_interaction_weight: float | int = 0.5
    concept_eps: float | int = 1.0
    concept_score_weight: float | int = 1.0
    concept_loss_weight: float | int = 1.0
    diversity_loss_weight: float | int = 1e-2
    balance_loss_weight: float | int = 1e-2
    prototype_init_std: float | int = 0.02
    logit_scale_init_value: float | int = 2.6592
    logit_scale_max: float | int = math.log(100.0)
    initializer_range: float | int = 0.02
    initializer_factor: float | int = 1.0

    def __post_init__(self, **kwargs):
        for key in _TRAINING_ONLY_REMOVED:
            kwargs.pop(key, None)
        for key, kept in _ARCHITECTURE_REMOVED.items():
            if key in kwargs and kwargs.pop(key) != kept:
                raise ValueError(
                    f"This config sets `{key}`, an option this release of s2ca-hf no longer has (it computes "
                    f"`{key}={kept!r}` only; the method documentation says what was removed and why): a model saved "
                    "with it cannot be loaded by this release."
                )
        self._check_unknown_keys(kwargs)
        if __name__.startswith("s2ca_hf."):
            # The installed package registers the pipeline itself, so `pipeline("video-text-retrieval", model=folder)`
            # needs no remote code; a saved folder's `custom_pipelines` (written back by `save_pretrained`) points
            # processes without the package to the folder's copy of the pipeline.
            kwargs.pop("custom_pipelines", None)
        if self.temporal_intermediate_size is None:  # derived, as a transformer block's MLP usually is
            self.temporal_intermediate_size = 4 * self.projection_dim
        if self.concept_dim is None:
            self.concept_dim = self.projection_dim
        self.text_config = self._build_sub_config("text_config", self.text_config, CLIPTextConfig)
        self.vision_config = self._build_sub_config("vision_config", self.vision_config, CLIPVisionConfig)
        self._check_values()
        super().__post_init__(**kwargs)

    def _check_unknown_keys(self, kwargs: dict) -> None:
        """A key that is no field is kept as an attribute (transformers' way) but the model never reads it: refuse one
        that looks like a misspelt field (`num_concepst`), warn about any other, naming it."""
        fields = list(type(self).__annotations__)
        unknown = [
            key
            for key in kwargs
            # auto_map and custom_pipelines: where the Hub custom code of the model and its pipeline live; a leading
            # underscore: transformers' own bookkeeping (`_commit_hash` in older releases)
            if key not in ("model_type", "auto_map", "custom_pipelines")
            and not key.startswith("_")
            and not hasattr(PretrainedConfig, key)
            and key not in PretrainedConfig.__annotations__
        ]
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.85)
            if close:
                raise ValueError(f"S2CAConfig has no field `{key}`: did you mean `{close[0]}`?")
        if unknown:
            logger.warning(
                f"S2CAConfig: {unknown} are not S2CA fields; they are kept but the model does not use them."
            )

    def _build_sub_config(self, name, value, config_class):
        if value is None:
            value = {}
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "model_type"}
            # A sub-config that does not name its projection size follows the joint dimension.
            value.setdefault("projection_dim", self.projection_dim)
            value = config_class(**value)
        if not isinstance(value, config_class):
            raise TypeError(f"`{name}` must be a dict or a {config_class.__name__}, got {type(value).__name__}.")
        if value.projection_dim != self.projection_dim:
            raise ValueError(
                f"`projection_dim` ({self.projection_dim}) must equal `{name}.projection_dim` "
                f"({value.projection_dim}): both towers project into the joint space."
            )
        return value

    def _check_values(self):
        for field, allowed in _CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"`{field}` must be one of {allowed}, got {getattr(self, field)!r}.")
        for field in ("use_concepts", "concept_tracks"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"`{field}` must be True or False, got {getattr(self, field)!r}.")
        positive_ints = (
            "projection_dim",
            "num_frames",
            "num_concepts",
            "temporal_num_hidden_layers",
            "temporal_num_attention_heads",
            "temporal_intermediate_size",
            "temporal_max_position_embeddings",
            "tokens_per_concept",
            "concept_dim",
        )
        for field in positive_ints:
            value = getattr(self, field)
            if not _is_number(value, integer=True) or value < 1:
                raise ValueError(f"`{field}` must be an integer >= 1, got {value!r}.")
        for field in (
            "gumbel_tau",
            "concept_eps",
            "prototype_init_std",
            "initializer_range",
            "initializer_factor",
        ):
            value = getattr(self, field)
            if not _is_number(value) or not value > 0:
                raise ValueError(f"`{field}` must be a number > 0, got {value!r}.")
        non_negative = (
            "concept_score_weight",
            "concept_loss_weight",
            "diversity_loss_weight",
            "balance_loss_weight",
            "late_interaction_weight",
        )
        for field in non_negative:
            value = getattr(self, field)
            if not _is_number(value) or not value >= 0:
                raise ValueError(f"`{field}` must be a number >= 0, got {value!r}.")
        for field in ("logit_scale_init_value", "logit_scale_max"):
            if not _is_number(getattr(self, field)):
                raise ValueError(f"`{field}` must be a number, got {getattr(self, field)!r}.")
        if self.projection_dim % self.temporal_num_attention_heads:
            raise ValueError(
                f"`temporal_num_attention_heads` ({self.temporal_num_attention_heads}) must divide "
                f"`projection_dim` ({self.projection_dim})."
            )
        if self.concept_dim > self.projection_dim:
            raise ValueError(
                f"`concept_dim` ({self.concept_dim}) must be <= `projection_dim` ({self.projection_dim})."
            )
        if self.concept_tracks and self.concept_dim % self.temporal_num_attention_heads:
            raise ValueError(
                f"`temporal_num_attention_heads` ({self.temporal_num_attention_heads}) must divide `concept_dim` "
                f"({self.concept_dim}): the concept tracks' temporal transformer runs at the concept width."
            )
        if self.num_frames > self.temporal_max_position_embeddings:
            raise ValueError(
                f"`num_frames` ({self.num_frames}) must be <= `temporal_max_position_embeddings` "
                f"({self.temporal_max_position_embeddings})."
            )

    @property
    def embedding_dim(self) -> int:
        """Size of the retrieval vectors returned by `get_text_features` / `get_video_features`: D + K d_c (d_c =
        `concept_dim`), D without concepts."""
        if not self.use_concepts:
            return self.projection_dim
        return self.projection_dim + self.num_concepts * self.concept_dim

    @property
    def has_late_interaction(self) -> bool:
        """Whether the model has the late-interaction re-ranker: concepts on and `late_interaction_weight > 0`."""
        return self.use_concepts and self.late_interaction_weight > 0


__all__ = ["S2CAConfig"]
