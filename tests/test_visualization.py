import numpy as np
import pytest
import torch

from s2ca_hf import S2CAModel
from s2ca_hf.tiny import IMAGE_SIZE, NUM_FRAMES, tiny_config
from s2ca_hf.visualization import concept_colours, concept_map, main, plot_concept_map


pytest.importorskip("matplotlib")


VOCAB_SIZE = 2 * 256 + 6 + 2  # the tiny byte-level tokenizer: every byte alone and word-final, 6 merges, start, end


def seeded(**overrides) -> S2CAModel:
    torch.manual_seed(0)
    # Wide prototypes spread the tiny random tokens over several concepts, so the maps show more than one colour.
    return S2CAModel(tiny_config(vocab_size=VOCAB_SIZE, prototype_init_std=1.0, **overrides)).eval()


def frames(num_frames: int = NUM_FRAMES) -> np.ndarray:
    generator = np.random.default_rng(0)
    return generator.integers(0, 256, (num_frames, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("allocation", ["soft", "expert_choice"])
def test_concept_map_is_read_from_the_models_own_outputs(processor, allocation):
    assert len(processor.tokenizer) == VOCAB_SIZE
    model = seeded(allocation=allocation, concept_score_weight=0.5)
    video, text = frames(), "the red dog"
    concepts = concept_map(model, processor, video, text)

    inputs = processor(text=[text], videos=[video], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        encoded_text = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
        encoded_video = model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
    # The parts add up to the model's own score, instance and concept parts each to theirs.
    assert concepts.score == pytest.approx(
        float(out.logits_per_text[0, 0] / model.logit_scale_value().detach()), abs=1e-5
    )
    assert concepts.instance_score == pytest.approx(float(out.instance_similarity[0, 0]), abs=1e-6)
    assert float(concepts.concept_scores.sum()) == pytest.approx(0.5 * float(out.concept_similarity[0, 0]), abs=1e-5)
    # Words: the text's concept tokens (words and end-of-text, no start token), each with its allocation's argmax.
    mask = encoded_text.token_mask[0].bool()
    assert len(concepts.words) == int(mask.sum()) and concepts.words[-1] == "[end]"
    assert "".join(concepts.words[:-1]) == text.replace(" ", "")
    assert concepts.word_concepts == encoded_text.concepts.allocation[0].argmax(0)[mask].tolist()
    # Frames: [CLS] then a row-major patch grid per frame; each token in the concept that took it (of several that
    # did under expert choice, the one with the highest logit; -1 if none did).
    taken, logits = encoded_video.concepts.allocation[0], encoded_video.concepts.allocation_logits[0]
    tokens = torch.full((taken.shape[1],), -1)
    for n in range(taken.shape[1]):
        takers = [k for k in range(taken.shape[0]) if taken[k, n] > 0]
        if takers:
            tokens[n] = max(takers, key=lambda k: float(logits[k, n]))
    assert bool((tokens == -1).any()) == (allocation == "expert_choice")
    tokens = tokens.view(NUM_FRAMES, -1)
    side = IMAGE_SIZE // model.config.vision_config.patch_size
    assert concepts.patch_concepts.shape == (NUM_FRAMES, side, side)
    assert np.array_equal(concepts.patch_concepts, tokens[:, 1:].reshape(-1, side, side).numpy())
    assert np.array_equal(concepts.frame_concepts, tokens[:, 0].numpy())
    assert len(np.unique(concepts.patch_concepts)) > 1  # the test would not see a wrong layout with one colour
    # The frames are what the model saw: the tiny processor only rescales and normalises 32 x 32 frames.
    assert np.abs(concepts.frames.astype(int) - video.astype(int)).max() <= 1


def test_concept_map_keeps_only_real_frames_and_refuses_a_model_without_concepts(processor):
    short = frames(2)
    concepts = concept_map(seeded(), processor, short, "a cat")
    assert len(concepts.frames) == 2 and concepts.patch_concepts.shape[0] == 2
    with pytest.raises(ValueError, match="no concepts"):
        concept_map(seeded(use_concepts=False), processor, short, "a cat")
    assert concepts.frame_concepts.shape == (2,)


@pytest.mark.parametrize("allocation", ["soft", "expert_choice"])
def test_plot_draws_every_frame_word_and_concept(processor, tmp_path, allocation):
    concepts = concept_map(seeded(allocation=allocation), processor, frames(), "a red circle moves left")
    path = tmp_path / "map.png"
    figure = plot_concept_map(concepts, str(path))
    frame_axes, words_axis, bars_axis = figure.axes[:NUM_FRAMES], figure.axes[NUM_FRAMES], figure.axes[-1]
    assert len(figure.axes) == NUM_FRAMES + 2
    colours = concept_colours(concepts.num_concepts)
    # Each patch is tinted with its concept's colour, and one no concept took (expert choice) not at all; each
    # frame's border has its frame token's colour.
    tint = frame_axes[0].images[1].get_array()
    taken = concepts.patch_concepts[0] >= 0
    assert taken.all() == (allocation == "soft")
    assert np.allclose(tint[taken][..., :3], colours[concepts.patch_concepts[0][taken]][..., :3])
    assert np.allclose(tint[..., 3], np.where(taken, 0.45, 0.0))
    assert np.allclose(frame_axes[1].spines["top"].get_edgecolor(), colours[concepts.frame_concepts[1]])
    texts = words_axis.texts
    assert [t.get_text() for t in texts] == concepts.words
    assert np.allclose(texts[0].get_bbox_patch().get_facecolor()[:3], colours[concepts.word_concepts[0]][:3])
    heights = [bar.get_height() for bar in bars_axis.patches]
    assert np.allclose(heights, [concepts.instance_score, *concepts.concept_scores], atol=1e-6)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A word the vocabulary splits into pieces ("reddog": r, e, d, dog) is drawn joined, not as four words.
    pieces = concept_map(seeded(), processor, frames(), "the reddog")
    assert pieces.words == ["the", "r", "e", "d", "dog", "[end]"]
    assert pieces.ends_word == [True, False, False, False, True, True]
    starts = [t.get_position()[0] for t in plot_concept_map(pieces).axes[NUM_FRAMES].texts]
    total = len("the reddog [end] ")  # each word takes its length and one space
    assert np.allclose(starts, [0, 4 / total, 5 / total, 6 / total, 7 / total, 11 / total])
    again = tmp_path / "again.png"
    plot_concept_map(
        concept_map(seeded(allocation=allocation), processor, frames(), "a red circle moves left"), str(again)
    )
    assert again.read_bytes() == path.read_bytes()  # deterministic


def test_explain_command(processor, tmp_path, capsys):
    from s2ca_hf.video_io import write_video

    folder = tmp_path / "model"
    seeded().save_pretrained(folder)
    processor.save_pretrained(folder)
    video = tmp_path / "clip.mp4"
    write_video(str(video), 8, fps=4, size=IMAGE_SIZE)
    out = tmp_path / "explain.png"
    assert main(["--model", str(folder), "--video", str(video), "--text", "a red circle", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "score" in capsys.readouterr().out
    assert main(["--model", str(folder), "--video", str(tmp_path / "missing.mp4"), "--text", "x", "--out", str(out)])
    assert "missing.mp4" in capsys.readouterr().err
    for empty in ("", "   "):  # as search refuses an empty text, so does the map
        assert main(["--model", str(folder), "--video", str(video), "--text", empty, "--out", str(out)]) == 2
        assert "The text is empty" in capsys.readouterr().err
