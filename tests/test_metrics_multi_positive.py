"""Content-aware ground truth: several correct videos per text (`retrieval_metrics(..., positives=...)`)."""

import numpy as np
import pytest
import torch

from s2ca_hf.retrieval import retrieval_metrics


def summary(ranks: list[float], median: str = "average") -> dict:
    """The summary `retrieval_metrics` reports for these 1-based ranks, written out directly."""
    r = np.array(ranks, dtype=float)
    middle = np.sort(r)[(len(r) - 1) // 2] if median == "lower" else np.median(r)
    result = {f"R@{k}": 100 * np.mean(r <= k) for k in (1, 5, 10, 50)}
    return {**result, "MdR": middle, "MnR": r.mean(), "std_rank": r.std(ddof=1)}


def assert_summary(result: dict, ranks: list[float], median: str = "average"):
    expected = summary(ranks, median)
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), (key, result, ranks)


def assert_same_numbers(a: dict, b: dict, abs: float = 0.0):
    for direction in ("text_to_video", "video_to_text"):
        for key, value in a[direction].items():
            assert b[direction][key] == pytest.approx(value, abs=abs), (direction, key)


# --- hand-computed matrices ------------------------------------------------------------------------------------------

# Four texts, each from its own video (text i from video i); columns are videos.
SIM = np.array(
    [
        [0.5, 0.9, 0.7, 0.1],  # positives {0, 1}: wrong video 2 is above positive 0 but below positive 1 -> rank 1
        [0.8, 0.6, 0.1, 0.35],  # positives {1}: wrong video 0 above -> rank 2
        [0.9, 0.2, 0.4, 0.3],  # positives {2, 3}: wrong video 0 above both -> rank 2
        [0.5, 0.7, 0.7, 0.1],  # positives {3, 2}: best positive (video 2, 0.7) tied with wrong video 1 -> rank 1.5
    ]
)
POSITIVES = [[0, 1], [1], [2, 3], [3, 2]]
# Video -> text, by column (each video's positive texts are those listing it):
#   video 0: positive text 0 (0.5); wrong texts 1 (0.8) and 2 (0.9) above, text 3 (0.5) tied -> rank 1 + 2 + 0.5
#   video 1: positive texts 0 (0.9) and 1 (0.6); wrong text 3 (0.7) is above text 1 but below text 0 -> rank 1
#   video 2: positive texts 2 (0.4) and 3 (0.7); wrong text 0 (0.7) tied with the best -> rank 1.5
#   video 3: positive texts 2 (0.3) and 3 (0.1); wrong text 1 (0.35) above both -> rank 2
T2V_RANKS = [1, 2, 2, 1.5]
V2T_RANKS = [3.5, 1, 1.5, 2]


@pytest.mark.parametrize("video_to_text", ["clip4clip", "ce"])  # one caption per video: the two agree
def test_two_positives_per_text_by_hand(video_to_text):
    result = retrieval_metrics(SIM, positives=POSITIVES, video_to_text=video_to_text)
    assert_summary(result["text_to_video"], T2V_RANKS)
    assert_summary(result["video_to_text"], V2T_RANKS)
    # Without positives the same matrix ranks each text's own video only.
    plain = retrieval_metrics(SIM)
    assert_summary(plain["text_to_video"], [3, 2, 2, 4])
    assert_summary(plain["video_to_text"], [3.5, 3, 3, 3.5])


def test_two_positives_per_text_with_clip4clip_ties():
    # Every tied position is an entry of its own: text 3 gives ranks 1 and 2; video 0 gives 3 and 4, video 2 1 and 2.
    result = retrieval_metrics(SIM, positives=POSITIVES, ties="clip4clip")
    assert_summary(result["text_to_video"], [1, 2, 2, 1, 2])
    assert_summary(result["video_to_text"], [3, 4, 1, 1, 2, 2])


