"""torch.compile: no more graph breaks than benchmarks/results/compile_graph_breaks.json records, and the compiled
training forward and video features equal eager ones, padding invariance included."""

import json
from pathlib import Path

import pytest
import torch
from compile_graph_breaks import FUNCTIONS, count_graph_breaks, example_inputs
from conftest import HARD_GUMBEL

from s2ca_hf import S2CAModel
from s2ca_hf.tiny import tiny_config


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "compile_graph_breaks.json"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # about 3 s on 2 cores: the longest test of the fast lane
def test_graph_breaks_are_at_most_the_measured_count():
    recorded = json.loads(RESULTS.read_text())
    counts = count_graph_breaks()
    for name in FUNCTIONS:
        after = recorded["after"]["functions"][name]["graph_break_count"]
        assert after < recorded["before"]["functions"][name]["graph_break_count"], name
        assert counts[name]["graph_break_count"] <= after, (name, counts[name]["break_reasons"])


def compiled_and_eager_training_step(model, compiled, inputs):
    results = []
    for function in (compiled, model):
        model.zero_grad()
        torch.manual_seed(1)  # the same Gumbel noise in both
        outputs = function(**inputs, return_loss=True)
        outputs.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((outputs, grads))
    return results


def check_compiled_equals_eager(backend, **config):
    inputs = example_inputs()
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(**config)).train()
    compiled = torch.compile(model, backend=backend)
    (ours, our_grads), (eager, eager_grads) = compiled_and_eager_training_step(model, compiled, inputs)
    assert torch.allclose(ours.loss, eager.loss, atol=1e-5)
    assert torch.allclose(ours.logits_per_text, eager.logits_per_text, atol=1e-4)
    if model.config.allocation == "gumbel":
        assert torch.equal(
            ours.video_concepts.allocation, eager.video_concepts.allocation
        )  # same noise, same one-hots
    else:  # soft allocation (the default): softmax weights, equal up to float reordering
        assert torch.allclose(ours.video_concepts.allocation, eager.video_concepts.allocation, atol=1e-6)
    assert our_grads.keys() == eager_grads.keys() and len(our_grads) > 50
    for name, grad in eager_grads.items():
        assert torch.allclose(our_grads[name], grad, atol=1e-4), name

    model.eval()
    video_features = torch.compile(model.get_video_features, backend=backend)
    pixels, frame_mask = inputs["pixel_values_videos"], inputs["frame_mask"]
    with torch.no_grad():
        eager_psi = model.get_video_features(pixels, frame_mask).pooler_output
        psi = video_features(pixels, frame_mask).pooler_output
        assert torch.allclose(psi, eager_psi, atol=1e-5)
        # Padding invariance under compile, where every slot goes through the tower: what a padded slot holds is never
        # seen, and more padded slots change nothing.
        scrambled = pixels.clone()
        scrambled[frame_mask == 0] = 100.0
        assert torch.equal(video_features(scrambled, frame_mask).pooler_output, psi)
        more = torch.cat([pixels, 10 * torch.randn(3, 2, *pixels.shape[2:])], dim=1)
        more_mask = torch.cat([frame_mask, torch.zeros(3, 2, dtype=frame_mask.dtype)], dim=1)
        assert torch.allclose(video_features(more, more_mask).pooler_output, eager_psi, atol=1e-5)


@pytest.mark.slow  # 12-17 s each on 2 cores; the fast lane keeps the graph-break count above
@pytest.mark.parametrize("allocation", ["soft", "gumbel"])
def test_compiled_training_forward_and_video_features_equal_eager(allocation):
    # aot_eager traces exactly what inductor compiles (dynamo + AOTAutograd, forward and backward) without its
    # C++ build, so this is faster than the inductor run below. Soft allocation is the default; hard
    # Gumbel allocation runs the straight-through path.
    check_compiled_equals_eager("aot_eager", **({} if allocation == "soft" else HARD_GUMBEL))


@pytest.mark.slow
def test_inductor_compiled_model_equals_eager():
    import torch._inductor.config

    # Inductor draws random numbers with its own generator unless told to call eager's: the same Gumbel noise.
    with torch._inductor.config.patch(fallback_random=True):
        check_compiled_equals_eager("inductor")
