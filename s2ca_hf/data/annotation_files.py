"""What every corpus loader reads with: the annotation files (JSON, list files, comma-separated files, MSVD's
caption pickle) with errors that name the file and the problem, the (text, video) pair they produce, and the video
files found on disk by name or by name without extension. `corpora.py` and the per-family loaders
(`corpora_msrvtt_msvd.py`, `corpora_didemo_activitynet.py`) share them."""

import csv
import io
import json
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass

from ..utils import walk_once
from ..video_io import VIDEO_EXTENSIONS


class CorpusFormatError(ValueError):
    """An annotation file is missing or malformed. The message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class CorpusPair:
    """One row of a corpus before its video file is found: a text, the id of its video and the clip window."""

    video_id: str
    text: str
    start: float | None = None
    end: float | None = None
    captions: list[str] | None = None  # MSR-VTT training without sentence expansion: every caption of the video
    extra: dict | None = None  # the synthetic corpus's columns beyond the schema (`corpora.EXTRA_FEATURES`)


# --- reading annotation files, with errors that name the file ----------------------------------------------------


def require_file(path: str, hint: str = "") -> str:
    if not os.path.isfile(path):
        raise CorpusFormatError(path, "file not found" + (f" ({hint})" if hint else ""))
    return path


def read_json(path: str, hint: str = ""):
    require_file(path, hint)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorpusFormatError(path, f"not valid JSON ({error})") from error


def read_lines(path: str, hint: str = "") -> list[str]:
    """A list file: one entry per line, surrounding whitespace stripped, blank lines skipped, duplicates dropped."""
    require_file(path, hint)
    with open(path, encoding="utf-8") as f:
        entries = [line.strip() for line in f]
    return list(dict.fromkeys(entry for entry in entries if entry))


def read_csv(path: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """A comma-separated file with a header row holding at least `columns`."""
    require_file(path)
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


def json_field(record, key: str, path: str, where: str):
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


def read_caption_pickle(path: str) -> dict:
    require_file(path, 'or read the captions_msvd.json captions with caption_file="captions_msvd.json"')
    try:
        with open(path, "rb") as f:
            return _CaptionUnpickler(f, encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise CorpusFormatError(path, f"not a pickle of plain captions ({error})") from error


def caption_text(caption, path: str, video_id: str) -> str:
    # raw-captions.pkl holds each caption as a list of word tokens (CLIP4Clip joins them with a space);
    # captions_msvd.json holds whole strings.
    if isinstance(caption, str):
        return caption
    if isinstance(caption, (list, tuple)) and all(isinstance(token, str) for token in caption):
        return " ".join(caption)
    raise CorpusFormatError(path, f"a caption of {video_id!r} is {caption!r}, expected a string or a list of tokens")


# --- finding the video files -----------------------------------------------------------------------------------


class VideoFiles:
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


def file_stem(name: str) -> str:
    return name.rpartition(".")[0] if "." in name else name
