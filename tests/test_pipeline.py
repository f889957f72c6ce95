"""The "video-text-retrieval" pipeline in process: both directions, inputs as paths, bytes or frames, errors."""

import math

import numpy as np
import pytest
import torch
from helpers import numbered_frames
from transformers import pipeline

from s2ca_hf import S2CAModel, VideoTextRetrievalPipeline
from s2ca_hf.tiny import tiny_config
from s2ca_hf.video_io import write_video


TEXTS = ["the dog", "a cat runs fast", "the cat"]


@pytest.fixture
def retrieval(processor):
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0))
    return pipeline("video-text-retrieval", model=model, processor=processor), model, processor


def model_logits(model, processor, texts, videos):
    with torch.no_grad():
        return model(**processor(text=texts, videos=videos, return_tensors="pt")).logits_per_text


def test_the_task_is_registered_with_the_auto_model():
    from transformers.pipelines import PIPELINE_REGISTRY

    task = PIPELINE_REGISTRY.supported_tasks["video-text-retrieval"]
    assert task["impl"] is VideoTextRetrievalPipeline
    assert [cls.__name__ for cls in task["pt"]] == ["AutoModel"]  # a name transformers can resolve remotely


def test_texts_ranked_for_a_video_are_the_softmax_of_the_models_logits(retrieval):
    pipe, model, processor = retrieval
    frames = numbered_frames(6)
    ranking = pipe(frames, candidate_labels=TEXTS)
    logits = model_logits(model, processor, TEXTS, [frames])[:, 0]
    assert [set(entry) for entry in ranking] == [{"label", "score", "logit"}] * len(TEXTS)
    assert [entry["label"] for entry in ranking] == [TEXTS[i] for i in logits.argsort(descending=True).tolist()]
    expected = dict(zip(TEXTS, logits.softmax(-1).tolist(), strict=True))
    for entry in ranking:
        assert entry["score"] == pytest.approx(expected[entry["label"]], abs=1e-6)
        assert entry["logit"] == pytest.approx(logits[TEXTS.index(entry["label"])].item(), abs=1e-5)
    assert math.isclose(sum(entry["score"] for entry in ranking), 1.0, abs_tol=1e-6)
    assert len({entry["score"] for entry in ranking}) > 1  # the tiny model does tell the texts apart


def test_videos_ranked_for_a_text_from_paths_and_frames(retrieval, tmp_path):
    pipe, model, processor = retrieval
    path = write_video(str(tmp_path / "clip.mp4"), num_frames=25, fps=10)
    videos = [numbered_frames(3), path, numbered_frames(7)[::-1].copy()]
    ranking = pipe("the dog", videos=videos)
    logits = model_logits(model, processor, ["the dog"], videos)[0]
    assert [entry["index"] for entry in ranking] == logits.argsort(descending=True).tolist()
    by_index = {entry["index"]: entry for entry in ranking}
    assert by_index[1]["video"] == path and by_index[0]["video"] == 0 and by_index[2]["video"] == 2
    for index, entry in by_index.items():
        assert entry["logit"] == pytest.approx(logits[index].item(), abs=1e-5)
        assert entry["score"] == pytest.approx(logits.softmax(-1)[index].item(), abs=1e-6)


def test_a_video_given_as_bytes_equals_the_file(retrieval, tmp_path):
    pipe, _, _ = retrieval
    path = tmp_path / "clip.mp4"
    write_video(str(path), num_frames=25, fps=10)
    assert pipe(path.read_bytes(), candidate_labels=TEXTS) == pipe(str(path), candidate_labels=TEXTS)


def test_widget_style_labels_template_top_k_and_lists(retrieval):
    pipe, _, _ = retrieval
    frames = numbered_frames(5)
    assert pipe(frames, candidate_labels="the dog, a cat runs fast,the cat") == pipe(frames, candidate_labels=TEXTS)
    templated = pipe(frames, candidate_labels=["dog", "cat"], hypothesis_template="the {}")
    direct = pipe(frames, candidate_labels=["the dog", "the cat"])
    assert [e["logit"] for e in templated] == [e["logit"] for e in direct]
    assert [e["label"] for e in templated] == [e["label"].removeprefix("the ") for e in direct]
    assert len(pipe(frames, candidate_labels=TEXTS, top_k=2)) == 2
    batch = pipe([frames, numbered_frames(2)], candidate_labels=TEXTS)
    assert len(batch) == 2 and batch[0] == pipe(frames, candidate_labels=TEXTS)


def test_the_pipeline_is_deterministic_even_if_the_model_was_training(processor):
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0)).train()
    pipe = pipeline("video-text-retrieval", model=model, processor=processor)
    frames = numbered_frames(4)
    assert pipe(frames, candidate_labels=TEXTS) == pipe(frames, candidate_labels=TEXTS)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda pipe, v: pipe(v), "exactly one"),
        (lambda pipe, v: pipe(v, candidate_labels=TEXTS, videos=[v]), "exactly one"),
        (lambda pipe, v: pipe(v, videos=[v]), "ranks videos for a text"),
        (lambda pipe, v: pipe(v, candidate_labels=[]), "non-empty"),
        (lambda pipe, v: pipe("the dog", videos=[]), "at least one"),
        (lambda pipe, v: pipe(v, candidate_labels=TEXTS, top_k=0), "top_k"),
        (lambda pipe, v: pipe(v, candidate_labels=TEXTS, batch_size=0), "batch_size"),
        (lambda pipe, v: pipe(v, candidate_labels=TEXTS, candidate_label="x"), "Unexpected"),
    ],
)
def test_misuse_gives_clear_errors(retrieval, call, message):
    pipe, _, _ = retrieval
    with pytest.raises((ValueError, TypeError), match=message):
        call(pipe, np.zeros((2, 8, 8, 3), dtype=np.uint8))