def test_caption_groups_with_a_caption_of_another_video():
    # Text 1 is a caption of video 1 that also fits video 0; video 1 has a second caption, text 2, which does not.
    text_to_video = [0, 1, 1, 2]
    positives = [[0], [1, 0], [1], [2]]
    sim = np.array(
        [
            [0.3, 0.1, 0.2],
            [0.5, 0.6, 0.8],  # best positive 0.6 (video 1); wrong video 2 above -> rank 2
            [0.9, 0.2, 0.1],  # wrong video 0 above -> rank 2
            [0.6, 0.7, 0.5],  # wrong videos 0 and 1 above -> rank 3
        ]
    )
    result = retrieval_metrics(sim, text_to_video, positives=positives)
    assert_summary(result["text_to_video"], [1, 2, 2, 3])
    # Video 0 as a query: positive texts 0 (0.3) and 1 (0.5). Groups {0} and {1, 2} hold a positive, so they are
    #   correct and score as their best positive caption (0.3, 0.5): text 2's 0.9 neither competes nor lifts its
    #   group. Wrong group {3} scores 0.6 -> rank 2. CE ranks captions: wrong texts 2 (0.9) and 3 (0.6) -> rank 3.
    # Video 1: positive texts 1 (0.6), 2 (0.2); wrong group {3} 0.7 above, {0} 0.1 below -> rank 2 either way.
    # Video 2: positive text 3 (0.5); wrong group {1, 2} scores max(0.8, 0.1) -> rank 2; CE: text 1 (0.8) -> rank 2.
    assert_summary(result["video_to_text"], [2, 2, 2])
    ce = retrieval_metrics(sim, text_to_video, positives=positives, video_to_text="ce")
    assert_summary(ce["video_to_text"], [3, 2, 2])


def test_clip4clip_ties_with_several_captions_per_video_follow_a_stable_sort():
    # Several captions per video: CLIP4Clip's argsort order, where a tie goes to the earlier column. The best
    # positive sits at its first column of that score; tied wrong columns count only when they come before it.
    text_to_video = [0, 0, 1, 2]
    positives = [[0], [0, 2], [1, 2], [2]]
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # rank 1
            [0.6, 0.6, 0.6],  # first best positive: column 0, nothing before it -> 1 (average: 1 + 1/2)
            [0.6, 0.3, 0.6],  # first best positive: column 2, wrong column 0 tied before it -> 2 (average: 1.5)
            [0.1, 0.6, 0.6],  # column 2, wrong column 1 tied before it -> 2 (average: 1.5)
        ]
    )
    clip4clip = retrieval_metrics(sim, text_to_video, positives=positives, ties="clip4clip")["text_to_video"]
    assert_summary(clip4clip, [1, 1, 2, 2], median="lower")
    average = retrieval_metrics(sim, text_to_video, positives=positives)["text_to_video"]
    assert_summary(average, [1, 1.5, 1.5, 1.5])


def test_video_queries_are_the_videos_some_text_lists():
    # Video 2 has no caption of its own but text 0 lists it: it is a video->text query. Video 3 no text lists: it is
    # a distractor for text->video only.
    sim = np.array([[0.2, 0.1, 0.8, 0.9], [0.3, 0.7, 0.6, 0.1]])
    result = retrieval_metrics(sim, [0, 1], positives=[[0, 2], [1]])
    assert_summary(result["text_to_video"], [2, 1])  # text 0: best positive 0.8 (video 2), wrong video 3 above
    # Video 0: text 0 (0.2) below wrong text 1 (0.3) -> 2. Video 1: text 1 -> 1. Video 2: text 0 (0.8) -> 1.
    assert_summary(result["video_to_text"], [2, 1, 1])
    protocol = result["protocol"]
    assert protocol["positives"] == "content"
    assert protocol["mean_positives_per_text"] == pytest.approx(1.5)
    assert protocol["num_videos_without_text"] == 2 and protocol["num_videos_without_positive_text"] == 1
    assert retrieval_metrics(sim, [0, 1])["protocol"]["positives"] == "source video"


# --- the single-positive case ----------------------------------------------------------------------------------------


def random_case(num_texts: int, num_videos: int, seed: int):
    rng = np.random.default_rng(seed)
    sim = rng.normal(size=(num_texts, num_videos)).round(1)  # rounded: ties, so both tie rules are exercised
    if num_texts == num_videos:
        return sim, np.arange(num_videos)
    return sim, np.r_[np.arange(num_videos), rng.integers(0, num_videos, num_texts - num_videos)]


