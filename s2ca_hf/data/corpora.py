"""The text-video corpora as `datasets.Dataset`s, built exactly as CLIP4Clip builds its pairs.

`load_corpus(name, data_dir, split, **protocol)` reads the annotation files the community distributes (MSR-VTT,
MSVD, DiDeMo, ActivityNet Captions; see `docs/DATASETS.md` of the project for the layouts and the protocol) or the
built-in synthetic corpus, and returns one row per (text, video) pair with one schema:

| column | type | meaning |
|---|---|---|
| `video_id` | str | the corpus's id of the video |
| `video_path` | str | the video file found on disk |
| `text` | str | a caption, or the joined paragraph (DiDeMo, ActivityNet) |
| `video_index` | int | the row of this text's video in `corpus_videos(dataset)` (the ground truth in evaluation) |
| `start`, `end` | float or null | the clip window in seconds (DiDeMo `[0, 31]`, ActivityNet `[0, ceil(duration)]`) |

Rows keep CLIP4Clip's order, and the rows of one video are contiguous wherever the evaluation needs it (MSVD, the
single-caption test sets). Duplicate texts stay separate queries, as in CLIP4Clip.

Nothing here is imported by the model files: this package is not pushed to the Hub.
"""

import csv
import io
import json
import logging
import math
import os
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from datasets import Dataset, DatasetInfo, Features, Sequence, Value

from ..utils import walk_once
from ..video_io import VIDEO_EXTENSIONS


logger = logging.getLogger(__name__)

CORPORA = ("msrvtt", "msvd", "didemo", "activitynet", "synthetic")
EVAL_SPLITS = ("val", "test", "compositional")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

FEATURES = Features(
    {
        "video_id": Value("string"),
        "video_path": Value("string"),
        "text": Value("string"),
        "video_index": Value("int64"),
        "start": Value("float64"),
        "end": Value("float64"),
    }
)


class CorpusFormatError(ValueError):
    """An annotation file is missing or malformed. The message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingVideosError(FileNotFoundError):
    """Videos of an evaluation split are not on disk. `missing` lists their ids."""

    def __init__(self, corpus: str, split: str, missing: list[str], total: int, video_dir: str):
        self.missing = missing
        self.total = total
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        super().__init__(
            f"{len(missing)} of the {total} videos of {corpus} {split} are missing from {video_dir} ({shown}). A "
            "smaller test set changes the benchmark: add the files, or pass allow_missing=True to use the rest."
        )


@dataclass
class _Pair:
    video_id: str
    text: str
    start: float | None = None
    end: float | None = None
    captions: list[str] | None = None  # MSR-VTT training without sentence expansion: every caption of the video


# --- reading annotation files, with errors that name the file ----------------------------------------------------


def _require_file(path: str, hint: str = "") -> str:
    if not os.path.isfile(path):
        raise CorpusFormatError(path, "file not found" + (f" ({hint})" if hint else ""))
    return path


def _read_json(path: str, hint: str = ""):
    _require_file(path, hint)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorpusFormatError(path, f"not valid JSON ({error})") from error


def _read_lines(path: str, hint: str = "") -> list[str]:
    """A list file: one entry per line, surrounding whitespace stripped, blank lines skipped, duplicates dropped."""
    _require_file(path, hint)
    with open(path, encoding="utf-8") as f:
        entries = [line.strip() for line in f]
    return list(dict.fromkeys(entry for entry in entries if entry))


def _read_csv(path: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """A comma-separated file with a header row holding at least `columns`."""
    _require_file(path)
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    header = text.splitlines()[0] if text else ""
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    missing = [column for column in columns if column not in fields]
    if missing:
        for separator, name in ((";", "';'"), ("\t", "a tab"), ("|", "'|'")):
            if separator in header and "," not in header:
                raise CorpusFormatError(
                    path,
                    f"the header {header!r} is separated by {name}, but the file must be comma-separated with the "
                    f"columns {', '.join(columns)} (re-save it with ',' as the separator)",
                )
        raise CorpusFormatError(path, f"missing column(s) {', '.join(missing)}; the header is {header!r}")
    rows = []
    for line, row in enumerate(reader, start=2):
        if any(row.get(column) in (None, "") for column in columns):
            raise CorpusFormatError(path, f"line {line} has no value for column(s) {', '.join(columns)}: {row}")
        rows.append(row)
    return rows


def _field(record, key: str, path: str, where: str):
    if not isinstance(record, dict):
        raise CorpusFormatError(path, f"{where} is a {type(record).__name__}, expected a JSON object")
    if key not in record:
        raise CorpusFormatError(path, f"{where} has no key {key!r} (its keys: {sorted(record)})")
    return record[key]


class _CaptionUnpickler(pickle.Unpickler):
    """Reads only plain containers, numbers and strings: any pickled object (a class, a function, `__reduce__`) is
    refused before it is looked up, so a malicious file cannot run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain containers and strings")


