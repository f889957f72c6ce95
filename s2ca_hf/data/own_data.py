"""Your own videos and captions as a corpus: a CSV or JSON-lines file, or a `datasets` dataset (local or on the Hub),
with one row per (video, caption) pair, as the HF example scripts take them (`--train_file`, `--dataset_name`,
`--video_column`, `--caption_column`).

    video,caption
    clips/cooking.mp4,a man is cooking pasta
    clips/cooking.mp4,someone stirs a pot
    /data/beach.mp4,a dog runs on a beach

A relative video path is resolved against `video_dir` when given, else against the folder of the file that names it
(a Hub dataset's paths need `video_dir`). A row without a caption, without a video, or whose video file is missing or
not a video is left out, and the rows left out are counted and named in a warning (an error when no row is left).
The result has the schema of every corpus (`load_corpus`): `video_id` (the path as written), `video_path`, `text`,
`video_index` (videos numbered in order of first appearance), `start`, `end` (optional columns in seconds).
"""

import logging
import os

from datasets import Dataset

from ..video_io import VIDEO_EXTENSIONS
from .annotation_files import CorpusFormatError
from .corpora import FEATURES


logger = logging.getLogger(__name__)

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def read_pairs_file(path: str | os.PathLike) -> Dataset:
    """A CSV (`.csv`, `.tsv`), JSON-lines (`.json`, `.jsonl`) or Parquet file as a `datasets.Dataset`."""
    from datasets import load_dataset

    path = os.fspath(path)
    builder = FILE_BUILDERS.get(os.path.splitext(path)[1].lower())
    if builder is None:
        known = ", ".join(FILE_BUILDERS)
        raise CorpusFormatError(path, f"not a CSV, JSON-lines or Parquet file (extensions: {known})")
    if not os.path.isfile(path):
        raise CorpusFormatError(path, "the file does not exist")
    options = {"delimiter": "\t"} if path.lower().endswith(".tsv") else {}
    try:
        return load_dataset(builder, data_files=path, split="train", **options)
    except Exception as error:  # a malformed file: datasets raises its own errors, which do not always name it
        raise CorpusFormatError(path, f"it cannot be read as {builder} ({type(error).__name__}: {error})") from None


def pairs_dataset(
    rows: Dataset,
    *,
    source: str,
    video_column: str = "video",
    caption_column: str = "caption",
    video_dir: str | os.PathLike | None = None,
    base_dir: str | os.PathLike | None = None,
    start_column: str | None = None,
    end_column: str | None = None,
) -> Dataset:
    """`rows` (one per video and caption) as a corpus in the schema of `load_corpus`. `source` names the rows in
    messages (a file, a dataset and split); `base_dir` is where relative paths start when `video_dir` is None."""
    for name, column in (("--video_column", video_column), ("--caption_column", caption_column)):
        if column not in rows.column_names:
            raise CorpusFormatError(source, f"no column {column!r} ({name}); the columns are {rows.column_names}")
    for column in (start_column, end_column):
        if column is not None and column not in rows.column_names:
            raise CorpusFormatError(source, f"no column {column!r}; the columns are {rows.column_names}")
    root = os.fspath(video_dir) if video_dir is not None else (os.fspath(base_dir) if base_dir else None)
    columns: dict[str, list] = {name: [] for name in FEATURES}
    video_index: dict[str, int] = {}
    skipped: dict[str, list[int]] = {}
    for number, row in enumerate(rows):
        video, caption = row[video_column], row[caption_column]
        reason = None
        if not isinstance(caption, str) or not caption.strip():
            reason = f"no {caption_column}"
        elif not isinstance(video, str) or not video.strip():
            reason = f"no {video_column}"
        else:
            path = video if os.path.isabs(video) or root is None else os.path.join(root, video)
            if not video.lower().endswith(VIDEO_EXTENSIONS):
                reason = "not a video file name"
            elif not os.path.isfile(path):
                reason = "video file not found"
        if reason is not None:
            skipped.setdefault(reason, []).append(number)
            continue
        columns["video_id"].append(video)
        columns["video_path"].append(path)
        columns["text"].append(caption.strip())
        columns["video_index"].append(video_index.setdefault(video, len(video_index)))
        columns["start"].append(float(row[start_column]) if start_column and row[start_column] is not None else None)
        columns["end"].append(float(row[end_column]) if end_column and row[end_column] is not None else None)
    if skipped:
        # Row numbers count data rows from 1 (a CSV's header is not a row).
        detail = "; ".join(
            f"{len(numbers)} with {reason} (rows {', '.join(str(n + 1) for n in numbers[:10])}"
            f"{', ...' if len(numbers) > 10 else ''})"
            for reason, numbers in skipped.items()
        )
        total = sum(len(numbers) for numbers in skipped.values())
        if not columns["text"]:
            raise CorpusFormatError(source, f"no usable row: {detail}")
        logger.warning("%s: %d of %d rows left out: %s.", source, total, len(rows), detail)
    return Dataset.from_dict(columns, features=FEATURES)


def load_pairs(
    source: str | os.PathLike,
    split: str = "train",
    *,
    video_column: str = "video",
    caption_column: str = "caption",
    video_dir: str | os.PathLike | None = None,
    dataset_config_name: str | None = None,
    start_column: str | None = None,
    end_column: str | None = None,
) -> Dataset:
    """Your pairs from a CSV / JSON-lines file, or from the `split` of a `datasets` dataset (a Hub id, a script or
    data folder `load_dataset` takes, or a folder written by `save_to_disk`)."""
    source = os.fspath(source)
    options = dict(
        video_column=video_column,
        caption_column=caption_column,
        video_dir=video_dir,
        start_column=start_column,
        end_column=end_column,
    )
    if os.path.splitext(source)[1].lower() in FILE_BUILDERS or os.path.isfile(source):
        rows = read_pairs_file(source)
        return pairs_dataset(rows, source=source, base_dir=os.path.dirname(os.path.abspath(source)), **options)
    from datasets import DatasetDict, load_dataset, load_from_disk

    if os.path.isfile(os.path.join(source, "dataset_dict.json")) or os.path.isfile(
        os.path.join(source, "dataset_info.json")
    ):
        loaded = load_from_disk(source)
        rows = loaded[split] if isinstance(loaded, DatasetDict) else loaded
        base = source
    else:
        rows = load_dataset(source, dataset_config_name, split=split)
        base = source if os.path.isdir(source) else None
    return pairs_dataset(rows, source=f"{source} ({split})", base_dir=base, **options)


__all__ = ["load_pairs", "pairs_dataset", "read_pairs_file"]