OPTIONS = (
    {},
    {"ties": "clip4clip"},
    {"video_to_text": "ce"},
    {"video_to_text": "ce", "ties": "clip4clip"},
    {"post_processing": "dsl"},
)


@pytest.mark.parametrize("shape", [(9, 9), (14, 6)])  # one caption per video, several
@pytest.mark.parametrize("options", OPTIONS)
def test_own_video_as_the_only_positive_gives_the_single_positive_numbers(shape, options):
    sim, text_to_video = random_case(*shape, seed=1)
    expected = retrieval_metrics(sim, text_to_video, **options)
    as_lists = retrieval_metrics(sim, text_to_video, positives=[[v] for v in text_to_video], **options)
    as_mask = retrieval_metrics(sim, text_to_video, positives=np.eye(shape[1], dtype=bool)[text_to_video], **options)
    for result in (as_lists, as_mask):
        assert result["text_to_video"] == expected["text_to_video"]
        assert result["video_to_text"] == expected["video_to_text"]
        assert result["protocol"]["positives"] == "content"
        assert result["protocol"]["mean_positives_per_text"] == 1.0
    assert expected["protocol"]["positives"] == "source video"


def test_under_ce_only_a_videos_own_captions_tied_at_its_best_differ():
    # Collaborative experts lets a video's own captions tied at its best score share the tied positions (rank 1.5
    # for video 0 here); positives never compete with each other (rank 1). The documented exception.
    sim = np.array([[0.9, 0.1], [0.9, 0.2], [0.1, 0.8]])
    text_to_video = [0, 0, 1]
    source = retrieval_metrics(sim, text_to_video, video_to_text="ce")["video_to_text"]
    content = retrieval_metrics(sim, text_to_video, positives=[[0], [0], [1]], video_to_text="ce")["video_to_text"]
    assert source["MnR"] == pytest.approx((1.5 + 1) / 2)
    assert content["MnR"] == pytest.approx(1.0)


# --- inputs, blocks, features ----------------------------------------------------------------------------------------


def test_every_form_of_positives_gives_the_same_numbers():
    expected = retrieval_metrics(SIM, positives=POSITIVES)
    mask = np.zeros((4, 4), dtype=bool)
    for text, columns in enumerate(POSITIVES):
        mask[text, columns] = True
    forms = [
        [set(columns) for columns in POSITIVES],
        [tuple(columns) for columns in POSITIVES],
        [np.array(columns) for columns in POSITIVES],
        [torch.tensor(columns) for columns in POSITIVES],
        [[0, 1, 1, 0], [1], [3, 2, 2], [3, 2]],  # duplicates are one positive
        mask,
        torch.from_numpy(mask),
        mask.tolist(),  # nested lists of Python booleans: a mask, not the columns 0 and 1
        list(mask),
        np.array([[0, 1], [1, 1], [2, 3], [2, 3]]),  # a rectangular integer array: columns, one row per text
    ]
    for positives in forms:
        result = retrieval_metrics(SIM, positives=positives)
        assert result["text_to_video"] == expected["text_to_video"], positives
        assert result["video_to_text"] == expected["video_to_text"], positives


def test_a_list_of_boolean_rows_is_not_read_as_columns():
    # [True, False, ...] read as columns would be {1, 0}: for text 1 that would wrongly make video 0 a positive.
    mask = [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
        [False] * 3 + [True],
    ]
    assert retrieval_metrics(SIM, positives=mask)["text_to_video"] == retrieval_metrics(SIM)["text_to_video"]


