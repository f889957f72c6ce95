"""The corpus loaders against the fixtures' expected.json (the protocols of docs/datasets.md), and their errors."""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from s2ca_hf.data import (
    CorpusFormatError,
    MissingVideosError,
    corpus_info,
    corpus_videos,
    load_corpus,
    msvd_youtube_id,
    reindex_videos,
)


FIXTURES = Path(__file__).parent / "fixtures"


def expected(corpus: str) -> dict:
    return json.loads((FIXTURES / corpus / "expected.json").read_text())


def touch(folder: Path, names) -> Path:
    """Empty placeholder files: the loaders only look videos up, decoding is tested elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def copy_fixture(corpus: str, tmp_path: Path) -> Path:
    target = tmp_path / corpus
    shutil.copytree(FIXTURES / corpus, target)
    return target


# --- MSR-VTT ---------------------------------------------------------------------------------------------------


@pytest.fixture
def msrvtt_videos(tmp_path):
    return touch(tmp_path / "videos", [f"video{i}.mp4" for i in range(9)])


def test_msrvtt_train_9k_and_7k_pairs(msrvtt_videos):
    exp = expected("msrvtt")
    for name, key in (("9k", "train_9k"), ("7k", "train_7k")):
        ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "train", video_dir=msrvtt_videos, train_csv=name)
        assert len(ds) == exp[key]["pairs_expand_msrvtt_sentences"]
        assert len(set(ds["video_id"])) == exp[key]["videos"]
        assert len(corpus_videos(ds)) == exp[key]["videos"]
    # 9k: the 6 listed videos, every caption in json order (gotcha 2: the json's test captions are filtered out).
    ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "train", video_dir=msrvtt_videos)
    data = json.loads((FIXTURES / "msrvtt" / "MSRVTT_data.json").read_text())
    listed = [f"video{i}" for i in range(6)]
    assert ds["text"] == [s["caption"] for s in data["sentences"] if s["video_id"] in listed]
    assert ds["video_index"] == [int(v[5:]) for v in ds["video_id"]]
    # the within-video duplicate caption stays a separate sample (gotcha 5)
    assert ds["text"][:20].count("a man is cooking pasta") == 2
    assert ds["start"] == [None] * len(ds) and ds["end"] == [None] * len(ds)
    assert ds[0]["video_path"] == str(msrvtt_videos / "video0.mp4")


def test_msrvtt_train_without_sentence_expansion(msrvtt_videos):
    exp = expected("msrvtt")
    ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "train", video_dir=msrvtt_videos, expand_sentences=False)
    assert len(ds) == exp["train_9k"]["samples_per_epoch_without_expand"]
    assert ds["video_index"] == list(range(6))
    assert [len(c) for c in ds["captions"]] == [exp["captions_per_video"]] * 6
    assert ds["text"][0] == ds["captions"][0][0] == "a man is cooking pasta"


def test_msrvtt_test_is_one_sentence_per_csv_row(msrvtt_videos):
    exp = expected("msrvtt")
    for split in ("test", "val"):
        ds = load_corpus("msrvtt", FIXTURES / "msrvtt", split, video_dir=msrvtt_videos)
        assert len(ds) == exp["test_1kA"]["queries"]
        assert ds["video_id"] == ["video6", "video7", "video8"]
        assert ds["text"] == [
            "a news anchor is reading the news",
            "a man is playing a video game",
            "a man is playing a video game",  # the duplicate query text stays (gotcha 5)
        ]
        assert ds["video_index"] == [0, 1, 2]
        assert len(corpus_videos(ds)) == exp["test_1kA"]["videos"]
    assert corpus_info(ds) == {"corpus": "msrvtt", "split": "val", "protocol": {}, "missing_videos": []}


def test_msrvtt_webm_fallback(tmp_path):
    videos = touch(tmp_path / "v", ["video6.mp4", "video6.webm", "video7.webm", "sub/video8.mkv"])
    ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "test", video_dir=videos)
    assert [os.path.relpath(p, videos) for p in ds["video_path"]] == ["video6.mp4", "video7.webm", "sub/video8.mkv"]


def test_videos_are_found_recursively_under_data_dir(tmp_path):
    data_dir = copy_fixture("msrvtt", tmp_path)
    touch(data_dir / "MSRVTT" / "videos" / "all", [f"video{i}.mp4" for i in range(6, 9)])
    ds = load_corpus("msrvtt", data_dir, "test")
    assert ds["video_path"][0] == str(data_dir / "MSRVTT" / "videos" / "all" / "video6.mp4")


# --- MSVD ------------------------------------------------------------------------------------------------------


@pytest.fixture
def msvd_videos(tmp_path):
    ids = []
    for split in ("train", "val", "test"):
        ids += (FIXTURES / "msvd" / f"{split}_list.txt").read_text().split()
    return touch(tmp_path / "YouTubeClips", [f"{i}.avi" for i in ids])


@pytest.mark.parametrize("caption_file", ["raw-captions.pkl", "captions_msvd.json"])
def test_msvd_every_caption_in_list_order(msvd_videos, caption_file):
    exp = expected("msvd")
    for split in ("train", "val", "test"):
        ds = load_corpus("msvd", FIXTURES / "msvd", split, video_dir=msvd_videos, caption_file=caption_file)
        assert len(ds) == exp[split].get("pairs", exp[split].get("sentence_num"))
        assert len(corpus_videos(ds)) == exp[split]["videos"]
        listed = (FIXTURES / "msvd" / f"{split}_list.txt").read_text().split()
        assert corpus_videos(ds)["video_id"] == listed
        if "cut_off_points" in exp[split]:
            # cumulative caption counts: the rows of each video are contiguous, in list order (gotcha 7)
            counts = [ds["video_index"].count(i) for i in range(len(listed))]
            assert [sum(counts[: i + 1]) for i in range(len(counts))] == exp[split]["cut_off_points"]
            assert ds["video_index"] == sorted(ds["video_index"])
    test = load_corpus("msvd", FIXTURES / "msvd", "test", video_dir=msvd_videos, caption_file=caption_file)
    assert test[0]["text"] == exp["first_test_caption_text"]
    assert max(test["video_index"].count(i) for i in range(3)) == exp["test"]["reshaped_sim_tensor_shape"][1]
    # the duplicate caption of the last test video is kept (gotcha 5)
    last = [t for t, v in zip(test["text"], test["video_index"]) if v == 2]
    assert last.count("a man is lifting weights") == 2


def test_msvd_any_extension_and_youtube_ids_with_underscores(tmp_path):
    ids = (FIXTURES / "msvd" / "val_list.txt").read_text().split()
    videos = touch(tmp_path / "v", [f"{ids[0]}.mp4", f"{ids[1]}.webm"])
    ds = load_corpus("msvd", FIXTURES / "msvd", "val", video_dir=videos)
    assert corpus_videos(ds)["video_path"] == [str(videos / f"{ids[0]}.mp4"), str(videos / f"{ids[1]}.webm")]
    assert msvd_youtube_id("bQJQGoJF7_k_162_169") == ("bQJQGoJF7_k", 162.0, 169.0)
    assert msvd_youtube_id("_a1b2c3d4e5_2_4") == ("_a1b2c3d4e5", 2.0, 4.0)


class _Exploit:
    """Unpickling this object would create a file: a restricted unpickler must refuse it unconstructed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_msvd_malicious_pickle_is_refused_without_running(tmp_path, msvd_videos):
    data_dir = copy_fixture("msvd", tmp_path)
    marker = tmp_path / "pwned"
    captions = pickle.loads((data_dir / "raw-captions.pkl").read_bytes())
    captions["-aBcDeFgHiJ_5_15"].append(_Exploit(str(marker)))
    (data_dir / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    # the payload is live: an unrestricted unpickler does create the file
    pickle.loads(pickle.dumps(_Exploit(str(tmp_path / "control"))))
    assert (tmp_path / "control").exists()
    with pytest.raises(CorpusFormatError, match=r"raw-captions\.pkl.*refusing to load io\.open"):
        load_corpus("msvd", data_dir, "train", video_dir=msvd_videos)
    assert not marker.exists()


def test_msvd_errors_name_the_file(tmp_path, msvd_videos):
    data_dir = copy_fixture("msvd", tmp_path)
    (data_dir / "raw-captions.pkl").unlink()
    with pytest.raises(CorpusFormatError, match=r"raw-captions\.pkl: file not found.*captions_msvd\.json"):
        load_corpus("msvd", data_dir, "train", video_dir=msvd_videos)
    # an id in the list with no captions
    (data_dir / "val_list.txt").write_text("mNoPqRsTuVw_12_19\nno_captions_1_2\n")
    with pytest.raises(
        CorpusFormatError, match=r"val_list\.txt: 1 listed video\(s\) have no caption.*no_captions_1_2"
    ):
        load_corpus("msvd", data_dir, "val", video_dir=msvd_videos, caption_file="captions_msvd.json")
    # captions that are neither strings nor token lists
    (data_dir / "bad.json").write_text(json.dumps({"mNoPqRsTuVw_12_19": [{"text": "x"}]}))
    (data_dir / "val_list.txt").write_text("mNoPqRsTuVw_12_19\n")
    with pytest.raises(CorpusFormatError, match=r"bad\.json: a caption of 'mNoPqRsTuVw_12_19'"):
        load_corpus("msvd", data_dir, "val", video_dir=msvd_videos, caption_file="bad.json")


# --- DiDeMo ----------------------------------------------------------------------------------------------------


def didemo_names(split: str) -> list[str]:
    return (FIXTURES / "didemo" / f"{split}_list.txt").read_text().split()


@pytest.mark.parametrize(
    ("layout", "to_file"),
    [
        ("original extension (CLIP4Clip, Flickr)", lambda name: name),
        (".mp4 appended (AWS)", lambda name: name + ".mp4"),
        ("extension replaced (HBI, DiCoSA)", lambda name: name.rpartition(".")[0] + ".mp4"),
    ],
)
def test_didemo_paragraphs_and_windows(tmp_path, layout, to_file):
    exp = expected("didemo")
    for split in ("train", "val", "test"):
        videos = touch(tmp_path / split, [to_file(name) for name in didemo_names(split)])
        ds = load_corpus("didemo", FIXTURES / "didemo", split, video_dir=videos)
        assert len(ds) == exp[split]["pairs_if_all_videos_on_disk"]
        assert dict(zip(ds["video_id"], ds["text"])) == exp[split]["paragraphs"]
        assert list(ds["video_id"]) == list(exp[split]["paragraphs"])  # json order
        assert ds["video_index"] == list(range(len(ds)))
        assert set(ds["video_id"]).isdisjoint(exp[split]["ignored_json_videos"])
        assert [[s, e] for s, e in zip(ds["start"], ds["end"])] == [exp["clip_window_seconds"]] * len(ds)
        assert [os.path.basename(p) for p in ds["video_path"]] == [to_file(v) for v in ds["video_id"]]


def test_didemo_explicit_name_rule_and_sentences(tmp_path):
    names = didemo_names("val")
    videos = touch(tmp_path / "v", [name + ".mp4" for name in names])
    with pytest.raises(MissingVideosError, match="2 of the 2 videos"):
        load_corpus("didemo", FIXTURES / "didemo", "val", video_dir=videos, video_names="original")
    ds = load_corpus("didemo", FIXTURES / "didemo", "val", video_dir=videos, video_names="mp4")
    assert len(ds) == 2
    # one row per description with its moment window: mean(times[:, 0]) * 5, (mean(times[:, 1]) + 1) * 5
    sentences = load_corpus("didemo", FIXTURES / "didemo", "val", video_dir=videos, paragraphs=False)
    records = json.loads((FIXTURES / "didemo" / "val_data.json").read_text())
    assert sentences["text"] == [r["description"] for r in records]
    first = records[0]["times"]
    assert sentences[0]["start"] == pytest.approx(sum(t[0] for t in first) / len(first) * 5)
    assert sentences[0]["end"] == pytest.approx((sum(t[1] for t in first) / len(first) + 1) * 5)
    assert sentences["video_index"] == [0, 0, 1, 1, 1]


def test_didemo_json_missing_a_key(tmp_path):
    data_dir = copy_fixture("didemo", tmp_path)
    records = json.loads((data_dir / "val_data.json").read_text())
    del records[2]["description"]
    (data_dir / "val_data.json").write_text(json.dumps(records))
    videos = touch(tmp_path / "v", didemo_names("val"))
    with pytest.raises(CorpusFormatError, match=r"val_data\.json: record 2 has no key 'description'"):
        load_corpus("didemo", data_dir, "val", video_dir=videos)
    (data_dir / "val_data.json").write_text("{not json")
    with pytest.raises(CorpusFormatError, match=r"val_data\.json: not valid JSON"):
        load_corpus("didemo", data_dir, "val", video_dir=videos)


# --- ActivityNet -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem_key", ["video_file_stem_clip4clip", "video_file_stem_hbi_dicosa"])
def test_activitynet_paragraphs_windows_and_order(tmp_path, stem_key):
    exp = expected("activitynet")
    for split in ("train", "val"):
        records = exp[split]["records"]
        videos = touch(tmp_path / split, [rec[stem_key] + ".mp4" for rec in records.values()])
        ds = load_corpus("activitynet", FIXTURES / "activitynet", split, video_dir=videos)
        assert len(ds) == exp[split]["pairs_if_all_videos_on_disk"]
        assert ds["video_id"] == list(records)  # the *_ids.json order; ids without captions skipped
        assert ds["text"] == [rec["paragraph"] for rec in records.values()]
        assert ds["start"] == [rec["start"] for rec in records.values()]
        assert ds["end"] == [rec["end"] for rec in records.values()]
        assert ds["video_index"] == list(range(len(ds)))
        assert [os.path.basename(p) for p in ds["video_path"]] == [r[stem_key] + ".mp4" for r in records.values()]
    test = load_corpus("activitynet", FIXTURES / "activitynet", "test", video_dir=videos)
    assert test["text"] == ds["text"]  # the test set is val_1 (gotcha 13)


def test_activitynet_sentences_and_ce_lists(tmp_path):
    exp = expected("activitynet")["train"]["records"]
    videos = touch(tmp_path / "v", [rec["video_file_stem_clip4clip"] + ".mkv" for rec in exp.values()])
    sentences = load_corpus("activitynet", FIXTURES / "activitynet", "train", video_dir=videos, paragraphs=False)
    annotations = json.loads((FIXTURES / "activitynet" / "train.json").read_text())
    assert len(sentences) == sum(len(a["sentences"]) for a in annotations.values())
    assert sentences[1]["text"] == " She starts dancing."
    assert [sentences[1]["start"], sentences[1]["end"]] == annotations["v_AAAAAAAAAA1"]["timestamps"][1]
    listed = load_corpus("activitynet", FIXTURES / "activitynet", "train", video_dir=videos, ids_file="train_list.txt")
    assert listed["video_id"] == list(exp)


# --- missing videos and malformed files --------------------------------------------------------------------------


def test_missing_test_videos_stop_loading_unless_allowed(tmp_path, caplog):
    videos = touch(tmp_path / "v", ["video6.mp4", "video8.mp4"])
    with pytest.raises(MissingVideosError, match=r"1 of the 3 videos of msrvtt test are missing .*\(video7\)") as info:
        load_corpus("msrvtt", FIXTURES / "msrvtt", "test", video_dir=videos)
    assert info.value.missing == ["video7"]
    ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "test", video_dir=videos, allow_missing=True)
    assert ds["video_id"] == ["video6", "video8"]
    assert ds["video_index"] == [0, 1]  # renumbered over the videos that exist
    assert corpus_info(ds)["missing_videos"] == ["video7"]
    assert "video7" in caplog.text


