import json
from pathlib import Path

import numpy as np
import pytest
import torch

from s2ca_hf.retrieval import retrieval_metrics


FIXTURES = Path(__file__).parent / "fixtures" / "metrics"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def assert_matches(result: dict, expected: dict, median_key: str = "MedianR"):
    assert result["R@1"] == pytest.approx(expected["R1"], abs=1e-4)
    assert result["R@5"] == pytest.approx(expected["R5"], abs=1e-4)
    assert result["R@10"] == pytest.approx(expected["R10"], abs=1e-4)
    assert result["MdR"] == pytest.approx(expected[median_key], abs=1e-4)
    assert result["MnR"] == pytest.approx(expected["MeanR"], abs=1e-4)


# --- the fixture cases (values from CLIP4Clip's code, ../shared/fixtures/metrics) ------------------------------------


@pytest.mark.parametrize("ties", ["average", "clip4clip"])
def test_single_caption_fixture(ties):
    case = load("single_caption.json")
    result = retrieval_metrics(case["sim"], ties=ties)  # tie-free: both modes agree
    assert_matches(result["text_to_video"], case["expected"]["t2v"])
    assert_matches(result["video_to_text"], case["expected"]["v2t"])
    assert result["protocol"]["captions_per_video"] == "single"
    assert result["protocol"]["ties"] == ties


@pytest.mark.parametrize("scale", [1, 100])
def test_dsl_fixture(scale):
    case = load("single_caption.json")
    expected = case["dsl"][f"logit_scale_{scale}"]
    result = retrieval_metrics(np.array(case["sim"]) * scale, post_processing="dsl")
    assert_matches(result["text_to_video"], expected["t2v"])
    assert_matches(result["video_to_text"], expected["v2t"])
    assert result["protocol"]["post_processing"] == "dsl"


def test_multi_caption_fixture():
    case = load("multi_caption.json")
    # Rows are captions grouped by video; cut_off_points [2, 3, 6] -> videos 0, 0, 1, 2, 2, 2.
    cut_offs = case["cut_off_points"]
    text_to_video = np.repeat(np.arange(len(cut_offs)), np.diff([0, *cut_offs]))
    assert text_to_video.tolist() == [0, 0, 1, 2, 2, 2]
    clip4clip = retrieval_metrics(case["sim_flat"], text_to_video, ties="clip4clip")
    assert_matches(clip4clip["text_to_video"], case["expected_t2v"])  # torch.median: the lower middle value
    assert_matches(clip4clip["video_to_text"], case["expected_v2t"])
    default = retrieval_metrics(case["sim_flat"], text_to_video)
    assert_matches(default["text_to_video"], case["expected_t2v"], median_key="MedianR_if_numpy_median_were_used")
    assert default["protocol"]["captions_per_video"] == "multiple"
    assert "CLIP4Clip" in default["protocol"]["video_to_text"]


@pytest.mark.parametrize("index", range(4))
def test_clip4clip_mode_reproduces_the_maintainers_tie_examples(index):
    case = load("ties.json")["cases"][index]
    # compute_metrics(x) on a 2 x 3 matrix: text i's ground truth is column i.
    result = retrieval_metrics(case["x"], [0, 1], ties="clip4clip")
    assert_matches(result["text_to_video"], case["expected"])


def test_multi_caption_ties_clip4clip_order_versus_average():
    # Caption 1 (video 1) ties with column 0: CLIP4Clip's (stable) argsort puts column 0 first -> rank 2;
    # averaging gives 1.5. Caption 0 has no tie.
    sim = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.8]])
    text_to_video = [0, 1, 1]
    clip4clip = retrieval_metrics(sim, text_to_video, ties="clip4clip")["text_to_video"]
    average = retrieval_metrics(sim, text_to_video)["text_to_video"]
    assert clip4clip["MnR"] == pytest.approx((1 + 2 + 1) / 3)
    assert average["MnR"] == pytest.approx((1 + 1.5 + 1) / 3)


def test_average_ties_by_construction():
    # Row 0: ground truth 1 is strictly last of three -> rank 3. Row 1: all three tied -> ranks 1, 2, 3 -> mean 2.
    result = retrieval_metrics([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], [0, 1])["text_to_video"]
    assert result["MnR"] == pytest.approx(2.5) and result["MdR"] == pytest.approx(2.5)
    assert result["R@1"] == 0.0
    # A constant matrix: every query sits in the middle, not at the top (optimistic) nor counted n times.
    constant = retrieval_metrics(np.zeros((5, 5)))["text_to_video"]
    assert constant["MnR"] == pytest.approx(3.0) and constant["R@1"] == 0.0 and constant["R@5"] == 100.0