def random_positives(text_to_video, num_videos: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [
        sorted({int(v), *rng.choice(num_videos, rng.integers(0, 4), replace=True).tolist()}) for v in text_to_video
    ]


@pytest.mark.parametrize("protocol", ["single", "multi"])
def test_blocks_and_features_give_the_full_numbers(protocol):
    generator = torch.Generator().manual_seed(0)
    num_videos = 23
    text_to_video = torch.arange(num_videos) if protocol == "single" else torch.randint(0, num_videos, (41,))
    text_to_video[:num_videos] = torch.arange(num_videos)
    text = torch.randn(len(text_to_video), 8, generator=generator)
    video = torch.randn(num_videos, 8, generator=generator)
    bank = torch.randn(30, 8, generator=generator)
    sim = text @ video.t()
    positives = random_positives(text_to_video.tolist(), num_videos, seed=3)
    assert max(len(p) for p in positives) > 2
    for options in (*OPTIONS, {"post_processing": "qb_norm", "query_bank": bank @ video.t()}):
        full = retrieval_metrics(sim, text_to_video, positives=positives, chunk_size=10**6, **options)
        # The positives change the numbers: they are used in every one of these paths.
        plain = retrieval_metrics(sim, text_to_video, **options)
        assert plain["text_to_video"]["MnR"] > full["text_to_video"]["MnR"], options
        one_at_a_time = retrieval_metrics(sim, text_to_video, positives=positives, chunk_size=1, **options)
        ragged = retrieval_metrics(sim, text_to_video, positives=positives, chunk_size=7, **options)
        assert_same_numbers(full, one_at_a_time, abs=1e-9)
        assert_same_numbers(full, ragged, abs=1e-9)
        if "query_bank" in options:
            options = {"post_processing": "qb_norm", "query_bank_text_embeds": bank}
        from_features = retrieval_metrics(
            text_to_video=text_to_video, text_embeds=text, video_embeds=video, positives=positives, chunk_size=5,
            **options,
        )  # fmt: skip
        assert_same_numbers(full, from_features, abs=1e-6)


# --- errors ----------------------------------------------------------------------------------------------------------


def test_bad_positives_are_named():
    with pytest.raises(ValueError, match=r"`positives` of text 2 does not hold its own video \(column 2\)"):
        retrieval_metrics(SIM, positives=[[0, 1], [1], [3], [3]])
    with pytest.raises(ValueError, match=r"text 0 does not hold its own video"):
        mask = np.zeros((4, 4), dtype=bool)
        mask[1:, 1:] = np.eye(3, dtype=bool)
        retrieval_metrics(SIM, positives=mask)
    with pytest.raises(ValueError, match=r"`positives` of text 1 holds column 4, outside \[0, 4\)"):
        retrieval_metrics(SIM, positives=[[0], [1, 4], [2], [3]])
    with pytest.raises(ValueError, match=r"`positives` of text 3 holds column -1"):
        retrieval_metrics(SIM, positives=[[0], [1], [2], [3, -1]])
    with pytest.raises(ValueError, match=r"`positives` has 3 entries for 4 texts"):
        retrieval_metrics(SIM, positives=[[0], [1], [2]])
    with pytest.raises(ValueError, match=r"must be \[num_texts, num_videos\] = \[4, 4\], got shape \(4, 3\)"):
        retrieval_metrics(SIM, positives=np.ones((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="mixes boolean rows"):
        retrieval_metrics(SIM, positives=[[True, False, False, False], [1], [2], [3]])
    with pytest.raises(ValueError, match="text 0 must hold integer video columns"):
        retrieval_metrics(SIM, positives=[[0.0, 1.5], [1], [2], [3]])


# --- evaluate_corpus with a `positive_video_ids` column --------------------------------------------------------------

# Five clips and seven texts; each text lists the clips its caption fits (its own first).
VIDEO_IDS = [f"clip{i}" for i in range(5)]
TEXT_VIDEOS = [0, 1, 2, 3, 4, 1, 3]
TEXT_POSITIVES = [[0, 2], [1], [2, 0, 4], [3], [4, 1], [1, 3], [3]]


def tiny_split(folder, positive_ids=None, broken_video: int | None = None):
    """A split in `load_corpus`'s schema over five random clips, with `positive_video_ids` when given."""
    from datasets import Dataset, Features, Sequence, Value

    from s2ca_hf.data.corpora import FEATURES
    from s2ca_hf.video_io import encode_frames

    rng = np.random.default_rng(0)
    paths = []
    for i, video_id in enumerate(VIDEO_IDS):
        path = folder / f"{video_id}{'-broken' if i == broken_video else ''}.mp4"
        if i == broken_video:
            path.write_bytes(b"not a video")
        elif not path.exists():
            encode_frames(path, rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), 4)
        paths.append(str(path))
    columns = {
        "video_id": [VIDEO_IDS[v] for v in TEXT_VIDEOS],
        "video_path": [paths[v] for v in TEXT_VIDEOS],
        "text": [
            f"the dog {word} the cat" for word in ("sees", "likes", "meets", "chases", "finds", "hears", "joins")
        ],
        "video_index": TEXT_VIDEOS,
        "start": [None] * len(TEXT_VIDEOS),
        "end": [None] * len(TEXT_VIDEOS),
    }
    features = dict(FEATURES)
    if positive_ids is not None:
        columns["positive_video_ids"] = positive_ids
        features["positive_video_ids"] = Sequence(Value("string"))
    return Dataset.from_dict(columns, features=Features(features)), paths


def positive_ids_of(positives) -> list[list[str]]:
    return [[VIDEO_IDS[v] for v in columns] for columns in positives]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from s2ca_hf import S2CAModel
    from s2ca_hf.tiny import tiny_config, tiny_processor

    root = tmp_path_factory.mktemp("multi_positive")
    processor = tiny_processor(str(root / "tokenizer"))
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0)).eval()
    return root, model, processor