def test_missing_train_videos_are_dropped_with_a_warning(tmp_path, caplog):
    videos = touch(tmp_path / "v", [f"video{i}.mp4" for i in (0, 2, 3, 4)])
    ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "train", video_dir=videos)
    assert sorted(set(ds["video_id"])) == ["video0", "video2", "video3", "video4"]
    assert len(ds) == 80
    assert sorted(set(ds["video_index"])) == [0, 1, 2, 3]
    assert "2 of 6 videos are missing" in caplog.text and "video1, video5" in caplog.text


@pytest.mark.parametrize("separator", [";", "\t"])
def test_wrong_csv_separator(tmp_path, msrvtt_videos, separator):
    data_dir = copy_fixture("msrvtt", tmp_path)
    path = data_dir / "MSRVTT_JSFUSION_test.csv"
    path.write_text(path.read_text().replace(",", separator))
    with pytest.raises(CorpusFormatError, match=r"MSRVTT_JSFUSION_test\.csv: the header .* is separated by"):
        load_corpus("msrvtt", data_dir, "test", video_dir=msrvtt_videos)


def test_wrong_csv_columns_and_missing_files(tmp_path, msrvtt_videos):
    data_dir = copy_fixture("msrvtt", tmp_path)
    (data_dir / "MSRVTT_JSFUSION_test.csv").write_text("key,video,sentence\nret0,video6,a caption\n")
    with pytest.raises(CorpusFormatError, match=r"JSFUSION_test\.csv: missing column\(s\) video_id"):
        load_corpus("msrvtt", data_dir, "test", video_dir=msrvtt_videos)
    (data_dir / "MSRVTT_train.7k.csv").unlink()
    with pytest.raises(CorpusFormatError, match=r"MSRVTT_train\.7k\.csv: file not found"):
        load_corpus("msrvtt", data_dir, "train", video_dir=msrvtt_videos, train_csv="7k")
    with pytest.raises(CorpusFormatError, match="the data folder does not exist"):
        load_corpus("msrvtt", tmp_path / "nowhere", "test")


