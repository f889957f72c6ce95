"""The corpora of short captioned clips: MSR-VTT (and the built-in synthetic corpus, written in MSR-VTT's layout)
and MSVD, read as CLIP4Clip reads them, one row per caption (or per video, for MSR-VTT training without sentence
expansion). Each `*_pairs(data_dir, split, **options)` returns the (text, video) pairs and the function that finds a
video's file; `corpora.load_corpus` does the rest."""

import os
from collections.abc import Callable

from .annotation_files import (
    CorpusFormatError,
    CorpusPair,
    VideoFiles,
    caption_text,
    json_field,
    read_caption_pickle,
    read_csv,
    read_json,
    read_lines,
)


TRAIN_CSVS = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}


def msrvtt_pairs(
    data_dir: str,
    split: str,
    train_csv: str = "9k",
    test_csv: str = "MSRVTT_JSFUSION_test.csv",
    expand_sentences: bool = True,
    data_json: str = "MSRVTT_data.json",
) -> tuple[list[CorpusPair], Callable]:
    """MSR-VTT. Train: the captions in `data_json` of the videos of the `train_csv` list ("9k", "7k" or a file
    name), in json order, one row per caption with `expand_sentences` (CLIP4Clip's `--expand_msrvtt_sentences`), or
    one row per video (its first caption as `text`, all of them in a `captions` column to draw from per epoch).
    Test (alias val, as CLIP4Clip evaluates on its `--val_csv`): one row per line of the 1k-A `test_csv`."""
    if split == "train":
        csv_path = os.path.join(data_dir, TRAIN_CSVS.get(train_csv, train_csv))
        video_ids = list(dict.fromkeys(row["video_id"] for row in read_csv(csv_path, ("video_id",))))
        json_path = os.path.join(data_dir, data_json)
        data = read_json(json_path)
        sentences = json_field(data, "sentences", json_path, "the top-level object")
        if not isinstance(sentences, list):
            raise CorpusFormatError(json_path, "'sentences' is not a list")
        wanted = set(video_ids)
        captions: dict[str, list[str]] = {}
        order = []  # the json order of the (video, caption) pairs, as CLIP4Clip enumerates them
        for position, sentence in enumerate(sentences):
            where = f"sentences[{position}]"
            video_id = json_field(sentence, "video_id", json_path, where)
            caption = json_field(sentence, "caption", json_path, where)
            if video_id in wanted:
                captions.setdefault(video_id, []).append(caption)
                order.append((video_id, caption))
        without = [video_id for video_id in video_ids if video_id not in captions]
        if without:
            raise CorpusFormatError(
                csv_path, f"{len(without)} listed video(s) have no caption in {json_path}: {', '.join(without[:10])}"
            )
        if expand_sentences:
            return [CorpusPair(video_id, caption) for video_id, caption in order], msrvtt_file
        return [CorpusPair(v, captions[v][0], captions=captions[v]) for v in video_ids], msrvtt_file
    if split in ("test", "val"):
        rows = read_csv(os.path.join(data_dir, test_csv), ("video_id", "sentence"))
        return [CorpusPair(row["video_id"], row["sentence"]) for row in rows], msrvtt_file
    raise ValueError(f"MSR-VTT has the splits 'train' and 'test' (alias 'val'), got {split!r}.")


def msrvtt_file(index: VideoFiles, video_id: str) -> str | None:
    # CLIP4Clip reads {id}.mp4 and falls back to {id}.webm; any other video extension is accepted after those.
    return index.find(names=(f"{video_id}.mp4", f"{video_id}.webm"), stems=(video_id,))


