import json
import math
from unittest import mock

import pytest
from transformers import AutoConfig, CLIPTextConfig, CLIPVisionConfig

from s2ca_hf import S2CAConfig
from s2ca_hf.tiny import tiny_config


def test_defaults_reproduce_vit_b32_with_s2ca():
    config = S2CAConfig()
    # ViT-B/32: joint dimension 512, image 224, patch 32 (49 patches), 12-layer towers of width 512 / 768.
    assert config.projection_dim == 512
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (224, 32)
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (768, 12)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (512, 12)
    assert config.text_config.projection_dim == config.vision_config.projection_dim == 512
    # The first reconstruction's defaults, except where the measurements (val of the built-in corpus) changed them
    # (docs/method.md §10).
    assert config.num_frames == 12
    assert config.temporal_module == "transformer" and config.temporal_num_hidden_layers == 4
    assert config.use_concepts and config.num_concepts == 16
    assert config.allocation == "expert_choice" and config.tokens_per_concept == 4 and config.gumbel_tau == 1.0
    assert config.concept_tracks and config.late_interaction_weight == 0.5 and config.has_late_interaction
    assert config.concept_eps == 1.0 and config.concept_score_weight == 1.0 and config.concept_loss_weight == 1.0
    assert config.diversity_loss_weight == 0.01 and config.balance_loss_weight == 0.01
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    assert config.logit_scale_max == pytest.approx(math.log(100))
    # Usage weights: phi and psi have D + K d_c = D (1 + K) = 8,704 dimensions; half as many with d_c = D / 2.
    assert config.embedding_dim == 8704
    assert S2CAConfig(concept_dim=256).embedding_dim == 512 + 16 * 256
    assert S2CAConfig(use_concepts=False).embedding_dim == 512


def test_sub_configs_accept_dicts_objects_and_none():
    from_dict = tiny_config()
    assert isinstance(from_dict.text_config, CLIPTextConfig)
    assert isinstance(from_dict.vision_config, CLIPVisionConfig)
    assert from_dict.text_config.hidden_size == 32 and from_dict.text_config.projection_dim == 32
    from_objects = S2CAConfig(
        text_config=from_dict.text_config, vision_config=from_dict.vision_config, projection_dim=32
    )
    assert from_objects.vision_config.patch_size == 8


def test_save_and_load_round_trip(tmp_path):
    config = tiny_config(num_concepts=16, allocation="soft", gumbel_tau=0.5, concept_tracks=True)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, S2CAConfig)
    saved, original = loaded.to_dict(), config.to_dict()
    saved.pop("_name_or_path"), original.pop("_name_or_path")
    assert saved == original
    assert isinstance(loaded.text_config, CLIPTextConfig) and loaded.text_config.hidden_size == 32
    assert (loaded.num_concepts, loaded.allocation, loaded.gumbel_tau) == (16, "soft", 0.5)


def test_fields_of_earlier_releases_that_only_shaped_training_are_dropped_quietly(tmp_path):
    from s2ca_hf import configuration_s2ca

    # A model saved with the temperature anneal, the routing agreement loss, the Gumbel noise scale, the concept
    # gradient scale, the per-concept or entropy loss or another retrieval loss (since removed) loads as it ran, and
    # so does one saved with a removed architecture option at the value this release computes.
    config = tiny_config(num_concepts=8)
    config.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    old = {"gumbel_tau_min": 0.1, "gumbel_anneal_start": 0.5, "routing_agreement_weight": 1.0}
    old.update(gumbel_noise_scale=0.25, concept_gradient_scale=0.1, concept_contrastive_weight=1.0)
    old.update(entropy_loss_weight=0.1, retrieval_loss="separate", routing_agreement_epsilon=0.5)
    kept = {"concept_weighting": "usage", "video_tokens": "patches", "share_concept_projections": True}
    path.write_text(json.dumps({**saved, **old, **kept, "concept_adapter_layers": 0}))
    with mock.patch.object(configuration_s2ca.logger, "warning") as warning:
        loaded = AutoConfig.from_pretrained(tmp_path)
    assert not any(hasattr(loaded, key) for key in [*old, *kept]) and loaded.num_concepts == 8
    warning.assert_not_called()
    with pytest.raises(ValueError, match="allocation"):  # an allocation that changed what evaluation computes
        S2CAConfig(**{**saved, "allocation": "relaxed"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("concept_weighting", "uniform"), ("video_tokens", "frames"), ("share_concept_projections", False),
     ("concept_adapter_layers", 2)],
)  # fmt: skip
def test_a_removed_architecture_option_at_another_value_is_refused_by_name(tmp_path, field, value):
    # These weights would compute something else than they were trained to: refused, not loaded silently wrong.
    tiny_config().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with pytest.raises(ValueError, match=f"`{field}`, an option this release"):
        AutoConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        ({"num_concepts": 0}, "num_concepts", ">= 1"),
        ({"temporal_module": "lstm"}, "temporal_module", "('mean', 'transformer')"),
        ({"allocation": "sparsemax"}, "allocation", "('gumbel', 'soft', 'expert_choice')"),
        ({"gumbel_tau": 0.0}, "gumbel_tau", "> 0"),
        ({"late_interaction_weight": -0.1}, "late_interaction_weight", ">= 0"),
        ({"concept_eps": -1.0}, "concept_eps", "> 0"),
        ({"concept_score_weight": -0.5}, "concept_score_weight", ">= 0"),
        ({"balance_loss_weight": -1.0}, "balance_loss_weight", ">= 0"),
        ({"temporal_num_attention_heads": 5}, "temporal_num_attention_heads", "divide"),
        ({"num_frames": 64}, "num_frames", "temporal_max_position_embeddings"),
    ],
)
def test_invalid_values_name_the_field(overrides, field, allowed):
    with pytest.raises(ValueError) as error:
        tiny_config(**overrides)
    message = str(error.value)
    assert f"`{field}`" in message and allowed in message


def test_projection_dim_must_match_explicit_sub_config():
    with pytest.raises(ValueError, match="vision_config.projection_dim"):
        S2CAConfig(projection_dim=256, text_config={"projection_dim": 256}, vision_config={"projection_dim": 512})


def test_wrong_type_is_rejected_with_the_field_name():
    with pytest.raises(Exception, match="num_concepts"):
        S2CAConfig(num_concepts="eight")


def test_docstring_has_an_args_entry_per_field():
    own_fields = [name for name in S2CAConfig.__annotations__ if not name.startswith("_")]
    assert "num_concepts" in own_fields and "logit_scale_init_value" in own_fields
    missing = [name for name in own_fields if f"\n        {name} (" not in S2CAConfig.__doc__]
    assert not missing, f"no Args: entry for {missing}"


def test_a_misspelt_field_is_refused_and_an_unknown_key_named(caplog):
    with pytest.raises(ValueError, match="`num_concepst`: did you mean `num_concepts`"):
        S2CAConfig(num_concepst=4)
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            config = S2CAConfig(my_experiment_note="x", _commit_hash="abc")  # the second: transformers' bookkeeping
    finally:
        hf_logging.disable_propagation()
    assert "my_experiment_note" in caplog.text and config.num_concepts == 16
    assert "_commit_hash" not in caplog.text