def direct_features(model, processor, texts, paths):
    from s2ca_hf.retrieval.evaluation import encode_texts, encode_videos, processor_video_batches

    phi = encode_texts(model, processor, texts, progress=False)
    psi = encode_videos(model, processor_video_batches(processor, paths, batch_size=2), progress=False)
    return phi, psi


def test_evaluate_corpus_uses_the_positive_video_ids_column(tiny_model):
    from s2ca_hf.retrieval.evaluation import evaluate_corpus

    root, model, processor = tiny_model
    dataset, paths = tiny_split(root, positive_ids_of(TEXT_POSITIVES))
    phi, psi = direct_features(model, processor, list(dataset["text"]), paths)
    expected = retrieval_metrics(phi @ psi.t(), TEXT_VIDEOS, positives=TEXT_POSITIVES)
    single = retrieval_metrics(phi @ psi.t(), TEXT_VIDEOS)
    assert expected["text_to_video"] != single["text_to_video"]  # the positives matter on this model

    result = evaluate_corpus(model, processor, dataset, batch_size=2, progress=False, post_processing=["dsl"])
    assert_same_numbers(expected, result["metrics"], abs=1e-6)
    dsl = retrieval_metrics(phi @ psi.t(), TEXT_VIDEOS, positives=TEXT_POSITIVES, post_processing="dsl")
    assert_same_numbers(dsl, result["post_processing"]["dsl"], abs=1e-6)
    assert result["protocol"]["positives"] == "content" and result["protocol"]["positives_left_out"] == 0
    assert result["protocol"]["mean_positives_per_text"] == pytest.approx(12 / 7)
    assert result["embeddings"]["positives"] == [sorted(columns) for columns in TEXT_POSITIVES]

    required = evaluate_corpus(model, processor, dataset, batch_size=2, progress=False, multi_positive=True)
    assert required["metrics"] == result["metrics"]
    ignored = evaluate_corpus(model, processor, dataset, batch_size=2, progress=False, multi_positive=False)
    assert_same_numbers(single, ignored["metrics"], abs=1e-6)
    assert ignored["protocol"]["positives"] == "source video" and "positives_left_out" not in ignored["protocol"]

    without_column, _ = tiny_split(root)
    plain = evaluate_corpus(model, processor, without_column, batch_size=2, progress=False)
    assert plain["metrics"] == ignored["metrics"] and plain["protocol"]["positives"] == "source video"


def test_evaluate_corpus_drops_the_positives_of_a_skipped_video(tiny_model):
    from s2ca_hf.retrieval.evaluation import evaluate_corpus

    root, model, processor = tiny_model
    dataset, paths = tiny_split(root, positive_ids_of(TEXT_POSITIVES), broken_video=2)
    result = evaluate_corpus(model, processor, dataset, batch_size=2, progress=False, on_error="skip")
    # Clip 2 is left out with its own text (row 2); the columns are clips 0, 1, 3, 4; row 0 loses the positive clip 2.
    kept_rows = [0, 1, 3, 4, 5, 6]
    text_to_video = [0, 1, 2, 3, 1, 2]
    positives = [[0], [1], [2], [1, 3], [1, 2], [2]]
    texts = [dataset["text"][row] for row in kept_rows]
    phi, psi = direct_features(model, processor, texts, [paths[i] for i in (0, 1, 3, 4)])
    expected = retrieval_metrics(phi @ psi.t(), text_to_video, positives=positives)
    assert_same_numbers(expected, result["metrics"], abs=1e-6)
    assert result["embeddings"]["positives"] == positives
    assert result["protocol"]["positives_left_out"] == 1
    assert result["counts"]["skipped_videos"] == 1 and result["counts"]["skipped_texts"] == 1