# --- hand-built matrices ---------------------------------------------------------------------------------------------


def matrix_with_ranks(ranks: list[int], num_videos: int, seed: int = 0) -> np.ndarray:
    """A score matrix whose row i puts its ground truth (column i) at 1-based rank ranks[i], all values distinct."""
    rng = np.random.default_rng(seed)
    sim = np.zeros((len(ranks), num_videos))
    for i, rank in enumerate(ranks):
        values = np.sort(rng.permutation(num_videos * 10)[:num_videos].astype(float))[::-1]  # distinct, descending
        others = [j for j in range(num_videos) if j != i]
        rng.shuffle(others)
        order = others[: rank - 1] + [i] + others[rank - 1 :]  # columns by decreasing score
        sim[i, order] = values
    return sim


def test_ranks_known_by_construction():
    ranks = [1, 1, 2, 7, 3, 1, 12, 5, 1, 60, 2, 1]
    sim = matrix_with_ranks(ranks, num_videos=70)[:, :70]
    result = retrieval_metrics(sim, np.arange(12))["text_to_video"]
    r = np.array(ranks)
    assert result["R@1"] == pytest.approx(100 * np.mean(r <= 1))
    assert result["R@5"] == pytest.approx(100 * np.mean(r <= 5))
    assert result["R@10"] == pytest.approx(100 * np.mean(r <= 10))
    assert result["R@50"] == pytest.approx(100 * np.mean(r <= 50))
    assert result["MdR"] == pytest.approx(np.median(r)) == 2.0
    assert result["MnR"] == pytest.approx(r.mean())
    assert result["std_rank"] == pytest.approx(r.std(ddof=1))


def test_multi_caption_groups_of_different_sizes_and_both_video_to_text_definitions():
    # 3 videos with 1, 3 and 2 captions. Columns are videos.
    text_to_video = [0, 1, 1, 1, 2, 2]
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # video 0's caption
            [0.8, 0.7, 0.1],  # video 1's captions
            [0.85, 0.6, 0.3],
            [0.82, 0.5, 0.2],
            [0.3, 0.4, 0.6],  # video 2's captions
            [0.2, 0.9, 0.5],
        ]
    )
    t2v = retrieval_metrics(sim, text_to_video)["text_to_video"]
    caption_ranks = np.array([1, 2, 2, 2, 1, 2])  # each caption's video among the 3 columns
    assert t2v["MnR"] == pytest.approx(caption_ranks.mean()) and t2v["R@1"] == pytest.approx(100 * 2 / 6)
    # Video 0 as a query (column 0): captions of video 1 score 0.8, 0.85, 0.82 < 0.9 -> rank 1 either way.
    # Video 1 (column 1): its best caption scores 0.7; video 2's caption scores 0.9.
    #   CLIP4Clip: groups {0: 0.1, 1: 0.7, 2: 0.9} -> rank 2.  CE: captions above 0.7: one (0.9) -> rank 2.
    # Video 2 (column 2): its best caption 0.6; video 1's captions 0.1, 0.3, 0.2 and video 0's 0.2 -> rank 1.
    clip4clip = retrieval_metrics(sim, text_to_video, video_to_text="clip4clip")["video_to_text"]
    assert clip4clip["MnR"] == pytest.approx((1 + 2 + 1) / 3)
    ce = retrieval_metrics(sim, text_to_video, video_to_text="ce")
    assert ce["video_to_text"]["MnR"] == pytest.approx((1 + 2 + 1) / 3)
    assert "CE" in ce["protocol"]["video_to_text"]


def test_the_two_video_to_text_definitions_differ_when_a_group_has_several_high_captions():
    # Video 1's three captions all beat video 0's only caption on column 0.
    text_to_video = [0, 1, 1, 1]
    sim = np.array([[0.5, 0.0], [0.6, 0.9], [0.7, 0.8], [0.8, 0.7]])
    clip4clip = retrieval_metrics(sim, text_to_video, video_to_text="clip4clip")["video_to_text"]
    ce = retrieval_metrics(sim, text_to_video, video_to_text="ce")["video_to_text"]
    # Query video 0: groups {0: 0.5, 1: 0.8} -> rank 2; CE: 3 captions above 0.5 -> rank 4. Video 1: rank 1 both.
    assert clip4clip["MnR"] == pytest.approx((2 + 1) / 2)
    assert ce["MnR"] == pytest.approx((4 + 1) / 2)


