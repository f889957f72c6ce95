"""The text-video corpora as `datasets.Dataset`s, built exactly as CLIP4Clip builds its pairs.

`load_corpus(name, data_dir, split, **protocol)` reads the annotation files the community distributes (MSR-VTT,
MSVD, DiDeMo, ActivityNet Captions; see `docs/datasets.md` for the layouts and the protocol) or the
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

The loaders of each corpus family live in `corpora_msrvtt_msvd.py` (MSR-VTT, MSVD, synthetic) and
`corpora_didemo_activitynet.py` (DiDeMo, ActivityNet Captions), the annotation readers they share in
`annotation_files.py`; this module turns their pairs into the dataset.

Nothing here is imported by the model files: this package is not pushed to the Hub.
"""

import json
import logging
import os

from datasets import Dataset, DatasetInfo, Features, Sequence, Value

from ..video_io import VIDEO_EXTENSIONS
from .annotation_files import CorpusFormatError, VideoFiles
from .corpora_didemo_activitynet import activitynet_pairs, didemo_pairs
from .corpora_msrvtt_msvd import msrvtt_pairs, msvd_pairs, msvd_youtube_id, synthetic_pairs


logger = logging.getLogger(__name__)

CORPORA = ("msrvtt", "msvd", "didemo", "activitynet", "synthetic")
EVAL_SPLITS = ("val", "test", "compositional", "open_vocab")
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


# Columns only the built-in synthetic corpus has: evaluation texts carry their correct answers (every video that
# shows all the text says; the metrics count any of them) and their query type, training rows their minimal-pair
# group (-1: none) and foils (false captions of the video, used as extra negatives).
EXTRA_FEATURES = {
    "positive_video_ids": Sequence(Value("string")),
    "query_type": Value("string"),
    "group": Value("int64"),
    "foils": Sequence(Value("string")),
    "foil_positive_video_ids": Sequence(Sequence(Value("string"))),  # per foil: the videos it is true of
}
# The same answers as rows of `corpus_videos` (`video_index`), for the training loss: which of a batch's videos a
# text (or a foil) fits, so that it is not scored as a negative there. Ids of videos outside the split are left out.
INDEX_FEATURES = {
    "positive_video_indices": Sequence(Value("int64")),
    "foil_positive_video_indices": Sequence(Sequence(Value("int64"))),
}


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


_BUILDERS = {
    "msrvtt": msrvtt_pairs,
    "msvd": msvd_pairs,
    "didemo": didemo_pairs,
    "activitynet": activitynet_pairs,
    "synthetic": synthetic_pairs,
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
        name: `"msrvtt"`, `"msvd"`, `"didemo"`, `"activitynet"` or `"synthetic"` (whose rows also carry the
            columns of `EXTRA_FEATURES`).
        data_dir: the folder with the annotation files (for `"synthetic"`: the corpus folder, generated there if
            empty).
        split: `"train"`, `"val"`, `"test"` (corpus-dependent; MSR-VTT's and ActivityNet's test set is their val
            file, as in CLIP4Clip); for `"synthetic"` also `"compositional"`, `"open_vocab"` and `"frames"`.
        video_dir: where the video files are (searched recursively); default `data_dir`.
        allow_missing: evaluate on the videos found when some of a val/test split are missing. Training splits
            always drop missing videos, with a warning that names them.
        protocol: the corpus's options, named as in docs/datasets.md:
            MSR-VTT `train_csv="9k" | "7k"` (or a csv file name), `expand_sentences=True`, `test_csv`, `data_json`;
            MSVD `caption_file="raw-captions.pkl" | "captions_msvd.json"`;
            DiDeMo `paragraphs=True`, `video_names="auto" | "original" | "mp4" | "stem"`;
            ActivityNet `paragraphs=True`, `annotation_file`, `ids_file`;
            synthetic the MSR-VTT options, and `num_videos`, `seed`, `val_size`, `test_size`,
            `compositional_size`, `open_vocab_size`, `num_stills`, `size`, `num_frames`, `fps`,
            `captions_per_video` for its generation (see
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
    index = VideoFiles(video_dir, extensions)

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
    extras = [column for column in EXTRA_FEATURES if any(pair.extra and column in pair.extra for pair in pairs)]
    for column in extras:
        columns[column] = [pair.extra[column] for pair in pairs]
    if "positive_video_ids" in extras:
        columns["positive_video_indices"] = [_indices(ids, video_index) for ids in columns["positive_video_ids"]]
    if "foil_positive_video_ids" in extras:
        columns["foil_positive_video_indices"] = [
            [_indices(ids, video_index) for ids in per_foil] for per_foil in columns["foil_positive_video_ids"]
        ]
    index_columns = [column for column in INDEX_FEATURES if column in columns]
    features = Features(
        {
            **FEATURES,
            **({"captions": Sequence(Value("string"))} if with_captions else {}),
            **{column: EXTRA_FEATURES[column] for column in extras},
            **{column: INDEX_FEATURES[column] for column in index_columns},
        }
    )
    description = json.dumps(
        {"corpus": name, "split": split, "protocol": protocol, "missing_videos": missing}, sort_keys=True, default=str
    )
    info = DatasetInfo(dataset_name=name, config_name=split, description=description, features=features)
    return Dataset.from_dict(columns, info=info)


def _indices(video_ids: list[str], video_index: dict[str, int]) -> list[int]:
    return [video_index[video_id] for video_id in video_ids if video_id in video_index]


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
    """Renumbers `video_index` 0..V-1 in order of first appearance, after rows were filtered out; the
    `INDEX_FEATURES` columns follow, and lose the videos that are gone."""
    new_index: dict[int, int] = {}
    for old in dataset["video_index"]:
        new_index.setdefault(old, len(new_index))

    def renumber(row: dict) -> dict:
        out = {"video_index": new_index[row["video_index"]]}
        if "positive_video_indices" in row:
            out["positive_video_indices"] = [new_index[v] for v in row["positive_video_indices"] if v in new_index]
        if "foil_positive_video_indices" in row:
            out["foil_positive_video_indices"] = [
                [new_index[v] for v in values if v in new_index] for values in row["foil_positive_video_indices"]
            ]
        return out

    return dataset.map(renumber, desc="Renumbering videos")


__all__ = [
    "CORPORA",
    "FEATURES",
    "CorpusFormatError",
    "EXTRA_FEATURES",
    "INDEX_FEATURES",
    "MissingVideosError",
    "corpus_info",
    "corpus_videos",
    "load_corpus",
    "msvd_youtube_id",
    "reindex_videos",
]
