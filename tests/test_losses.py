"""The global-batch loss: one process equals the model's own loss; two processes equal one over the same batch; two
captions of one video in a batch are not each other's negatives, in every contrastive term."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_inputs
from helpers import free_port
from losses import S2CALoss

from s2ca_hf import S2CAModel
from s2ca_hf.modeling_s2ca import contrastive_loss
from s2ca_hf.tiny import tiny_config


GLOBAL_BATCH = 4


def build_model(**overrides) -> S2CAModel:
    torch.manual_seed(0)
    # Soft allocation keeps training mode noise-free, so two runs over the same data can be compared exactly.
    return S2CAModel(tiny_config(**{"prototype_init_std": 1.0, "allocation": "soft", **overrides})).train()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"allocation": "gumbel", "balance_loss_weight": 0.5},
        {"allocation": "expert_choice", "concept_tracks": True, "late_interaction_weight": 0.5},
    ],
)
def test_one_process_equals_the_models_local_loss(overrides):
    model = build_model(**overrides)
    inputs = make_inputs(batch=GLOBAL_BATCH)
    outputs = model(**inputs, return_loss=True)
    result = S2CALoss()(model, outputs)
    assert torch.allclose(result.value, outputs.loss.detach(), atol=1e-6)
    assert torch.allclose(result.retrieval, outputs.retrieval_loss.detach(), atol=1e-6)
    assert torch.allclose(result.balance, outputs.balance_loss.detach(), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("allocation", ["soft", "gumbel", "expert_choice+late"])
def test_two_processes_equal_one_process_over_the_global_batch(tmp_path, allocation):
    # A real launch, not a fork of this process (forking after torch ran can deadlock its thread pools).
    output = tmp_path / "report.json"
    worker = Path(__file__).parent / "dist_loss_worker.py"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(free_port())]  # not the default 29500, which another run may hold
    completed = subprocess.run([*command, str(worker), str(output), allocation], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["world"] == 2
    assert abs(report["loss"] - report["expected_loss"]) < 1e-5
    assert report["same_keys"] and report["num_grads"] > 50
    # float32 sums in another order on two processes: 1.05e-5 measured (absolute) on an AMD EPYC machine (and
    # under 1e-5 on an Intel Xeon); a missing gradient scaling or gather would differ by the gradients' own size.
    assert report["max_grad_diff"] < 5e-6, report


# --- captions of one video ---------------------------------------------------------------------------------------


def reference_contrastive_loss(logits, videos, foil_mask=()) -> torch.Tensor:
    """The symmetric InfoNCE written out entry by entry: text i against the videos j whose video differs from its
    own, or j = i; video j against those texts and the real foils (rows B, B + 1, ... of `logits`)."""
    batch = logits.shape[1]
    text_to_video, video_to_text = [], []
    for i in range(batch):
        kept = [logits[i, j] for j in range(batch) if j == i or videos[j] != videos[i]]
        text_to_video.append(torch.logsumexp(torch.stack(kept), 0) - logits[i, i])
    for j in range(batch):
        kept = [logits[i, j] for i in range(batch) if i == j or videos[i] != videos[j]]
        kept += [logits[batch + f, j] for f, real in enumerate(foil_mask) if real]
        video_to_text.append(torch.logsumexp(torch.stack(kept), 0) - logits[j, j])
    return 0.5 * (torch.stack(text_to_video).mean() + torch.stack(video_to_text).mean())


def also_correct(videos) -> torch.Tensor:
    videos = torch.as_tensor(videos)
    return videos[:, None] == videos[None, :]


def test_two_captions_of_one_video_are_neither_positive_nor_negative_for_each_other():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 3
    videos = [0, 1, 0, 2, 3]  # rows 0 and 2: two captions of video 0
    masked = contrastive_loss(logits, also_correct(videos))
    assert torch.allclose(masked, reference_contrastive_loss(logits, videos), atol=1e-6)
    assert not torch.allclose(masked, contrastive_loss(logits), atol=1e-3)
    assert torch.allclose(contrastive_loss(logits), reference_contrastive_loss(logits, range(5)), atol=1e-6)
    # No gradient reaches the removed entries: they are not in either softmax.
    logits.requires_grad_(True)
    contrastive_loss(logits, also_correct(videos)).backward()
    assert logits.grad[0, 2] == 0 and logits.grad[2, 0] == 0 and logits.grad[0, 1] != 0


def test_without_repeated_videos_the_loss_is_exactly_todays():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(contrastive_loss(logits, also_correct([3, 1, 2, 0])), contrastive_loss(logits))


def expected_retrieval_loss(model, instance, concept, scale, videos, foil_mask=()) -> torch.Tensor:
    """The residual `retrieval_loss`, its terms computed with `reference_contrastive_loss`."""
    config = model.config

    def reference(similarity):
        return reference_contrastive_loss(scale * similarity, videos, foil_mask)

    if concept is None:
        return reference(instance)
    return reference(instance) + config.concept_loss_weight * reference(
        instance + config.concept_score_weight * concept
    )


@pytest.mark.parametrize("kind", ["concepts", "no concepts"])
def test_the_retrieval_loss_leaves_captions_of_one_video_out(kind):
    model = build_model(use_concepts=False) if kind == "no concepts" else build_model(concept_score_weight=0.5)
    generator = torch.Generator().manual_seed(2)
    instance = torch.randn(4, 4, generator=generator) * 0.3
    concept = None if kind == "no concepts" else torch.randn(4, 4, generator=generator) * 0.3
    scale = torch.tensor(20.0)
    videos = [7, 7, 8, 9]
    loss = model.retrieval_loss(instance, concept, scale=scale, also_correct=also_correct(videos))
    assert torch.allclose(loss, expected_retrieval_loss(model, instance, concept, scale, videos), atol=1e-5)
    assert not torch.allclose(loss, model.retrieval_loss(instance, concept, scale=scale), atol=1e-3)
    distinct = model.retrieval_loss(instance, concept, scale=scale, also_correct=also_correct([1, 2, 3, 4]))
    assert torch.equal(distinct, model.retrieval_loss(instance, concept, scale=scale))


def repeated_video_inputs(videos) -> dict:
    """A batch whose rows show `videos` (row i a caption of video videos[i]): rows of one video get its frames."""
    inputs = make_inputs(batch=len(videos))
    first = {video: videos.index(video) for video in videos}
    rows = torch.tensor([first[video] for video in videos])
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"][rows]
    inputs["frame_mask"] = inputs["frame_mask"][rows]
    return inputs


@pytest.mark.parametrize("overrides", [{}, {"allocation": "expert_choice", "late_interaction_weight": 0.5}])
def test_the_global_loss_leaves_captions_of_one_video_out_of_every_contrastive_term(overrides):
    model = build_model(**overrides)
    videos = [4, 5, 4, 6]
    outputs = model(**repeated_video_inputs(videos))
    result = S2CALoss()(model, outputs, video_index=torch.tensor(videos))
    instance, concept = outputs.instance_similarity, outputs.concept_similarity
    expected = expected_retrieval_loss(model, instance, concept, model.logit_scale_value(), videos)
    assert torch.allclose(result.retrieval, expected, atol=1e-5)
    plain = S2CALoss()(model, outputs)
    assert not torch.allclose(result.retrieval, plain.retrieval, atol=1e-3)
    if overrides:
        assert not torch.allclose(result.value - result.retrieval, plain.value - plain.retrieval, atol=1e-4)
    # Distinct videos: the numbers of a loss that knows nothing of videos, exactly.
    distinct = S2CALoss()(model, outputs, video_index=torch.tensor([0, 1, 2, 3]))
    assert torch.equal(distinct.value, plain.value)


def test_a_text_is_no_negative_of_another_video_it_fits_nor_a_foil_of_a_video_it_is_true_of():
    model = build_model()
    inputs = make_inputs(batch=4)
    outputs = model(**inputs)
    videos = torch.tensor([10, 11, 12, 13])
    scale = model.logit_scale_value()
    # Text 0 names one object of several, and video 12 (row 2) shows it too: the pair is left out like a repeat.
    fits = torch.tensor([[10, 12, -1], [11, -1, -1], [12, -1, -1], [13, -1, -1]])
    result = S2CALoss()(model, outputs, video_index=videos, positive_video_index=fits)
    mask = torch.eye(4, dtype=torch.bool)
    mask[0, 2] = True
    instance, concept = outputs.instance_similarity, outputs.concept_similarity
    expected = model.retrieval_loss(instance, concept, scale=scale, also_correct=mask)
    assert torch.allclose(result.retrieval, expected, atol=1e-6)
    assert not torch.allclose(result.retrieval, S2CALoss()(model, outputs, video_index=videos).retrieval, atol=1e-4)

    # A (F, B) foil mask removes exactly the entries it marks: foil 1 is true of video 3 and no negative for it.
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(5)) * 3
    foil_mask = torch.ones(4, 4, dtype=torch.bool)
    foil_mask[1, 3] = False
    by_hand = logits.clone()
    by_hand[4 + 1, 3] = float("-inf")
    assert torch.allclose(contrastive_loss(logits, None, foil_mask), contrastive_loss(by_hand, None, torch.ones(4)))
    assert not torch.allclose(contrastive_loss(logits, None, foil_mask), contrastive_loss(logits, None, torch.ones(4)))
    # ... and the loss builds that mask from the videos each foil is true of.
    foils = {
        "foil_input_ids": inputs["input_ids"].flip(0),
        "foil_attention_mask": inputs["attention_mask"].flip(0),
        "foil_mask": torch.ones(4, dtype=torch.long),
    }
    true_of = torch.tensor([[-1], [13], [-1], [-1]])
    marked = S2CALoss()(model, outputs, video_index=videos, foil_positive_video_index=true_of, **foils)
    unmarked = S2CALoss()(model, outputs, video_index=videos, **foils)
    assert not torch.allclose(marked.retrieval, unmarked.retrieval, atol=1e-5)
    foil_text = model.encode_text(foils["foil_input_ids"], foils["foil_attention_mask"])
    logits = torch.cat([outputs.text_instance_embeds, foil_text.instance_embeds]) @ outputs.video_instance_embeds.t()
    stacked_concept = None
    if concept is not None:
        from s2ca_hf.modeling_s2ca import concept_similarity

        stacked_concept = concept_similarity(
            torch.cat([outputs.text_concepts.concept_features, foil_text.concepts.concept_features]),
            torch.cat([outputs.text_concepts.concept_weights, foil_text.concepts.concept_weights]),
            outputs.video_concepts.concept_features,
            outputs.video_concepts.concept_weights,
        )
    foil_mask = torch.ones(4, 4, dtype=torch.bool)
    foil_mask[1, 3] = False
    expected = model.retrieval_loss(
        logits, stacked_concept, scale=scale, also_correct=torch.eye(4, dtype=torch.bool), foil_mask=foil_mask
    )
    assert torch.allclose(marked.retrieval, expected, atol=1e-5)