def test_a_video_without_caption_is_a_distractor_only():
    sim = np.array([[0.9, 0.1, 0.95], [0.2, 0.8, 0.1]])  # video 2 has no text
    result = retrieval_metrics(sim, [0, 1])
    assert result["text_to_video"]["MnR"] == pytest.approx(1.5)  # text 0 loses to the distractor
    assert result["protocol"]["num_videos_without_text"] == 1
    assert result["video_to_text"]["MnR"] == pytest.approx(1.0)  # only videos 0 and 1 are queries


# --- chunking, inputs, errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["single", "multi"])
def test_chunked_equals_full_and_features_equal_the_matrix(protocol):
    generator = torch.Generator().manual_seed(0)
    num_videos = 150  # several chunks of 37 (and 64 for features), with a ragged last one
    text_to_video = torch.arange(num_videos) if protocol == "single" else torch.randint(0, num_videos, (400,))
    text_to_video[:num_videos] = torch.arange(num_videos)  # every video keeps at least one caption
    text = torch.randn(len(text_to_video), 16, generator=generator)
    video = torch.randn(num_videos, 16, generator=generator)
    sim = text @ video.t()
    for kwargs in ({}, {"video_to_text": "ce"}, {"post_processing": "dsl"}, {"ties": "clip4clip"}):
        full = retrieval_metrics(sim, text_to_video, chunk_size=10**6, **kwargs)
        chunked = retrieval_metrics(sim, text_to_video, chunk_size=37, **kwargs)
        from_features = retrieval_metrics(
            text_to_video=text_to_video, text_embeds=text, video_embeds=video, chunk_size=64, **kwargs
        )
        for direction in ("text_to_video", "video_to_text"):
            for key, value in full[direction].items():
                assert chunked[direction][key] == pytest.approx(value, abs=1e-9), (kwargs, direction, key)
                assert from_features[direction][key] == pytest.approx(value, abs=1e-6), (kwargs, direction, key)


def test_nan_is_an_error():
    sim = np.eye(4)
    sim[2, 1] = np.nan
    with pytest.raises(ValueError, match="text 2 and video 1 is NaN"):
        retrieval_metrics(sim)
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(sim, chunk_size=1, video_to_text="ce")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="as many texts as videos"):
        retrieval_metrics(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="`ties`"):
        retrieval_metrics(np.eye(3), ties="optimistic")
    with pytest.raises(ValueError, match="text_to_video"):
        retrieval_metrics(np.eye(3), [0, 1, 5])
    with pytest.raises(ValueError, match="query_bank"):
        retrieval_metrics(np.eye(3), post_processing="qb_norm")


def test_qb_norm_follows_the_dynamic_inverted_softmax():
    rng = np.random.default_rng(15)  # a seed where half the queries are renormalised, and it changes the ranks
    test = rng.normal(size=(6, 6)) * 0.3 + np.eye(6) * 0.5
    bank = rng.normal(size=(10, 6)) * 0.3
    beta = 20.0
    # Reference, written from QBN dynamic_inverted_softmax.py (k = 1).
    retrieved = set(np.argmax(bank, axis=1).tolist())
    normalizing_sum = np.exp(beta * bank).sum(axis=0)
    expected = test.copy()
    renormalised = [i for i in range(6) if int(np.argmax(test[i])) in retrieved]
    expected[renormalised] = np.exp(beta * test[renormalised]) / normalizing_sum
    assert 0 < len(renormalised) < 6
    result = retrieval_metrics(test, post_processing="qb_norm", query_bank=bank, qb_norm_beta=beta)
    direct = retrieval_metrics(expected)
    assert result["text_to_video"] == direct["text_to_video"]
    assert result["video_to_text"] == direct["video_to_text"]
    assert result["protocol"]["post_processing"] == "qb_norm"
    everything = retrieval_metrics(np.exp(beta * test) / normalizing_sum)  # renormalising every row differs
    assert everything["text_to_video"] != direct["text_to_video"]