def _read_caption_pickle(path: str) -> dict:
    _require_file(path, 'or read the captions_msvd.json captions with caption_file="captions_msvd.json"')
    try:
        with open(path, "rb") as f:
            return _CaptionUnpickler(f, encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise CorpusFormatError(path, f"not a pickle of plain captions ({error})") from error


def _caption_text(caption, path: str, video_id: str) -> str:
    # raw-captions.pkl holds each caption as a list of word tokens (CLIP4Clip joins them with a space);
    # captions_msvd.json holds whole strings.
    if isinstance(caption, str):
        return caption
    if isinstance(caption, (list, tuple)) and all(isinstance(token, str) for token in caption):
        return " ".join(caption)
    raise CorpusFormatError(path, f"a caption of {video_id!r} is {caption!r}, expected a string or a list of tokens")


# --- finding the video files -----------------------------------------------------------------------------------


class _VideoIndex:
    """Every file under a folder, by file name and by name without its last extension (searched once)."""

    def __init__(self, folder: str, extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
        self.folder = folder
        self.by_name: dict[str, str] = {}
        self.by_stem: dict[str, list[str]] = {}
        # Links are followed, each real folder once (a link loop would otherwise list the same files endlessly);
        # sub-folders in sorted order: when a name occurs twice, the first in sorted order wins.
        for root, _subdirs, files in walk_once(folder):
            for name in sorted(files):
                path = os.path.join(root, name)
                self.by_name.setdefault(name, path)
                stem, dot, extension = name.rpartition(".")
                if dot and ("." + extension).lower() in extensions:
                    self.by_stem.setdefault(stem, []).append(path)

    def find(self, names: Iterable[str] = (), stems: Iterable[str] = ()) -> str | None:
        """The first file with one of `names` (exact file names), else the first with one of `stems` and a video
        extension."""
        for name in names:
            if name in self.by_name:
                return self.by_name[name]
        for stem in stems:
            if stem in self.by_stem:
                return self.by_stem[stem][0]
        return None


def _stem(name: str) -> str:
    return name.rpartition(".")[0] if "." in name else name


# --- the corpora -----------------------------------------------------------------------------------------------

TRAIN_CSVS = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}


def _msrvtt(
    data_dir: str,
    split: str,
    train_csv: str = "9k",
    test_csv: str = "MSRVTT_JSFUSION_test.csv",
    expand_sentences: bool = True,
    data_json: str = "MSRVTT_data.json",
) -> tuple[list[_Pair], Callable]:
    """MSR-VTT. Train: the captions in `data_json` of the videos of the `train_csv` list ("9k", "7k" or a file
    name), in json order, one row per caption with `expand_sentences` (CLIP4Clip's `--expand_msrvtt_sentences`), or
    one row per video (its first caption as `text`, all of them in a `captions` column to draw from per epoch).
    Test (alias val, as CLIP4Clip evaluates on its `--val_csv`): one row per line of the 1k-A `test_csv`."""
    if split == "train":
        csv_path = os.path.join(data_dir, TRAIN_CSVS.get(train_csv, train_csv))
        video_ids = list(dict.fromkeys(row["video_id"] for row in _read_csv(csv_path, ("video_id",))))
        json_path = os.path.join(data_dir, data_json)
        data = _read_json(json_path)
        sentences = _field(data, "sentences", json_path, "the top-level object")
        if not isinstance(sentences, list):
            raise CorpusFormatError(json_path, "'sentences' is not a list")
        wanted = set(video_ids)
        captions: dict[str, list[str]] = {}
        order = []  # the json order of the (video, caption) pairs, as CLIP4Clip enumerates them
        for position, sentence in enumerate(sentences):
            where = f"sentences[{position}]"
            video_id = _field(sentence, "video_id", json_path, where)
            caption = _field(sentence, "caption", json_path, where)
            if video_id in wanted:
                captions.setdefault(video_id, []).append(caption)
                order.append((video_id, caption))
        without = [video_id for video_id in video_ids if video_id not in captions]
        if without:
            raise CorpusFormatError(
                csv_path, f"{len(without)} listed video(s) have no caption in {json_path}: {', '.join(without[:10])}"
            )
        if expand_sentences:
            return [_Pair(video_id, caption) for video_id, caption in order], _msrvtt_files
        return [_Pair(v, captions[v][0], captions=captions[v]) for v in video_ids], _msrvtt_files
    if split in ("test", "val"):
        rows = _read_csv(os.path.join(data_dir, test_csv), ("video_id", "sentence"))
        return [_Pair(row["video_id"], row["sentence"]) for row in rows], _msrvtt_files
    raise ValueError(f"MSR-VTT has the splits 'train' and 'test' (alias 'val'), got {split!r}.")


def _msrvtt_files(index: _VideoIndex, video_id: str) -> str | None:
    # CLIP4Clip reads {id}.mp4 and falls back to {id}.webm; any other video extension is accepted after those.
    return index.find(names=(f"{video_id}.mp4", f"{video_id}.webm"), stems=(video_id,))


def _msvd(data_dir: str, split: str, caption_file: str = "raw-captions.pkl") -> tuple[list[_Pair], Callable]:
    """MSVD. Every caption of every video of `{split}_list.txt`, video by video in list order, duplicates kept.
    `caption_file`: CLIP4Clip's `raw-captions.pkl` (token lists, read with a restricted unpickler) or X-Pool's
    `captions_msvd.json` (strings)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"MSVD has the splits 'train', 'val' and 'test', got {split!r}.")
    list_path = os.path.join(data_dir, f"{split}_list.txt")
    video_ids = _read_lines(list_path)
    caption_path = os.path.join(data_dir, caption_file)
    if caption_file.endswith(".pkl"):
        captions = _read_caption_pickle(caption_path)
    else:
        captions = _read_json(caption_path)
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
        pairs.extend(_Pair(video_id, _caption_text(c, caption_path, video_id)) for c in video_captions)
    if without:
        raise CorpusFormatError(
            list_path, f"{len(without)} listed video(s) have no caption in {caption_path}: {', '.join(without[:10])}"
        )
    return pairs, _msvd_files


def _msvd_files(index: _VideoIndex, video_id: str) -> str | None:
    # CLIP4Clip takes a file's name minus its last extension as the id, so any extension works; X-Pool uses .avi.
    return index.find(names=(f"{video_id}.avi",), stems=(video_id,))


def msvd_youtube_id(video_id: str) -> tuple[str, float, float]:
    """`"bQJQGoJF7_k_162_169"` -> `("bQJQGoJF7_k", 162.0, 169.0)`: the YouTube id and the clip's seconds in it.
    YouTube ids contain `_`, so the id is split from the right."""
    youtube_id, start, end = video_id.rsplit("_", 2)
    return youtube_id, float(start), float(end)


DIDEMO_VIDEO_NAMES = ("auto", "original", "mp4", "stem")


def _didemo(
    data_dir: str, split: str, paragraphs: bool = True, video_names: str = "auto"
) -> tuple[list[_Pair], Callable]:
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
    video_ids = _read_lines(list_path)
    json_path = os.path.join(data_dir, f"{split}_data.json")
    records = _read_json(json_path)
    if not isinstance(records, list):
        raise CorpusFormatError(json_path, f"expected a JSON list of moment records, got a {type(records).__name__}")
    listed = set(video_ids)
    descriptions: dict[str, list[str]] = {}
    moments: list[_Pair] = []
    for position, record in enumerate(records):
        where = f"record {position}"
        video = _field(record, "video", json_path, where)
        description = _field(record, "description", json_path, where)
        if video not in listed:  # the json describes more videos than the split lists: the list is the filter
            continue
        descriptions.setdefault(video, []).append(description)
        if not paragraphs:
            times = _field(record, "times", json_path, where)
            try:
                start = sum(t[0] for t in times) / len(times) * 5
                end = (sum(t[1] for t in times) / len(times) + 1) * 5
            except (TypeError, IndexError, ZeroDivisionError) as error:
                raise CorpusFormatError(json_path, f"{where} has malformed 'times' {times!r}") from error
            moments.append(_Pair(video, description, float(start), float(end)))
    without = [video for video in video_ids if video not in descriptions]
    if without:
        raise CorpusFormatError(
            list_path, f"{len(without)} listed video(s) have no description in {json_path}: {', '.join(without[:10])}"
        )
    # The per-moment times are discarded for paragraphs: CLIP4Clip's window is the whole clip, 0-31 s (videos were
    # truncated to 30 s for annotation).
    pairs = moments if not paragraphs else [_Pair(v, " ".join(d), 0.0, 31.0) for v, d in descriptions.items()]

    def files(index: _VideoIndex, video_id: str) -> str | None:
        names = {"original": (video_id,), "mp4": (video_id + ".mp4",), "stem": ()}
        stems = (_stem(video_id),) if video_names in ("stem", "auto") else ()
        if video_names == "auto":
            return index.find(names=(video_id, video_id + ".mp4"), stems=stems)
        return index.find(names=names[video_names], stems=stems)

    return pairs, files


ACTIVITYNET_FILES = {"train": ("train.json", "train_ids.json"), "val": ("val_1.json", "val_ids.json")}


def _activitynet(
    data_dir: str,
    split: str,
    paragraphs: bool = True,
    annotation_file: str | None = None,
    ids_file: str | None = None,
) -> tuple[list[_Pair], Callable]:
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
    annotations = _read_json(json_path)
    if not isinstance(annotations, dict):
        raise CorpusFormatError(json_path, f"expected a dict id -> annotation, got a {type(annotations).__name__}")
    ids_path = os.path.join(data_dir, ids_file or default_ids)
    if ids_path.endswith(".txt"):
        ids = _read_lines(ids_path)
    else:
        ids = _read_json(ids_path, hint=f'or name a list with ids_file="{split}_list.txt"')
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
        sentences = _field(record, "sentences", json_path, where)
        duration = _field(record, "duration", json_path, where)
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise CorpusFormatError(json_path, f"{where}: 'sentences' is not a list of strings")
        if not sentences:
            without.append(pseudo_id)
            continue
        if paragraphs:
            # Sentences after the first carry a leading space in the real files; the join keeps it, as CLIP4Clip does
            # (the tokenizer collapses the double space).
            pairs.append(_Pair(pseudo_id, " ".join(sentences), 0.0, float(math.ceil(float(duration)))))
        else:
            timestamps = _field(record, "timestamps", json_path, where)
            if len(timestamps) != len(sentences):
                problem = f"{where}: {len(timestamps)} timestamps for {len(sentences)} sentences"
                raise CorpusFormatError(json_path, problem)
            pairs.extend(_Pair(pseudo_id, s, float(t[0]), float(t[1])) for s, t in zip(sentences, timestamps))
    if without:
        # Gotcha 13 of DATASETS.md: the id lists hold ids without captions (15 in train, 9 in val); skip them.
        logger.info("ActivityNet %s: %d listed id(s) without captions skipped: %s", split, len(without), without[:10])
    return pairs, _activitynet_files


def _activitynet_files(index: _VideoIndex, pseudo_id: str) -> str | None:
    bare = pseudo_id[2:] if pseudo_id.startswith("v_") else pseudo_id
    return index.find(stems=(bare, pseudo_id))


def _synthetic(data_dir: str, split: str, **options) -> tuple[list[_Pair], Callable]:
    """The built-in concept-video corpus (`s2ca_hf.data.synthetic`), generated into `data_dir` on first use. Splits:
    `"train"`, `"val"` and `"test"` (1k-A style, one caption per video), `"compositional"` (test clips whose
    (colour, shape, motion) combinations never occur in training) and `"frames"` (single images with static captions,
    for pretraining a small CLIP: there `video_path` is an image). `expand_sentences` applies to `"train"`."""
    from .synthetic import COMPOSITIONAL_CSV, FRAMES_JSON, VAL_CSV, ensure_synthetic_corpus

    arguments = ("num_videos", "seed", "val_size", "test_size", "compositional_size", "size", "num_frames", "fps")
    arguments += ("captions_per_video",)
    generate = {key: options.pop(key) for key in arguments if key in options}
    ensure_synthetic_corpus(data_dir, **generate)
    if split == "frames":
        if options:
            raise TypeError(f"The synthetic 'frames' split takes no option, got {sorted(options)}.")
        path = os.path.join(data_dir, FRAMES_JSON)
        records = _read_json(path)
        pairs = [
            _Pair(_field(r, "image", path, f"entry {i}"), _field(r, "caption", path, f"entry {i}"))
            for i, r in enumerate(records)
        ]
        return pairs, lambda index, name: index.find(names=(name,))
    if split in ("val", "compositional"):
        return _msrvtt(data_dir, "test", test_csv=VAL_CSV if split == "val" else COMPOSITIONAL_CSV, **options)
    if split not in ("train", "test"):
        raise ValueError(
            f"The synthetic corpus has the splits train, val, test, compositional and frames; got {split!r}."
        )
    return _msrvtt(data_dir, split, **options)


_BUILDERS = {
    "msrvtt": _msrvtt,
    "msvd": _msvd,
    "didemo": _didemo,
    "activitynet": _activitynet,
    "synthetic": _synthetic,
}


def load_corpus(
    name: str,
    data_dir: str | os.PathLike,
    split: str,
    *,
    video_dir: str | os.PathLike | None = None,
    allow_missing: bool = False,
    **protocol,
) -> Dataset:
    """Loads one split of a corpus as a `datasets.Dataset` of (text, video) pairs in the schema of this module.

    Args:
        name: `"msrvtt"`, `"msvd"`, `"didemo"`, `"activitynet"` or `"synthetic"`.
        data_dir: the folder with the annotation files (for `"synthetic"`: the corpus folder, generated there if
            empty).
        split: `"train"`, `"val"`, `"test"` (corpus-dependent; MSR-VTT's and ActivityNet's test set is their val
            file, as in CLIP4Clip); for `"synthetic"` also `"compositional"` and `"frames"`.
        video_dir: where the video files are (searched recursively); default `data_dir`.
        allow_missing: evaluate on the videos found when some of a val/test split are missing. Training splits
            always drop missing videos, with a warning that names them.
        protocol: the corpus's options, named as in DATASETS.md:
            MSR-VTT `train_csv="9k" | "7k"` (or a csv file name), `expand_sentences=True`, `test_csv`, `data_json`;
            MSVD `caption_file="raw-captions.pkl" | "captions_msvd.json"`;
            DiDeMo `paragraphs=True`, `video_names="auto" | "original" | "mp4" | "stem"`;
            ActivityNet `paragraphs=True`, `annotation_file`, `ids_file`;
            synthetic the MSR-VTT options, and `num_videos`, `seed`, `val_size`, `test_size`,
            `compositional_size`, `size`, `num_frames`, `fps`, `captions_per_video` for its generation (see
            `s2ca_hf.data.synthetic`).

    Raises:
        CorpusFormatError: an annotation file is missing or malformed (named with the problem).
        MissingVideosError: videos of a val/test split are missing and `allow_missing` is False.

    Example:

    ```python
    >>> test = load_corpus("msrvtt", "data/msrvtt", "test", video_dir="data/msrvtt/videos")
    >>> test[0]
    {'video_id': 'video9770', 'video_path': 'data/msrvtt/videos/video9770.mp4',
     'text': 'a person is connecting something to system', 'video_index': 0, 'start': None, 'end': None}
    ```
    """
    if name not in _BUILDERS:
        raise ValueError(f"Unknown corpus {name!r}; the corpora are {CORPORA}.")
    data_dir = os.fspath(data_dir)
    if name != "synthetic" and not os.path.isdir(data_dir):
        raise CorpusFormatError(data_dir, "the data folder does not exist")
    try:
        pairs, find_file = _BUILDERS[name](data_dir, split, **protocol)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise TypeError(f"load_corpus({name!r}): {error}. See load_corpus's docstring for the options.") from error
        raise
    video_dir = os.fspath(video_dir) if video_dir is not None else data_dir
    if not os.path.isdir(video_dir):
        raise FileNotFoundError(f"The video folder {video_dir} does not exist.")
    extensions = IMAGE_EXTENSIONS if name == "synthetic" and split == "frames" else VIDEO_EXTENSIONS
    index = _VideoIndex(video_dir, extensions)

    paths: dict[str, str | None] = {}
    for pair in pairs:
        if pair.video_id not in paths:
            paths[pair.video_id] = find_file(index, pair.video_id)
    missing = [video_id for video_id, path in paths.items() if path is None]
    if missing:
        if split in EVAL_SPLITS and not allow_missing:
            raise MissingVideosError(name, split, missing, len(paths), video_dir)
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        logger.warning(
            "%s %s: %d of %d videos are missing from %s and left out: %s",
            name, split, len(missing), len(paths), video_dir, shown,
        )  # fmt: skip
        pairs = [pair for pair in pairs if paths[pair.video_id] is not None]

    video_index: dict[str, int] = {}
    columns: dict[str, list] = {column: [] for column in FEATURES}
    with_captions = any(pair.captions is not None for pair in pairs)
    if with_captions:
        columns["captions"] = []
    for pair in pairs:
        columns["video_id"].append(pair.video_id)
        columns["video_path"].append(paths[pair.video_id])
        columns["text"].append(pair.text)
        columns["video_index"].append(video_index.setdefault(pair.video_id, len(video_index)))
        columns["start"].append(pair.start)
        columns["end"].append(pair.end)
        if with_captions:
            columns["captions"].append(pair.captions)
    features = Features({**FEATURES, "captions": Sequence(Value("string"))}) if with_captions else FEATURES
    description = json.dumps(
        {"corpus": name, "split": split, "protocol": protocol, "missing_videos": missing}, sort_keys=True, default=str
    )
    info = DatasetInfo(dataset_name=name, config_name=split, description=description, features=features)
    return Dataset.from_dict(columns, info=info)


def corpus_info(dataset: Dataset) -> dict:
    """What `load_corpus` recorded about a dataset: `corpus`, `split`, `protocol`, `missing_videos`."""
    try:
        return json.loads(dataset.info.description or "{}")
    except json.JSONDecodeError:
        return {}


def corpus_videos(dataset: Dataset) -> Dataset:
    """The split's unique videos, one row each, row `i` holding the video of `video_index == i`: columns
    `video_index`, `video_id`, `video_path`, `start`, `end`. The input of the frame cache and of video encoding
    in evaluation."""
    table = dataset.select_columns(["video_index", "video_id", "video_path", "start", "end"]).to_dict()
    rows: dict[int, dict] = {}
    for i, video_index in enumerate(table["video_index"]):
        if video_index not in rows:
            rows[video_index] = {column: values[i] for column, values in table.items()}
    if sorted(rows) != list(range(len(rows))):
        raise ValueError("`video_index` is not 0..V-1: the dataset was filtered; renumber it with reindex_videos().")
    columns = ("video_index", "video_id", "video_path", "start", "end")
    features = Features({column: FEATURES[column] for column in columns})
    info = DatasetInfo(
        dataset_name=dataset.info.dataset_name,
        config_name=dataset.info.config_name,
        description=dataset.info.description,
        features=features,
    )
    return Dataset.from_list([rows[i] for i in range(len(rows))], info=info)


def reindex_videos(dataset: Dataset) -> Dataset:
    """Renumbers `video_index` 0..V-1 in order of first appearance, after rows were filtered out."""
    new_index: dict[int, int] = {}
    for old in dataset["video_index"]:
        new_index.setdefault(old, len(new_index))
    return dataset.map(lambda row: {"video_index": new_index[row["video_index"]]}, desc="Renumbering videos")


__all__ = [
    "CORPORA",
    "FEATURES",
    "CorpusFormatError",
    "MissingVideosError",
    "corpus_info",
    "corpus_videos",
    "load_corpus",
    "msvd_youtube_id",
    "reindex_videos",
]