def test_msrvtt_json_missing_a_key_and_csv_video_without_captions(tmp_path, msrvtt_videos):
    data_dir = copy_fixture("msrvtt", tmp_path)
    data = json.loads((data_dir / "MSRVTT_data.json").read_text())
    del data["sentences"][5]["caption"]
    (data_dir / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(CorpusFormatError, match=r"MSRVTT_data\.json: sentences\[5\] has no key 'caption'"):
        load_corpus("msrvtt", data_dir, "train", video_dir=msrvtt_videos)
    (data_dir / "MSRVTT_data.json").write_text(json.dumps({"videos": []}))
    with pytest.raises(CorpusFormatError, match=r"the top-level object has no key 'sentences'"):
        load_corpus("msrvtt", data_dir, "train", video_dir=msrvtt_videos)
    data = json.loads((FIXTURES / "msrvtt" / "MSRVTT_data.json").read_text())
    (data_dir / "MSRVTT_data.json").write_text(json.dumps(data))
    (data_dir / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo99\n")
    with pytest.raises(
        CorpusFormatError, match=r"MSRVTT_train\.9k\.csv: 1 listed video\(s\) have no caption.*video99"
    ):
        load_corpus("msrvtt", data_dir, "train", video_dir=msrvtt_videos)


def test_unknown_corpus_split_and_option(msrvtt_videos):
    with pytest.raises(ValueError, match="Unknown corpus 'lsmdc'"):
        load_corpus("lsmdc", FIXTURES / "msrvtt", "test")
    with pytest.raises(ValueError, match="MSR-VTT has the splits"):
        load_corpus("msrvtt", FIXTURES / "msrvtt", "validate", video_dir=msrvtt_videos)
    with pytest.raises(TypeError, match="train_csvs"):
        load_corpus("msrvtt", FIXTURES / "msrvtt", "train", video_dir=msrvtt_videos, train_csvs="9k")


def test_reindex_after_filtering(msrvtt_videos):
    ds = load_corpus("msrvtt", FIXTURES / "msrvtt", "train", video_dir=msrvtt_videos)
    kept = ds.filter(lambda row: row["video_id"] not in ("video0", "video3"))
    with pytest.raises(ValueError, match="reindex_videos"):
        corpus_videos(kept)
    renumbered = reindex_videos(kept)
    assert corpus_videos(renumbered)["video_id"] == ["video1", "video2", "video4", "video5"]
    assert sorted(set(renumbered["video_index"])) == [0, 1, 2, 3]