def msvd_pairs(data_dir: str, split: str, caption_file: str = "raw-captions.pkl") -> tuple[list[CorpusPair], Callable]:
    """MSVD. Every caption of every video of `{split}_list.txt`, video by video in list order, duplicates kept.
    `caption_file`: CLIP4Clip's `raw-captions.pkl` (token lists, read with a restricted unpickler) or X-Pool's
    `captions_msvd.json` (strings)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"MSVD has the splits 'train', 'val' and 'test', got {split!r}.")
    list_path = os.path.join(data_dir, f"{split}_list.txt")
    video_ids = read_lines(list_path)
    caption_path = os.path.join(data_dir, caption_file)
    if caption_file.endswith(".pkl"):
        captions = read_caption_pickle(caption_path)
    else:
        captions = read_json(caption_path)
    if not isinstance(captions, dict):
        raise CorpusFormatError(caption_path, f"expected a dict video_id -> captions, got a {type(captions).__name__}")
    pairs, without = [], []
    for video_id in video_ids:
        video_captions = captions.get(video_id)
        if not video_captions:
            without.append(video_id)
            continue
        if not isinstance(video_captions, (list, tuple)):
            raise CorpusFormatError(caption_path, f"the captions of {video_id!r} are not a list")
        pairs.extend(CorpusPair(video_id, caption_text(c, caption_path, video_id)) for c in video_captions)
    if without:
        raise CorpusFormatError(
            list_path, f"{len(without)} listed video(s) have no caption in {caption_path}: {', '.join(without[:10])}"
        )
    return pairs, msvd_file


def msvd_file(index: VideoFiles, video_id: str) -> str | None:
    # CLIP4Clip takes a file's name minus its last extension as the id, so any extension works; X-Pool uses .avi.
    return index.find(names=(f"{video_id}.avi",), stems=(video_id,))


def msvd_youtube_id(video_id: str) -> tuple[str, float, float]:
    """`"bQJQGoJF7_k_162_169"` -> `("bQJQGoJF7_k", 162.0, 169.0)`: the YouTube id and the clip's seconds in it.
    YouTube ids contain `_`, so the id is split from the right."""
    youtube_id, start, end = video_id.rsplit("_", 2)
    return youtube_id, float(start), float(end)


def synthetic_pairs(data_dir: str, split: str, **options) -> tuple[list[CorpusPair], Callable]:
    """The built-in concept-video corpus (`s2ca_hf.data.synthetic`), generated into `data_dir` on first use. Splits:
    `"train"` (each caption row with its `group`, its `positive_video_ids`, its foil and what the foil is true of),
    `"val"`, `"test"`, `"compositional"` (clips whose (colour,
    shape, motion) combinations never occur in training) and `"open_vocab"` (colours and shapes only the pretraining
    stills show), one caption each with its `positive_video_ids` and `query_type`; and `"frames"` (the captioned
    stills, for pretraining a small CLIP: there `video_path` is an image). `expand_sentences` applies to `"train"`."""
    from .synthetic import EVAL_CSVS, FRAMES_JSON, ensure_synthetic_corpus, load_clip_records

    arguments = ("num_videos", "seed", "val_size", "test_size", "compositional_size", "open_vocab_size")
    arguments += ("num_stills", "size", "num_frames", "fps", "captions_per_video")
    generate = {key: options.pop(key) for key in arguments if key in options}
    ensure_synthetic_corpus(data_dir, **generate)
    if split == "frames":
        if options:
            raise TypeError(f"The synthetic 'frames' split takes no option, got {sorted(options)}.")
        path = os.path.join(data_dir, FRAMES_JSON)
        records = read_json(path)
        pairs = [
            CorpusPair(json_field(r, "image", path, f"entry {i}"), json_field(r, "caption", path, f"entry {i}"))
            for i, r in enumerate(records)
        ]
        return pairs, lambda index, name: index.find(names=(name,))
    records = load_clip_records(data_dir)
    if split == "train":
        pairs, find = msrvtt_pairs(data_dir, split, **options)
        position: dict[str, int] = {}  # rows come in json order: a clip's captions one after the other
        for pair in pairs:
            record = records[pair.video_id]
            pair.extra = {"group": record["group"]}
            if pair.captions is None:  # one row per caption: its answers, its foil and what the foil is true of
                caption = record["captions"][position.setdefault(pair.video_id, 0)]
                position[pair.video_id] += 1
                pair.extra["positive_video_ids"] = caption["positives"]
                pair.extra["foils"] = [] if caption["foil"] is None else [caption["foil"]]
                pair.extra["foil_positive_video_ids"] = [] if caption["foil"] is None else [caption["foil_positives"]]
        return pairs, find
    if split not in EVAL_CSVS:
        raise ValueError(
            f"The synthetic corpus has the splits train, {', '.join(EVAL_CSVS)} and frames; got {split!r}."
        )
    pairs, find = msrvtt_pairs(data_dir, "test", test_csv=EVAL_CSVS[split], **options)
    for pair in pairs:
        record = records[pair.video_id]
        pair.extra = {"positive_video_ids": record["positives"], "query_type": record["query_type"]}
    return pairs, find
