import math
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import HARD_GUMBEL, make_inputs
from transformers import AutoModel, CLIPConfig, CLIPModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from s2ca_hf import S2CAConceptOutput, S2CAModel, S2CAOutput
from s2ca_hf.modeling_s2ca import (
    S2CAConceptTracks,
    concept_similarity,
    contrastive_loss,
    late_interaction_score,
)
from s2ca_hf.tiny import NUM_FRAMES, text_config, tiny_config, vision_config


K, D = 4, 32


def seeded_model(config, seed: int = 0) -> S2CAModel:
    torch.manual_seed(seed)
    return S2CAModel(config).eval()


# --- independent reference computations, written from docs/method.md rather than from the model code -----------------


def reference_concept_score(out: S2CAOutput) -> torch.Tensor:
    """s_con(i, j) = sum over concepts non-empty on both sides of a^t a^v <c^t, c^v>, by loops."""
    text, video = out.text_concepts, out.video_concepts
    score = torch.zeros(text.concept_features.shape[0], video.concept_features.shape[0])
    for i in range(score.shape[0]):
        for j in range(score.shape[1]):
            for k in range(text.concept_features.shape[1]):
                if text.token_counts[i, k] == 0 or video.token_counts[j, k] == 0:
                    continue  # an empty concept contributes nothing
                cosine = F.cosine_similarity(text.concept_features[i, k], video.concept_features[j, k], dim=0)
                score[i, j] += text.concept_weights[i, k] * video.concept_weights[j, k] * cosine
    return score


def reference_seq_transf(temporal, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """CLIP4Clip's seqTransf with its additive -1e6 mask and an explicit softmax."""
    batch, num_frames, width = frames.shape
    heads = temporal.layers[0].attn.num_heads
    bias = (1.0 - frame_mask[:, None, None, :].float()) * -1e6
    hidden = frames + temporal.position_embedding.weight[:num_frames]
    for layer in temporal.layers:
        q, k, v = layer.attn.qkv(layer.norm1(hidden)).chunk(3, dim=-1)
        q, k, v = (x.view(batch, num_frames, heads, width // heads).transpose(1, 2) for x in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(width // heads) + bias).softmax(dim=-1)
        hidden = hidden + layer.attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, num_frames, width))
        mlp_in = layer.mlp.fc1(layer.norm2(hidden))
        hidden = hidden + layer.mlp.fc2(mlp_in * torch.sigmoid(1.702 * mlp_in))  # QuickGELU
    return hidden + frames


def reference_clip_frames(model, pixel_values_videos, frame_mask):
    """Per-frame CLIP [CLS] features (post-layernorm, projected), frame by frame; zeros for padded frames."""
    batch, num_frames = frame_mask.shape
    out = torch.zeros(batch, num_frames, model.config.projection_dim)
    for b in range(batch):
        for f in range(num_frames):
            if frame_mask[b, f]:
                pooled = model.vision_model(pixel_values=pixel_values_videos[b, f : f + 1]).pooler_output
                out[b, f] = model.visual_projection(pooled)[0]
    return out


def reference_text_instance(model, input_ids, attention_mask):
    pooled = model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    return F.normalize(model.text_projection(pooled), dim=-1)


def reference_video_instance(frames, frame_mask):
    normed = F.normalize(frames, dim=-1) * frame_mask[..., None]
    return F.normalize(normed.sum(1) / frame_mask.sum(1, keepdim=True).clamp(min=1), dim=-1)


# --- outputs ---------------------------------------------------------------------------------------------------------


def test_output_shapes_and_dtypes(model, inputs):
    out = model(**inputs, return_loss=True)
    assert isinstance(out, S2CAOutput)
    T = V = 3
    E = D * (1 + K)
    assert out.logits_per_text.shape == (T, V) and out.logits_per_video.shape == (V, T)
    assert torch.equal(out.logits_per_video, out.logits_per_text.t())
    assert out.text_embeds.shape == (T, E) and out.video_embeds.shape == (V, E)
    assert out.text_instance_embeds.shape == (T, D) and out.video_instance_embeds.shape == (V, D)
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert isinstance(out.video_concepts, S2CAConceptOutput)
    num_video_tokens = NUM_FRAMES * (1 + (32 // 8) ** 2)  # F (1 + P)
    assert out.video_concepts.allocation.shape == (V, K, num_video_tokens)
    assert out.text_concepts.allocation.shape == (T, K, inputs["input_ids"].shape[1])
    assert out.text_concepts.concept_features.shape == (T, K, D)
    assert out.video_concepts.concept_weights.shape == (V, K)
    for tensor in (out.logits_per_text, out.text_embeds, out.video_embeds, out.loss):
        assert tensor.dtype == torch.float32


def test_return_dict_false_tuple_matches_dataclass(model, inputs):
    out = model(**inputs, return_loss=True)
    as_tuple = model(**inputs, return_loss=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(out.keys())
    for key, value in zip(out.keys(), as_tuple):
        if isinstance(out[key], torch.Tensor):
            assert torch.equal(out[key], value), key
        else:
            assert isinstance(value, tuple), key
    assert list(out.keys())[:3] == ["loss", "logits_per_text", "logits_per_video"]


def test_save_and_load_is_bit_identical(model, inputs, tmp_path):
    model.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "model.safetensors")
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, S2CAModel)
    assert loaded.config.text_config.hidden_size == 32 and loaded.config.vision_config.patch_size == 8
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[key]), key
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits_per_text, loaded(**inputs).logits_per_text)
        assert torch.equal(model(**inputs).video_embeds, loaded(**inputs).video_embeds)


