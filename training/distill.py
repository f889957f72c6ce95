"""Align-Transform-Reconstruct distillation from a frozen CLIP teacher (docs/method.md §6.3). Training only.

    teacher   a `CLIPModel` in eval mode without gradient: its text feature, its meanP video feature (the mean of the
              normalised frame features) and its tokens (text tokens; one feature per frame for video).
    heads     `ATRHeads`: the projectors g_t, g_v (Linear D -> D_T + LayerNorm) and, for Reconstruct, a mask token,
              position embeddings and a one-layer transformer generator per modality.
    loss      L_ATR = w_A L_A + w_T L_T + w_R L_R over the global batch, each term with its own weight and switch.

`S2CATrainingModule` holds the student and the heads, so that one DDP wrapper synchronises both; only its `student`
is exported. The teacher is never wrapped, never optimised and never saved.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from losses import gather_global_batch, scale_for_global_loss
from torch import nn
from transformers import CLIPModel

from s2ca_hf.modeling_s2ca import S2CAModel, S2CAOutput, masked_mean


TEACHER_SCALE = 100.0  # sigma_T of the Align term


@dataclass
class TeacherOutput:
    text: torch.Tensor  # (B, D_T) normalised text features
    video: torch.Tensor  # (B, D_T) normalised meanP video features
    text_tokens: torch.Tensor  # (B, L, D_T) projected token states
    frame_tokens: torch.Tensor  # (B, F, D_T) projected per-frame features (zero on padded frames)


class Teacher(nn.Module):
    """A frozen CLIP. Its video outputs are deterministic for a fixed input, so they are cached per video index
    (on the CPU) when `cache_videos` is set and the batch says which videos it holds."""

    def __init__(self, clip: CLIPModel, cache_videos: bool = True):
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.cache_videos = cache_videos
        self._video_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        return self.clip.config.projection_dim

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # always eval: no dropout, deterministic outputs

    @torch.no_grad()
    def encode_video(self, pixel_values_videos: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch, num_frames = pixel_values_videos.shape[:2]
        real = frame_mask.reshape(-1).bool()
        pooled = self.clip.vision_model(pixel_values=pixel_values_videos.flatten(0, 1)[real]).pooler_output
        features = self.clip.visual_projection(pooled).float()
        frames = features.new_zeros(batch * num_frames, features.shape[-1])
        frames[real] = features
        frames = frames.view(batch, num_frames, -1)
        video = F.normalize(masked_mean(F.normalize(frames, dim=-1), frame_mask.float()), dim=-1)
        return video, frames

    @torch.no_grad()
    def forward(self, input_ids, attention_mask, pixel_values_videos, frame_mask, video_index=None) -> TeacherOutput:
        text_out = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        text = F.normalize(self.clip.text_projection(text_out.pooler_output).float(), dim=-1)
        text_tokens = self.clip.text_projection(text_out.last_hidden_state).float()
        if video_index is None or not self.cache_videos:
            video, frames = self.encode_video(pixel_values_videos, frame_mask)
        else:
            keys = video_index.tolist()
            todo = [i for i, key in enumerate(keys) if key not in self._video_cache]
            if todo:
                rows = torch.tensor(todo, device=pixel_values_videos.device)
                new_video, new_frames = self.encode_video(pixel_values_videos[rows], frame_mask[rows])
                for j, i in enumerate(todo):
                    self._video_cache[keys[i]] = (new_video[j].cpu(), new_frames[j].cpu())
            device = input_ids.device
            video = torch.stack([self._video_cache[key][0] for key in keys]).to(device)
            frames = torch.stack([self._video_cache[key][1] for key in keys]).to(device)
        return TeacherOutput(text, video, text_tokens, frames)


class TokenGenerator(nn.Module):
    """Reconstruct's generator: masked tokens are replaced by a learnable mask token, position embeddings are added,
    and one transformer layer predicts the teacher's tokens."""

    def __init__(self, dim: int, max_positions: int, num_heads: int):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.position_embedding = nn.Embedding(max_positions, dim)
        self.layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        hidden = torch.where(masked.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = hidden + self.position_embedding(positions)
        return self.layer(hidden, src_key_padding_mask=~valid)


class ATRHeads(nn.Module):
    """The training-only heads: projectors for Transform (and Reconstruct's inputs), generators for Reconstruct."""

    def __init__(
        self, student_dim: int, teacher_dim: int, max_positions: int, reconstruct: bool, mask_ratio: float = 0.5
    ):
        super().__init__()
        self.project_text = nn.Sequential(nn.Linear(student_dim, teacher_dim), nn.LayerNorm(teacher_dim))
        self.project_video = nn.Sequential(nn.Linear(student_dim, teacher_dim), nn.LayerNorm(teacher_dim))
        self.mask_ratio = mask_ratio
        self.generate_text = self.generate_video = None
        if reconstruct:
            heads = next(h for h in (8, 4, 2, 1) if teacher_dim % h == 0)
            self.generate_text = TokenGenerator(teacher_dim, max_positions, heads)
            self.generate_video = TokenGenerator(teacher_dim, max_positions, heads)

    def random_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """Masks round(ratio * n) of the n valid positions of each row (at least one), chosen uniformly."""
        scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, 2.0)
        order = scores.argsort(dim=1).argsort(dim=1)  # rank of each position; valid ones come first
        count = (valid.sum(dim=1, keepdim=True) * self.mask_ratio).round().clamp(min=1)
        return (order < count) & valid