def test_evaluate_corpus_names_a_bad_positive_video_ids_column(tiny_model):
    from s2ca_hf.retrieval.evaluation import evaluate_corpus

    root, model, processor = tiny_model
    without_column, _ = tiny_split(root)
    with pytest.raises(ValueError, match="`multi_positive=True` needs a `positive_video_ids` column"):
        evaluate_corpus(model, processor, without_column, progress=False, multi_positive=True)
    own_missing = positive_ids_of(TEXT_POSITIVES)
    own_missing[4] = ["clip1"]
    dataset, _ = tiny_split(root, own_missing)
    with pytest.raises(ValueError, match=r"Row 4's `positive_video_ids` \['clip1'\] does not list its own video"):
        evaluate_corpus(model, processor, dataset, progress=False)
    unknown = positive_ids_of(TEXT_POSITIVES)
    unknown[3] = ["clip3", "clip9"]
    dataset, _ = tiny_split(root, unknown)
    with pytest.raises(ValueError, match=r"Row 3's `positive_video_ids` lists \['clip9'\], which are no videos"):
        evaluate_corpus(model, processor, dataset, progress=False)
    evaluate_corpus(model, processor, dataset, progress=False, multi_positive=False)  # ignored: no check


def test_evaluate_corpus_reports_the_reranked_two_stage_search(tiny_model):
    from s2ca_hf import S2CAModel
    from s2ca_hf.retrieval.evaluation import encode_text_tokens, evaluate_corpus, reranked_scores
    from s2ca_hf.tiny import tiny_config

    root, _, processor = tiny_model
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(processor.tokenizer), allocation="expert_choice", late_interaction_weight=1.0)
    model = S2CAModel(config).eval()
    dataset, paths = tiny_split(root, positive_ids_of(TEXT_POSITIVES))
    texts = list(dataset["text"])
    phi, psi = direct_features(model, processor, texts, paths)
    features, weights = encode_text_tokens(model, processor, texts)
    with torch.no_grad():
        encoded = model.encode_text(**{k: v for k, v in processor(text=texts, return_tensors="pt").items()})
        late = model.late_interaction_scores(encoded.concepts, psi)
    # Every video a candidate: the order is that of first stage + late interaction.
    everything = reranked_scores(phi @ psi.t(), model.video_concepts_from_embeds(psi), features, weights, psi.shape[0])
    assert torch.equal(
        everything.argsort(dim=1, descending=True), (phi @ psi.t() + late).argsort(dim=1, descending=True)
    )
    # Two candidates: only each text's first-stage top 2 move, and they stay on top.
    two = reranked_scores(phi @ psi.t(), model.video_concepts_from_embeds(psi), features, weights, 2)
    top2 = (phi @ psi.t()).topk(2, dim=1).indices
    assert torch.equal(two.topk(2, dim=1).indices.sort(dim=1).values, top2.sort(dim=1).values)
    result = evaluate_corpus(model, processor, dataset, batch_size=2, progress=False, rerank_candidates=2)
    expected = retrieval_metrics(two, TEXT_VIDEOS, positives=TEXT_POSITIVES)["text_to_video"]
    assert result["metrics"]["text_to_video_reranked"] == pytest.approx(expected)
    plain = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), late_interaction_weight=0.0)).eval()
    plain = evaluate_corpus(plain, processor, dataset, batch_size=2, progress=False)
    assert "text_to_video_reranked" not in plain["metrics"]  # no re-ranker, no second stage
    baseline = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), use_concepts=False)).eval()
    baseline.config.late_interaction_weight = 0.5  # a weight without concepts gives no re-ranker either
    baseline = evaluate_corpus(baseline, processor, dataset, batch_size=2, progress=False)
    assert "text_to_video_reranked" not in baseline["metrics"]
