"""The corpora of long videos described by paragraphs, one row per video with its clip window (CLIP4Clip's
paragraph-to-video protocol; one row per moment or sentence on request): DiDeMo and ActivityNet Captions. Each
`*_pairs(data_dir, split, **options)` returns the (text, video) pairs and the function that finds a video's file;
`corpora.load_corpus` does the rest."""

import logging
import math
import os
from collections.abc import Callable

from .annotation_files import CorpusFormatError, CorpusPair, VideoFiles, file_stem, json_field, read_json, read_lines


logger = logging.getLogger(__name__)

DIDEMO_VIDEO_NAMES = ("auto", "original", "mp4", "stem")


def didemo_pairs(
    data_dir: str, split: str, paragraphs: bool = True, video_names: str = "auto"
) -> tuple[list[CorpusPair], Callable]:
    """DiDeMo. With `paragraphs` (CLIP4Clip): one row per video of `{split}_list.txt` that `{split}_data.json`
    describes, in json order, its descriptions joined with a space in json order, window `[0, 31]` s. Without:
    one row per description with its moment window, `mean(times[:, 0]) * 5` to `(mean(times[:, 1]) + 1) * 5`
    (a different task from the benchmark's). `video_names`: how files are named on disk: `"original"` (the id,
    original extension included: CLIP4Clip, the Flickr downloader), `"mp4"` (`<id>.mp4`: the AWS downloader),
    `"stem"` (the id without its extension plus any video extension: HBI, DiCoSA), or `"auto"` (each in turn)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"DiDeMo has the splits 'train', 'val' and 'test', got {split!r}.")
    if video_names not in DIDEMO_VIDEO_NAMES:
        raise ValueError(f"`video_names` must be one of {DIDEMO_VIDEO_NAMES}, got {video_names!r}.")
    list_path = os.path.join(data_dir, f"{split}_list.txt")
    video_ids = read_lines(list_path)
    json_path = os.path.join(data_dir, f"{split}_data.json")
    records = read_json(json_path)
    if not isinstance(records, list):
        raise CorpusFormatError(json_path, f"expected a JSON list of moment records, got a {type(records).__name__}")
    listed = set(video_ids)
    descriptions: dict[str, list[str]] = {}
    moments: list[CorpusPair] = []
    for position, record in enumerate(records):
        where = f"record {position}"
        video = json_field(record, "video", json_path, where)
        description = json_field(record, "description", json_path, where)
        if video not in listed:  # the json describes more videos than the split lists: the list is the filter
            continue
        descriptions.setdefault(video, []).append(description)
        if not paragraphs:
            times = json_field(record, "times", json_path, where)
            try:
                start = sum(t[0] for t in times) / len(times) * 5
                end = (sum(t[1] for t in times) / len(times) + 1) * 5
            except (TypeError, IndexError, ZeroDivisionError) as error:
                raise CorpusFormatError(json_path, f"{where} has malformed 'times' {times!r}") from error
            moments.append(CorpusPair(video, description, float(start), float(end)))
    without = [video for video in video_ids if video not in descriptions]
    if without:
        raise CorpusFormatError(
            list_path, f"{len(without)} listed video(s) have no description in {json_path}: {', '.join(without[:10])}"
        )
    # The per-moment times are discarded for paragraphs: CLIP4Clip's window is the whole clip, 0-31 s (videos were
    # truncated to 30 s for annotation).
    pairs = moments if not paragraphs else [CorpusPair(v, " ".join(d), 0.0, 31.0) for v, d in descriptions.items()]

    def files(index: VideoFiles, video_id: str) -> str | None:
        names = {"original": (video_id,), "mp4": (video_id + ".mp4",), "stem": ()}
        stems = (file_stem(video_id),) if video_names in ("stem", "auto") else ()
        if video_names == "auto":
            return index.find(names=(video_id, video_id + ".mp4"), stems=stems)
        return index.find(names=names[video_names], stems=stems)

    return pairs, files


ACTIVITYNET_FILES = {"train": ("train.json", "train_ids.json"), "val": ("val_1.json", "val_ids.json")}


def activitynet_pairs(
    data_dir: str,
    split: str,
    paragraphs: bool = True,
    annotation_file: str | None = None,
    ids_file: str | None = None,
) -> tuple[list[CorpusPair], Callable]:
    """ActivityNet Captions. One row per id of `ids_file` (default `{train,val}_ids.json`; a one-id-per-line
    `.txt` such as CE's `val_1_list.txt` works too), in its order, deduplicated; ids without captions in
    `annotation_file` (default `train.json`, `val_1.json`) are skipped, as CLIP4Clip skips them. With `paragraphs`
    (CLIP4Clip), the sentences joined with a space, window `[0, ceil(duration)]`, timestamps unused; without, one row
    per sentence with its timestamps as the window. Split `"test"` is `"val"` (`val_1`): ActivityNet has no test
    split. Files are `<id>.<ext>` with or without the `v_` prefix (CLIP4Clip strips it, HBI and DiCoSA keep it)."""
    if split == "test":
        split = "val"
    if split not in ACTIVITYNET_FILES:
        raise ValueError(f"ActivityNet has the splits 'train' and 'val' (alias 'test'), got {split!r}.")
    default_annotations, default_ids = ACTIVITYNET_FILES[split]
    json_path = os.path.join(data_dir, annotation_file or default_annotations)
    annotations = read_json(json_path)
    if not isinstance(annotations, dict):
        raise CorpusFormatError(json_path, f"expected a dict id -> annotation, got a {type(annotations).__name__}")
    ids_path = os.path.join(data_dir, ids_file or default_ids)
    if ids_path.endswith(".txt"):
        ids = read_lines(ids_path)
    else:
        ids = read_json(ids_path, hint=f'or name a list with ids_file="{split}_list.txt"')
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CorpusFormatError(ids_path, "expected a JSON list of id strings")
        ids = list(dict.fromkeys(ids))
    pairs, without = [], []
    for pseudo_id in ids:
        if pseudo_id not in annotations:
            without.append(pseudo_id)
            continue
        record = annotations[pseudo_id]
        where = f"the annotation of {pseudo_id!r}"
        sentences = json_field(record, "sentences", json_path, where)
        duration = json_field(record, "duration", json_path, where)
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise CorpusFormatError(json_path, f"{where}: 'sentences' is not a list of strings")
        if not sentences:
            without.append(pseudo_id)
            continue
        if paragraphs:
            # Sentences after the first carry a leading space in the real files; the join keeps it, as CLIP4Clip does
            # (the tokenizer collapses the double space).
            pairs.append(CorpusPair(pseudo_id, " ".join(sentences), 0.0, float(math.ceil(float(duration)))))
        else:
            timestamps = json_field(record, "timestamps", json_path, where)
            if len(timestamps) != len(sentences):
                problem = f"{where}: {len(timestamps)} timestamps for {len(sentences)} sentences"
                raise CorpusFormatError(json_path, problem)
            pairs.extend(CorpusPair(pseudo_id, s, float(t[0]), float(t[1])) for s, t in zip(sentences, timestamps))
    if without:
        # The id lists hold ids without captions (15 in train, 9 in val); skip them.
        logger.info("ActivityNet %s: %d listed id(s) without captions skipped: %s", split, len(without), without[:10])
    return pairs, activitynet_file


def activitynet_file(index: VideoFiles, pseudo_id: str) -> str | None:
    bare = pseudo_id[2:] if pseudo_id.startswith("v_") else pseudo_id
    return index.find(stems=(bare, pseudo_id))