@dataclass
class StudentOutputs:
    outputs: S2CAOutput  # what `S2CALoss` reads
    text_projected: torch.Tensor | None = None  # g_t(t)
    video_projected: torch.Tensor | None = None  # g_v(v)
    text_reconstruction: torch.Tensor | None = None  # generator outputs over every position
    video_reconstruction: torch.Tensor | None = None
    text_masked: torch.Tensor | None = None  # which positions were masked
    video_masked: torch.Tensor | None = None


class S2CATrainingModule(nn.Module):
    """The student and its ATR heads under one module (one DDP wrapper, one optimizer, one checkpoint)."""

    def __init__(self, student: S2CAModel, heads: ATRHeads | None = None):
        super().__init__()
        self.student = student
        self.heads = heads

    def forward(self, input_ids, attention_mask, pixel_values_videos, frame_mask) -> StudentOutputs:
        text = self.student.encode_text(input_ids, attention_mask)
        video = self.student.encode_video(pixel_values_videos, frame_mask)
        outputs = S2CAOutput(
            text_instance_embeds=text.instance_embeds,
            video_instance_embeds=video.instance_embeds,
            text_concepts=text.concepts,
            video_concepts=video.concepts,
        )
        result = StudentOutputs(outputs)
        if self.heads is None:
            return result
        result.text_projected = self.heads.project_text(text.instance_embeds)
        result.video_projected = self.heads.project_video(video.instance_embeds)
        if self.heads.generate_text is not None:
            text_valid = text.token_mask.bool()
            video_valid = frame_mask.bool()
            result.text_masked = self.heads.random_mask(text_valid)
            result.video_masked = self.heads.random_mask(video_valid)
            text_tokens = self.heads.project_text(text.tokens)
            frame_tokens = self.heads.project_video(video.frame_features)
            result.text_reconstruction = self.heads.generate_text(text_tokens, text_valid, result.text_masked)
            result.video_reconstruction = self.heads.generate_video(frame_tokens, video_valid, result.video_masked)
        return result


@dataclass
class ATRLossOutput:
    loss: torch.Tensor  # to back-propagate (with the per-process scaling DDP needs)
    value: torch.Tensor  # the global weighted L_ATR, for logging
    terms: dict[str, torch.Tensor]  # the global unweighted terms ("align", "transform", "reconstruct")