def test_logit_scale_initialised_from_config():
    model = seeded_model(tiny_config(logit_scale_init_value=3.0))
    assert model.logit_scale.item() == pytest.approx(3.0)
    clamped = seeded_model(tiny_config(logit_scale_init_value=6.0))
    assert clamped.logit_scale_value().item() == pytest.approx(100.0)  # clamped at ln(100)


# --- the score factorises --------------------------------------------------------------------------------------------


def test_feature_dot_product_equals_direct_score(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
        phi = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        psi = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    # A text with one non-empty concept would not tell the two concept blocks of phi apart: make sure there is more.
    assert ((out.text_concepts.token_counts > 0).sum(1) >= 2).any()
    direct = out.text_instance_embeds @ out.video_instance_embeds.t() + reference_concept_score(out)
    assert torch.allclose(phi @ psi.t(), direct, atol=1e-5)
    assert torch.allclose(out.logits_per_text / model.logit_scale_value(), direct, atol=1e-5)
    assert torch.allclose(model.score(phi, psi), out.logits_per_text / model.logit_scale_value(), atol=1e-5)


def test_score_parts_take_the_score_apart_by_concept(inputs):
    model = seeded_model(tiny_config(concept_score_weight=0.5, prototype_init_std=1.0))
    with torch.no_grad():
        out = model(**inputs)
    instance, per_concept = model.score_parts(out.text_embeds, out.video_embeds)
    assert per_concept.shape == (3, 3, K)
    assert torch.allclose(instance, out.instance_similarity, atol=1e-6)
    assert torch.allclose(per_concept.sum(-1), 0.5 * out.concept_similarity, atol=1e-6)
    # Concept k's part only depends on concept k: zero it on one side and only that part changes.
    text = out.text_concepts
    kept = text.concept_features.clone()
    kept[:, 1] = 0.0
    changed = concept_similarity(kept, text.concept_weights, out.video_concepts.concept_features,
                                 out.video_concepts.concept_weights)  # fmt: skip
    assert torch.allclose(0.5 * changed, per_concept.sum(-1) - per_concept[..., 1], atol=1e-6)


def test_concept_score_weight_scales_the_concept_part(inputs):
    base = seeded_model(tiny_config(concept_score_weight=1.0))
    heavy = seeded_model(tiny_config(concept_score_weight=3.0))
    with torch.no_grad():
        out_base, out_heavy = base(**inputs), heavy(**inputs)
        phi = heavy.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        psi = heavy.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    expected = out_base.instance_similarity + 3.0 * out_base.concept_similarity
    assert torch.allclose(out_heavy.logits_per_text / heavy.logit_scale_value(), expected, atol=1e-5)
    assert torch.allclose(phi @ psi.t(), expected, atol=1e-5)


# --- allocation and aggregation --------------------------------------------------------------------------------------


def test_eval_allocation_is_argmax_one_hot_and_masked(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    for concepts in (out.text_concepts, out.video_concepts):
        allocation, mask = concepts.allocation, concepts.token_mask
        expected = F.one_hot(concepts.allocation_logits.argmax(dim=1), K).transpose(1, 2).float() * mask[:, None]
        assert torch.equal(allocation, expected)
        assert torch.equal(concepts.token_counts, allocation.sum(-1))
        assert torch.equal(concepts.empty_concepts, (concepts.token_counts == 0).float())
    # Text tokens: words and end-of-text, not the start token, not padding.
    text_mask = out.text_concepts.token_mask
    assert torch.equal(text_mask[:, 0], torch.zeros(3))
    assert torch.equal(text_mask.sum(1), inputs["attention_mask"].sum(1).float() - 1)


def test_concept_weights_and_features_follow_the_definition(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    for concepts in (out.text_concepts, out.video_concepts):
        present = (concepts.token_counts > 0).float()
        share = concepts.token_counts / concepts.token_mask.sum(-1, keepdim=True)
        assert torch.allclose(concepts.concept_weights, present * share.sqrt())
        norms = concepts.concept_features.norm(dim=-1)
        assert torch.allclose(norms, present, atol=1e-5)  # unit norm, or exactly zero when empty


def test_video_tokens_are_refined_frames_and_patches(model, inputs):
    with torch.no_grad():
        video = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
        hidden = model.vision_model(pixel_values=inputs["pixel_values_videos"][0]).last_hidden_state
        patches = model.visual_projection(model.vision_model.post_layernorm(hidden))[:, 1:]
    tokens = video.tokens.view(3, NUM_FRAMES, 1 + 16, D)
    assert torch.equal(tokens[:, :, 0], video.frame_features)  # each [CLS] replaced by its refined frame
    assert torch.allclose(tokens[0, :, 1:], patches, atol=1e-5)
    assert torch.equal(
        video.token_mask.view(3, NUM_FRAMES, 17), inputs["frame_mask"][:, :, None].expand(-1, -1, 17).float()
    )
    no_concepts = seeded_model(tiny_config(use_concepts=False))
    with torch.no_grad():
        only = no_concepts.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
    assert only.tokens.shape == (3, NUM_FRAMES, D) and torch.equal(only.tokens, only.frame_features)


def test_allocation_logits_follow_the_definition(model, inputs):
    """Z = (LN(Pi) W_q) (LN(X) W_k)^T / sqrt(D), with layer norms written out by hand."""
    allocator = model.concepts.allocator
    with torch.no_grad():
        for norm in (allocator.norm_prototypes, allocator.norm_tokens):  # non-trivial affine parameters
            norm.weight.normal_(1.0, 0.5)
            norm.bias.normal_(0.0, 0.5)
        text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])

        def layer_norm(x, norm):
            mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
            return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

        queries = layer_norm(model.concepts.prototypes, allocator.norm_prototypes) @ allocator.q_proj.weight.t()
        queries = queries + allocator.q_proj.bias
        keys = layer_norm(text.tokens, allocator.norm_tokens) @ allocator.k_proj.weight.t() + allocator.k_proj.bias
        expected = torch.einsum("kd,bnd->bkn", queries, keys) / math.sqrt(D)
    assert torch.allclose(text.concepts.allocation_logits, expected, atol=1e-5)


def test_concept_features_recomputed_from_weights(model, inputs):
    """c_k = LN(W_o sum_n A_kn V_n / (n_k + eps)), V = LN(X) W_v: recomputed token by token for one video (what the
    concept holds and nothing else: no prototype term)."""
    with torch.no_grad():
        video = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
    allocator = model.concepts.allocator
    tokens, allocation = video.tokens[1], video.concepts.allocation[1]
    with torch.no_grad():
        for k in range(K):
            total, count = torch.zeros(D), 0.0
            for n in range(tokens.shape[0]):
                if allocation[k, n] > 0:
                    total += allocator.v_proj(allocator.norm_tokens(tokens[n]))
                    count += 1
            feature = allocator.norm_out(allocator.o_proj(total / (count + 1.0)))
            expected = F.normalize(feature, dim=0) if count else torch.zeros(D)
            assert torch.allclose(video.concepts.concept_features[1, k], expected, atol=1e-5), k


def test_empty_concept_contributes_zero():
    # Texts of one word have two concept tokens (the word and end-of-text): at least K - 2 concepts stay empty.
    model = seeded_model(tiny_config(**HARD_GUMBEL))
    inputs = make_inputs(batch=2, seq_len=3)
    with torch.no_grad():
        out = model(**inputs)
    empty = out.text_concepts.empty_concepts
    assert (empty.sum(1) >= K - 2).all()
    assert torch.equal(out.text_concepts.concept_features[empty.bool()], torch.zeros(int(empty.sum()), D))
    assert torch.equal(out.text_concepts.concept_weights[empty.bool()], torch.zeros(int(empty.sum())))
    assert torch.allclose(out.concept_similarity, reference_concept_score(out), atol=1e-6)
    # Without the zeroing, an empty concept would be LN(prototype + bias) on both sides and score about 1 each.
    allocator = model.concepts.allocator
    with torch.no_grad():
        unzeroed = F.normalize(allocator.norm_out(model.concepts.prototypes + allocator.o_proj.bias), dim=-1)
    assert torch.allclose((unzeroed * unzeroed).sum(-1), torch.ones(K), atol=1e-5)


def test_eval_is_deterministic(model, inputs):
    with torch.no_grad():
        first, second = model(**inputs), model(**inputs)
    assert torch.equal(first.logits_per_text, second.logits_per_text)
    assert torch.equal(first.video_concepts.allocation, second.video_concepts.allocation)


def test_training_allocation_is_stochastic_yet_one_hot(model, inputs):
    model.train()
    torch.manual_seed(1)
    first = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"]).concepts
    second = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"]).concepts
    assert not torch.equal(first.allocation, second.allocation)
    for concepts in (first, second):
        allocation = concepts.allocation.detach()
        assert torch.allclose(allocation, allocation.round(), atol=1e-6)  # one-hot values (straight-through)
        assert torch.allclose(allocation.sum(1), concepts.token_mask)  # exactly one concept per valid token


def test_straight_through_gradient_reaches_prototypes_and_projections(inputs):
    # Only the retrieval loss: the query/key projections are reached through the allocation alone.
    model = seeded_model(tiny_config(diversity_loss_weight=0.0, balance_loss_weight=0.0, **HARD_GUMBEL))
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    allocator = model.concepts.allocator
    for parameter in (model.concepts.prototypes, allocator.q_proj.weight, allocator.k_proj.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
    # In evaluation the allocation is a plain argmax: no gradient reaches W_q / W_k.
    model.zero_grad(set_to_none=True)
    model.eval()
    model(**inputs, return_loss=True).loss.backward()
    assert allocator.q_proj.weight.grad is None or allocator.q_proj.weight.grad.abs().sum() == 0


def test_expert_choice_video_concepts_pick_tokens_in_every_real_frame(inputs):
    model = seeded_model(tiny_config(allocation="expert_choice", tokens_per_concept=3, concept_tracks=True))
    frames = inputs["frame_mask"]
    for mode in ("train", "eval"):  # no noise: training allocates exactly as evaluation does
        getattr(model, mode)()
        concepts = model.encode_video(inputs["pixel_values_videos"], frames).concepts
        allocation = concepts.allocation.detach()
        assert torch.allclose(allocation, allocation.round(), atol=1e-6)  # binary (straight-through in training)
        per_frame = allocation.view(*allocation.shape[:2], frames.shape[1], -1).sum(-1)  # (B, K, F)
        assert torch.equal(
            per_frame, 3.0 * frames[:, None, :].float().expand_as(per_frame)
        )  # 3 picks, none in padding
        logits = concepts.allocation_logits.view_as(allocation.view(*allocation.shape[:2], frames.shape[1], -1))
        picked = allocation.view_as(logits).bool()
        # the picks are the frame's best tokens for that concept
        lowest_picked = logits.masked_fill(~picked, float("inf")).min(-1).values
        highest_left = logits.masked_fill(picked, float("-inf")).max(-1).values
        real = frames[:, None, :].bool().expand_as(lowest_picked)
        assert (lowest_picked[real] >= highest_left[real]).all()
        assert concepts.empty_concepts.sum() == 0  # a video concept is never empty
        if mode == "train":
            first = allocation
    assert torch.equal(first, allocation)


def test_expert_choice_text_tokens_take_their_best_concept_and_the_gradient_flows(inputs):
    model = seeded_model(tiny_config(allocation="expert_choice", prototype_init_std=1.0))
    model.train()
    text = model.encode_text(inputs["input_ids"], inputs["attention_mask"]).concepts
    expected = F.one_hot(text.allocation_logits.argmax(1), K).transpose(1, 2).float() * text.token_mask[:, None]
    assert torch.equal(text.allocation.detach(), expected)  # one concept per word, no noise
    assert torch.equal(text.empty_concepts, (expected.sum(-1) == 0).float())
    assert torch.equal(text.concept_weights == 0, text.empty_concepts.bool())  # an unmentioned concept counts 0
    model(**inputs, return_loss=True).loss.backward()
    allocator = model.concepts.allocator
    for parameter in (model.concepts.prototypes, allocator.q_proj.weight, allocator.k_proj.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_late_interaction_scores_each_word_against_its_best_video_concept(inputs):
    model = seeded_model(tiny_config(allocation="expert_choice", prototype_init_std=1.0, late_interaction_weight=1.0))
    with torch.no_grad():
        text = model.encode_text(inputs["input_ids"], inputs["attention_mask"]).concepts
        video = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
        concepts = model.video_concepts_from_embeds(video.embeds)
        assert torch.allclose(concepts, video.concepts.concept_features, atol=1e-6)  # psi holds them already
        scores = model.late_interaction_scores(text, video.embeds)
    assert (
        torch.allclose(text.token_weights.sum(-1), torch.ones(3))
        and (text.token_weights[text.token_mask == 0] == 0).all()
    )
    for t in range(3):
        for v in range(3):
            expected = 0.0
            for n in range(text.token_mask.shape[1]):
                if text.token_mask[t, n]:
                    best = max(float(text.token_features[t, n] @ concepts[v, k]) for k in range(K))
                    expected += float(text.token_weights[t, n]) * best
            assert scores[t, v].item() == pytest.approx(expected, abs=1e-5)
    # a search's shortlist form: each text against its own candidates (T, C, K, D) gives the same entries
    candidates = torch.tensor([[2, 0], [1, 1], [0, 2]])
    shortlist = late_interaction_score(text.token_features, text.token_weights, concepts[candidates])
    assert torch.allclose(shortlist, scores.gather(1, candidates), atol=1e-6)
    # a word's feature is its concept's feature had it held that word alone
    allocator = model.concepts.allocator
    tokens = model.encode_text(inputs["input_ids"], inputs["attention_mask"]).tokens.detach()
    n = int(text.token_mask[0].nonzero()[0])
    alone = allocator(model.concepts.prototypes, tokens[:1, n : n + 1], torch.ones(1, 1), 1.0)
    concept = int(text.allocation_logits[0, :, n].argmax())
    assert torch.allclose(alone.concept_features[0, concept], text.token_features[0, n], atol=1e-5)
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    assert model.concepts.token_weights.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no late-interaction"):
        seeded_model(tiny_config(late_interaction_weight=0.0)).late_interaction_scores(text, video.embeds)
    # Without concepts there is nothing to re-rank with, whatever the weight says: no re-ranker, no late loss term.
    baseline = seeded_model(tiny_config(use_concepts=False, late_interaction_weight=0.5))
    assert baseline.concepts is None and not baseline.config.has_late_interaction
    baseline.train()
    assert torch.isfinite(baseline(**inputs, return_loss=True).loss)
    with pytest.raises(ValueError, match="no late-interaction"):
        baseline.late_interaction_scores(text, video.embeds)


def test_soft_allocation_ablation():
    model = seeded_model(tiny_config(allocation="soft"))
    inputs = make_inputs()
    model.train()
    out = model(**inputs, return_loss=True)
    allocation = out.video_concepts.allocation.detach()
    assert ((allocation > 0) & (allocation < 1)).any()  # not one-hot
    assert torch.allclose(allocation.sum(1), out.video_concepts.token_mask, atol=1e-5)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_usage_weights_factorise_and_ignore_one_sided_concepts(inputs):
    model = seeded_model(tiny_config(concept_score_weight=0.5, prototype_init_std=1.0))
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
        phi = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        psi = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    config = model.config
    assert phi.shape[1] == psi.shape[1] == config.embedding_dim == config.projection_dim * (1 + config.num_concepts)
    assert torch.allclose(phi @ psi.t() * model.logit_scale_value(), out.logits_per_text, atol=1e-4)
    for concepts in (out.text_concepts, out.video_concepts):
        share = concepts.token_counts / concepts.token_mask.sum(-1, keepdim=True)
        expected = (1 - concepts.empty_concepts) * share.clamp(min=1e-6).sqrt()
        assert torch.allclose(concepts.concept_weights, expected)
    # s_con = sum_k a^t_k a^v_k cos_k: a concept only one side uses (zero weight on the other) adds nothing
    t, v = out.text_concepts, out.video_concepts
    cosines = torch.einsum("ikd,jkd->ijk", t.concept_features, v.concept_features)
    expected = (t.concept_weights[:, None, :] * v.concept_weights[None, :, :] * cosines).sum(-1)
    assert torch.allclose(out.concept_similarity, expected, atol=1e-5)


def test_balance_counts_come_from_the_noise_free_argmax(inputs):
    from s2ca_hf.modeling_s2ca import balance_statistics

    model = seeded_model(tiny_config(num_concepts=4)).train()
    concepts = model(**inputs).video_concepts  # training: noisy hard allocation
    counts, _, _ = balance_statistics(concepts)
    noise_free = F.one_hot(concepts.allocation_logits.argmax(1), 4).transpose(1, 2) * concepts.token_mask[:, None]
    assert torch.equal(counts, noise_free.sum(dim=(0, 2)).to(counts.dtype))
    assert not torch.equal(counts, concepts.allocation.detach().sum(dim=(0, 2)))  # the noisy one differs


def test_patch_tokens_are_their_own_frames_and_padding_changes_nothing():
    model = seeded_model(tiny_config(allocation="soft")).eval()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 4, 3, 32, 32, generator=generator)
    frame_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        tokens = model.encode_video(pixels, frame_mask).tokens
        changed_first = pixels.clone()
        changed_first[1, 0] += 1.0
        other = model.encode_video(changed_first, frame_mask).tokens
        padded = pixels.clone()
        padded[0, 3] = 7.0  # a padded frame's pixels
        embeds = model.encode_video(padded, frame_mask).embeds
    per_frame = tokens.shape[1] // 4
    last_frame_patches = slice(3 * per_frame + 1, 4 * per_frame)
    moved = not torch.allclose(tokens[1, last_frame_patches], other[1, last_frame_patches])
    assert not moved  # a frame's patch tokens are that frame's alone
    assert torch.allclose(embeds, model.encode_video(pixels, frame_mask).embeds, atol=1e-5)


def test_concept_track_geometry_is_share_and_centroid_of_the_patch_grid():
    # 1 frame, 2 concepts, [CLS] + a 2 x 2 grid (row-major): concept 0 takes the right column, concept 1 the rest.
    allocation = torch.tensor([[[[0.5, 0.0, 1.0, 0.0, 1.0]], [[0.5, 1.0, 0.0, 1.0, 0.0]]]])
    geometry = S2CAConceptTracks.geometry(allocation)
    assert geometry.shape == (1, 2, 1, 3)
    assert torch.allclose(geometry[0, 0, 0], torch.tensor([0.5, 1.0, 0.0]))  # half the patches, x = right, y = mid
    assert torch.allclose(geometry[0, 1, 0], torch.tensor([0.5, -1.0, 0.0]))
    with pytest.raises(ValueError, match="square patch grid"):
        S2CAConceptTracks.geometry(torch.ones(1, 2, 1, 4))


def test_concept_tracks_see_frame_order_and_ignore_padding(inputs):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 4, 3, 32, 32, generator=generator)
    frame_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    reversed_pixels = pixels.clone()
    reversed_pixels[1] = pixels[1].flip(0)  # the same frames played backwards: the same content, the other motion
    features = {}
    for tracks in (False, True):
        model = seeded_model(tiny_config(allocation="soft", concept_tracks=tracks))
        with torch.no_grad():
            forward = model.encode_video(pixels, frame_mask).concepts.concept_features
            backward = model.encode_video(reversed_pixels, frame_mask).concepts.concept_features
            padded = pixels.clone()
            padded[0, 3] = 7.0  # a padded frame's pixels
            assert torch.allclose(
                model.encode_video(padded, frame_mask).embeds, model.encode_video(pixels, frame_mask).embeds, atol=1e-5
            )
        features[tracks] = (forward, backward)
    # Pooled over the clip, a concept cannot tell the order of the frames (the refined [CLS] tokens can, a little);
    # a track changes much more when the clip plays backwards.
    change = {tracks: (f[1] - b[1]).norm(dim=-1).mean() for tracks, (f, b) in features.items()}
    assert change[True] > 2 * change[False]
    model = seeded_model(tiny_config(allocation="soft", concept_tracks=True))
    assert isinstance(model.concepts.tracks, S2CAConceptTracks)
    model.train()
    model(**inputs, return_loss=True).loss.backward()
    assert model.concepts.tracks.geometry_proj.weight.grad.abs().sum() > 0


def test_gumbel_training_allocation_is_noisy_and_evaluation_is_argmax():
    # Training's hard allocation is argmax(Z + g), g standard Gumbel noise (std 1.28): it moves tokens whose logits
    # differ by less, which these small logits all do; evaluation is argmax(Z).
    allocator = seeded_model(tiny_config(num_concepts=8, allocation="gumbel")).concepts.allocator
    logits = 0.1 * torch.randn(4, 8, 50, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    allocator.train()
    _, hard = allocator.allocate(logits, tau=1.0)
    allocator.eval()
    _, reference = allocator.allocate(logits, tau=1.0)
    assert torch.equal(reference, F.one_hot(logits.argmax(1), 8).transpose(1, 2).float())
    assert (hard.argmax(1) == reference.argmax(1)).float().mean() < 0.5


# --- padding and batch invariance ------------------------------------------------------------------------------------


def test_extra_padded_tokens_change_nothing(model, inputs):
    padded = dict(inputs)
    eos = 98
    padded["input_ids"] = torch.cat([inputs["input_ids"], torch.full((3, 4), eos)], dim=1)
    padded["attention_mask"] = torch.cat([inputs["attention_mask"], torch.zeros(3, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, b = model(**inputs), model(**padded)
    assert torch.allclose(a.text_embeds, b.text_embeds, atol=1e-6)
    assert torch.allclose(a.logits_per_text, b.logits_per_text, atol=1e-5)


def test_extra_padded_frames_change_nothing(model, inputs):
    padded = dict(inputs)
    noise = torch.randn(3, 2, 3, 32, 32) * 10  # whatever a padded slot holds must not matter
    padded["pixel_values_videos"] = torch.cat([inputs["pixel_values_videos"], noise], dim=1)
    padded["frame_mask"] = torch.cat([inputs["frame_mask"], torch.zeros(3, 2, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, b = model(**inputs), model(**padded)
    assert torch.allclose(a.video_embeds, b.video_embeds, atol=1e-5)
    assert torch.allclose(a.logits_per_text, b.logits_per_text, atol=1e-4)
    # A padded slot's pixels are never looked at either.
    scrambled = dict(inputs)
    scrambled["pixel_values_videos"] = inputs["pixel_values_videos"].clone()
    scrambled["pixel_values_videos"][2, 3] = 100.0
    with torch.no_grad():
        assert torch.equal(model(**scrambled).video_embeds, a.video_embeds)


def test_features_do_not_depend_on_the_batch_in_eval(model, inputs):
    with torch.no_grad():
        phi = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        psi = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
        for i in range(3):
            alone_phi = model.get_text_features(
                inputs["input_ids"][i : i + 1], inputs["attention_mask"][i : i + 1]
            ).pooler_output
            alone_psi = model.get_video_features(
                inputs["pixel_values_videos"][i : i + 1], inputs["frame_mask"][i : i + 1]
            ).pooler_output
            assert torch.allclose(alone_phi[0], phi[i], atol=1e-5)
            assert torch.allclose(alone_psi[0], psi[i], atol=1e-5)


# --- use_concepts=False is CLIP4Clip ---------------------------------------------------------------------------------


def test_without_concepts_mean_pooling_is_clip4clip_meanp(inputs):
    model = seeded_model(tiny_config(use_concepts=False, temporal_module="mean"))
    with torch.no_grad():
        out = model(**inputs)
        text = reference_text_instance(model, inputs["input_ids"], inputs["attention_mask"])
        frames = reference_clip_frames(model, inputs["pixel_values_videos"], inputs["frame_mask"])
        video = reference_video_instance(frames, inputs["frame_mask"].float())
    assert out.text_embeds.shape == (3, D) and out.text_concepts is None
    assert torch.allclose(out.text_embeds, text, atol=1e-5)
    assert torch.allclose(out.video_embeds, video, atol=1e-5)
    expected = model.logit_scale.exp() * text @ video.t()
    assert torch.allclose(out.logits_per_text, expected, atol=1e-4)


def test_without_concepts_transformer_is_clip4clip_seq_transf(inputs):
    model = seeded_model(tiny_config(use_concepts=False, temporal_module="transformer"))
    with torch.no_grad():
        out = model(**inputs)
        frames = reference_clip_frames(model, inputs["pixel_values_videos"], inputs["frame_mask"])
        refined = reference_seq_transf(model.temporal, frames, inputs["frame_mask"])
        video = reference_video_instance(refined, inputs["frame_mask"].float())
        text = reference_text_instance(model, inputs["input_ids"], inputs["attention_mask"])
    assert torch.allclose(out.video_embeds, video, atol=1e-5)
    assert torch.allclose(out.logits_per_text, model.logit_scale.exp() * text @ video.t(), atol=1e-4)


# --- loss ------------------------------------------------------------------------------------------------------------


def nce(logits):
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def test_loss_matches_method_section_6(model, inputs):
    with torch.no_grad():
        out = model(**inputs, return_loss=True)
    scale = model.logit_scale.exp()
    # the residual loss: the concept term ranks by the sum (its instance part a constant to the gradient)
    retrieval = nce(scale * out.instance_similarity) + 1.0 * nce(
        scale * (out.instance_similarity + out.concept_similarity)
    )
    prototypes = F.normalize(model.concepts.prototypes, dim=-1)
    pairs = [(k, j) for k in range(K) for j in range(K) if k != j]
    diversity = sum((prototypes[k] @ prototypes[j]).item() ** 2 for k, j in pairs) / len(pairs)

    def balance(concepts):
        mask = concepts.token_mask.bool()
        logits = concepts.allocation_logits.transpose(1, 2)[mask]  # [tokens, K]
        fraction = F.one_hot(logits.argmax(-1), K).float().mean(0)
        return K * (fraction * logits.softmax(-1).mean(0)).sum()

    balance_mean = (balance(out.text_concepts) + balance(out.video_concepts)) / 2
    assert out.retrieval_loss.item() == pytest.approx(retrieval.item(), rel=1e-5)
    assert out.diversity_loss.item() == pytest.approx(diversity, rel=1e-4)
    assert out.balance_loss.item() == pytest.approx(balance_mean.item(), rel=1e-5)
    expected = retrieval + 0.01 * diversity + 0.01 * balance_mean
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(model(**inputs, return_loss=True, return_dict=False)[0].item(), rel=1e-6)


def test_a_video_without_a_real_frame_is_refused_naming_it(model, inputs):
    masked = dict(inputs, frame_mask=inputs["frame_mask"].clone())
    masked["frame_mask"][1] = 0
    with pytest.raises(ValueError, match=r"position\(s\) \[1\] have no real frame"):
        model.get_video_features(masked["pixel_values_videos"], masked["frame_mask"])
    with pytest.raises(ValueError, match="must be \\(videos, frames\\)"):
        model.get_video_features(masked["pixel_values_videos"], masked["frame_mask"][:, :1])


def test_loss_needs_one_text_per_video(model, inputs):
    uneven = dict(inputs, input_ids=inputs["input_ids"][:2], attention_mask=inputs["attention_mask"][:2])
    with pytest.raises(ValueError, match="one text per video"):
        model(**uneven, return_loss=True)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(inputs):
    model = seeded_model(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model(**inputs, return_loss=True).loss  # eval mode: deterministic allocation
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


# --- from_clip -------------------------------------------------------------------------------------------------------


def test_from_clip_copies_every_tensor_exactly(tmp_path, inputs):
    torch.manual_seed(3)
    clip = CLIPModel(CLIPConfig(text_config=text_config(), vision_config=vision_config(), projection_dim=D))
    with torch.no_grad():
        clip.logit_scale.fill_(3.25)
    clip.save_pretrained(tmp_path / "clip")
    model = S2CAModel.from_clip(
        str(tmp_path / "clip"),
        num_frames=NUM_FRAMES,
        num_concepts=K,
        temporal_num_hidden_layers=1,
        temporal_num_attention_heads=4,
        temporal_intermediate_size=37,
        temporal_max_position_embeddings=16,
    )
    state = model.state_dict()
    clip_state = clip.state_dict()
    assert any(key.startswith("vision_model.") for key in clip_state)
    for key, tensor in clip_state.items():
        assert torch.equal(state[key], tensor), key
    assert model.logit_scale.item() == 3.25
    assert model.config.num_concepts == K and model.config.text_config.hidden_size == 32
    # The towers behave as CLIP's: same pooled text features.
    with torch.no_grad():
        ours = model.eval().encode_text(inputs["input_ids"], inputs["attention_mask"]).instance_embeds
        theirs = F.normalize(
            clip.text_projection(clip.text_model(inputs["input_ids"], inputs["attention_mask"]).pooler_output), dim=-1
        )
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_from_clip_missing_checkpoint_raises(tmp_path):
    with pytest.raises(OSError):
        S2CAModel.from_clip(str(tmp_path / "no-such-clip"), local_files_only=True)


# --- attention implementations, checkpointing, bf16 ------------------------------------------------------------------


def test_sdpa_is_the_default_and_matches_eager(model, inputs):
    assert model.text_model.config._attn_implementation == "sdpa"
    eager = S2CAModel._from_config(model.config, attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    assert eager.vision_model.config._attn_implementation == "eager"
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits_per_text, eager(**inputs).logits_per_text, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(inputs):
    def gradients(checkpointing: bool):
        model = seeded_model(tiny_config())
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.temporal.gradient_checkpointing
        model.train()
        torch.manual_seed(5)  # same Gumbel noise in both runs
        model(**inputs, return_loss=True).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-5), name


def test_bfloat16_forward_and_backward(inputs):
    model = seeded_model(tiny_config()).to(torch.bfloat16)
    model.train()
    out = model(**inputs, return_loss=True)
    assert out.logits_per_text.dtype == torch.bfloat16
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.concepts.prototypes.grad is not None


def test_features_follow_the_v5_convention_pooler_output(model, inputs):
    with torch.no_grad():
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        video = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"])
        out = model(**inputs)
    assert isinstance(text, BaseModelOutputWithPooling) and isinstance(video, BaseModelOutputWithPooling)
    assert torch.equal(text.pooler_output, out.text_embeds) and torch.equal(video.pooler_output, out.video_embeds)
    assert torch.equal(text.last_hidden_state, out.text_model_output.last_hidden_state)
    assert torch.equal(video.last_hidden_state, out.vision_model_output.last_hidden_state)


def test_the_concept_branch_sends_no_gradient_into_the_towers(inputs):
    # The concept score's own gradient reaches the concept branch but stops at the tokens it reads.
    model = seeded_model(tiny_config(allocation="soft", prototype_init_std=1.0))
    model.train()
    out = model(**inputs, return_loss=True)
    contrastive_loss(out.concept_similarity * 10).backward()
    assert model.concepts.prototypes.grad.abs().max() > 0
    assert model.concepts.allocator.v_proj.weight.grad.abs().max() > 0
    for tower_parameter in (model.text_projection.weight, model.visual_projection.weight):
        assert tower_parameter.grad is None or tower_parameter.grad.abs().max() == 0


def test_residual_retrieval_loss_trains_the_concepts_on_top_of_a_fixed_instance_score(inputs):
    weights = dict(diversity_loss_weight=0.0, balance_loss_weight=0.0, late_interaction_weight=0.0)
    weights.update(prototype_init_std=1.0)
    model = seeded_model(tiny_config(**weights))
    out = model(**inputs, return_loss=True)
    scale = model.logit_scale_value()
    instance, concept = out.instance_similarity, out.concept_similarity
    expected = contrastive_loss(scale * instance) + contrastive_loss(scale * (instance + concept))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The instance score's gradient comes from its own term only: the concept term sees it as a constant.
    instance, concept = instance.detach().requires_grad_(), concept.detach().requires_grad_()
    loss = model.retrieval_loss(instance, concept)
    instance_grad = torch.autograd.grad(loss, instance, retain_graph=True)[0]
    alone = torch.autograd.grad(contrastive_loss(scale * instance), instance, retain_graph=True)[0]
    torch.testing.assert_close(instance_grad, alone)
    concept_grad = torch.autograd.grad(loss, concept)[0]
    assert concept_grad.abs().max() > 0


def test_a_narrower_concept_width_shrinks_psi_and_keeps_the_score(inputs):
    config = tiny_config(
        concept_dim=8, allocation="expert_choice", concept_tracks=True, late_interaction_weight=1.0,
        prototype_init_std=1.0,
    )  # fmt: skip
    model = seeded_model(config)
    assert config.embedding_dim == D + K * 8
    with torch.no_grad():
        out = model(**inputs)
        video = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
        text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
    assert out.video_embeds.shape == (3, D + K * 8) and out.video_concepts.concept_features.shape[-1] == 8
    torch.testing.assert_close(
        model.logit_scale_value() * (out.text_embeds @ out.video_embeds.t()), out.logits_per_text
    )
    instance, per_concept = model.score_parts(out.text_embeds, out.video_embeds)
    torch.testing.assert_close(instance + per_concept.sum(-1), out.text_embeds @ out.video_embeds.t())
    torch.testing.assert_close(model.video_concepts_from_embeds(video.embeds), video.concepts.concept_features)
    assert model.late_interaction_scores(text.concepts, video.embeds).shape == (3, 3)
    with pytest.raises(ValueError, match="concept_dim"):
        tiny_config(concept_dim=D + 1)