def test_pip_users_load_a_saved_folder_by_task_without_remote_code(retrieval, tmp_path):
    pipe, _, processor = retrieval
    pipe.model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    loaded = pipeline("video-text-retrieval", model=str(tmp_path / "model"))
    assert type(loaded) is VideoTextRetrievalPipeline
    frames = numbered_frames(5)
    assert loaded(frames, candidate_labels=TEXTS) == pipe(frames, candidate_labels=TEXTS)


def test_batch_size_4_gives_the_rankings_and_scores_of_batch_size_1(retrieval, tmp_path):
    # Several inputs and more candidates than a batch holds, so that batches mix the chunks of different inputs, a
    # last batch is partial, and videos with different numbers of frames are padded together.
    pipe, model, processor = retrieval
    path = write_video(str(tmp_path / "clip.mp4"), num_frames=25, fps=10)
    videos = [numbered_frames(n) for n in (2, 5, 3, 1, 4, 6)] + [path]
    captions = ["the dog", "a cat runs fast", "the cat", "a dog", "cat", "the dog runs", "dogs and cats"]
    queries = ["the dog", "a cat runs fast", "the cat"]
    batched = pipeline("video-text-retrieval", model=model, processor=processor, batch_size=4)
    for call in (
        lambda p, **kw: p(videos, candidate_labels=captions, **kw),
        lambda p, **kw: p(queries, videos=videos, **kw),
        lambda p, **kw: p("the cat", videos=videos, **kw),  # one input, its 7 candidate videos in batches
    ):
        one, four = call(pipe), call(pipe, batch_size=4)
        assert call(batched) == four
        one, four = (result if isinstance(result[0], list) else [result] for result in (one, four))
        for single, batch in zip(one, four, strict=True):
            key = "label" if "label" in single[0] else "index"
            assert [e[key] for e in batch] == [e[key] for e in single]
            assert len({e["logit"] for e in single}) == len(single)  # no ties: the order means something
            for a, b in zip(single, batch, strict=True):
                assert a.keys() == b.keys() and a.get("video") == b.get("video")
                assert b["score"] == pytest.approx(a["score"], abs=1e-6)
                assert b["logit"] == pytest.approx(a["logit"], abs=1e-5)
    # and both are the model's own logits
    logits = model_logits(model, processor, queries, videos)
    for row, ranking in zip(logits, pipe(queries, videos=videos, batch_size=4), strict=True):
        assert [e["index"] for e in ranking] == row.argsort(descending=True).tolist()
        for entry in ranking:
            assert entry["logit"] == pytest.approx(row[entry["index"]].item(), abs=1e-5)


def test_rerank_adds_the_late_interaction_score_in_both_directions(processor):
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(processor.tokenizer), allocation="expert_choice", late_interaction_weight=1.0,
        prototype_init_std=1.0,
    )  # fmt: skip
    model = S2CAModel(config)
    pipe = pipeline("video-text-retrieval", model=model, processor=processor)
    videos = [numbered_frames(3), numbered_frames(6), numbered_frames(7)[::-1].copy()]
    with torch.no_grad():
        inputs = processor(text=TEXTS, videos=videos, return_tensors="pt")
        out = model(**inputs)
        late = model.late_interaction_scores(out.text_concepts, out.video_embeds)
        expected = out.logits_per_text + model.logit_scale_value() * late  # (texts, videos)
    ranked = pipe("the dog", videos=videos, rerank=True)
    assert [entry["index"] for entry in ranked] == expected[0].argsort(descending=True).tolist()
    for entry in ranked:
        assert entry["logit"] == pytest.approx(expected[0, entry["index"]].item(), abs=1e-4)
    labels = pipe(videos[1], candidate_labels=TEXTS, rerank=True)
    for entry in labels:
        assert entry["logit"] == pytest.approx(expected[TEXTS.index(entry["label"]), 1].item(), abs=1e-4)
    plain = pipe("the dog", videos=videos)
    assert {e["index"]: e["logit"] for e in plain} != {e["index"]: e["logit"] for e in ranked}
    with pytest.raises(ValueError, match="late-interaction re-ranker"):
        plain_model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), late_interaction_weight=0.0))
        pipeline("video-text-retrieval", model=plain_model, processor=processor)("the dog", videos=videos, rerank=True)


def test_the_endpoint_handler_reranks_when_asked(processor, tmp_path):
    from s2ca_hf.handler import EndpointHandler

    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(processor.tokenizer), allocation="expert_choice", late_interaction_weight=1.0)
    model = S2CAModel(config).eval()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    videos = [write_video(str(tmp_path / f"{i}.mp4"), num_frames=10 + 5 * i, fps=5) for i in range(3)]
    with torch.no_grad():
        out = model(**processor(text=TEXTS, videos=videos, return_tensors="pt"))
        late = model.late_interaction_scores(out.text_concepts, out.video_embeds)
    handler = EndpointHandler(str(tmp_path / "model"))
    request = {"inputs": {"text": TEXTS, "videos": videos}}
    plain = torch.tensor(handler(request)["logits_per_text"])
    reranked = torch.tensor(handler({**request, "parameters": {"rerank": True}})["logits_per_text"])
    torch.testing.assert_close(plain, out.logits_per_text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reranked, out.logits_per_text + model.logit_scale_value() * late, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="must be true or false"):
        handler({**request, "parameters": {"rerank": "yes"}})