def _all_reduce_sum(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    tensor = tensor.detach().clone()
    if world_size > 1:
        dist.all_reduce(tensor)
    return tensor


class ATRLoss(nn.Module):
    """L_ATR over the global batch. Align is a global quantity (gathered with gradient and scaled by the process
    count, as in `S2CALoss`); Transform is a mean over samples (DDP's averaging already gives the global gradient);
    Reconstruct is a mean over the masked positions of the whole global batch (their count is summed first)."""

    def __init__(self, align: float, transform: float, reconstruct: float, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.weights = {"align": align, "transform": transform, "reconstruct": reconstruct}
        self.rank, self.world_size = rank, world_size

    def forward(self, student: S2CAModel, result: StudentOutputs, teacher: TeacherOutput) -> ATRLossOutput:
        world = self.world_size
        loss = value = torch.zeros((), device=teacher.text.device)
        terms = {}
        if self.weights["align"]:
            text = gather_global_batch(result.outputs.text_instance_embeds, self.rank, world)
            video = gather_global_batch(result.outputs.video_instance_embeds, self.rank, world)
            teacher_text = gather_global_batch(teacher.text, self.rank, world)
            teacher_video = gather_global_batch(teacher.video, self.rank, world)
            scale = scale_for_global_loss(student.logit_scale_value(), world)
            student_logits = scale * (text @ video.t()).float()
            teacher_logits = TEACHER_SCALE * teacher_text @ teacher_video.t()
            kl = dict(log_target=True, reduction="batchmean")
            align = 0.5 * (
                F.kl_div(student_logits.log_softmax(1), teacher_logits.log_softmax(1), **kl)
                + F.kl_div(student_logits.log_softmax(0).t(), teacher_logits.log_softmax(0).t(), **kl)
            )
            terms["align"] = align.detach()
            loss = loss + self.weights["align"] * world * align
            value = value + self.weights["align"] * align.detach()
        if self.weights["transform"]:
            transform = (1 - F.cosine_similarity(result.text_projected.float(), teacher.text, dim=-1)).mean() + (
                1 - F.cosine_similarity(result.video_projected.float(), teacher.video, dim=-1)
            ).mean()
            terms["transform"] = _all_reduce_sum(transform, world) / world
            loss = loss + self.weights["transform"] * transform
            value = value + self.weights["transform"] * terms["transform"]
        if self.weights["reconstruct"]:
            squared = torch.zeros((), device=loss.device)
            count = torch.zeros((), device=loss.device)
            pairs = (
                (result.text_reconstruction, teacher.text_tokens, result.text_masked),
                (result.video_reconstruction, teacher.frame_tokens, result.video_masked),
            )
            for prediction, target, masked in pairs:
                target = F.layer_norm(target, target.shape[-1:])  # no affine on the target
                # ||G_n - LN(X^T_n)||^2 / D_T: per dimension, so that the default weight 1 does not let a
                # D_T-sized sum (512 for ViT-B/32) drown the retrieval loss.
                error = (prediction.float() - target).pow(2).mean(dim=-1)
                squared = squared + (error * masked).sum()
                count = count + masked.sum()
            total = _all_reduce_sum(count, world).clamp(min=1)
            reconstruct = world * squared / total  # summed over processes by DDP's averaging times `world`
            terms["reconstruct"] = _all_reduce_sum(squared, world) / total
            loss = loss + self.weights["reconstruct"] * reconstruct
            value = value + self.weights["reconstruct"] * terms["reconstruct"]
        return ATRLossOutput(loss=loss, value=value, terms=terms)


def load_teacher(name_or_path: str, cache_videos: bool = True, **kwargs) -> Teacher:
    return Teacher(CLIPModel.from_pretrained(name_or_path, **kwargs), cache_videos=cache_videos)


__all__ = ["ATRHeads", "ATRLoss", "S2CATrainingModule", "StudentOutputs", "Teacher", "TeacherOutput", "load_teacher"]
