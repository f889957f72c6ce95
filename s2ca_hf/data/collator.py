"""`VideoTextCollator`: the collate function of a `DataLoader` over corpus rows, for training and evaluation.

It reads videos from a frame cache when given one (`cache.py`) and decodes the files with `read_frames` otherwise.
"""

import logging
import random

import torch

from ..video_io import VideoDecodeError, read_frames
from .cache import FrameCache, _video_processor, check_on_error


logger = logging.getLogger(__name__)


class VideoTextCollator:
    """The `collate_fn` of a `DataLoader` over corpus rows: the model's keyword arguments for a batch.

    Text rows (from `load_corpus`) give `input_ids`, `attention_mask`, `pixel_values_videos` and `frame_mask`;
    video rows (from `corpus_videos`) give the last two only. Videos come from `frame_cache` when one is given, else
    they are decoded from the files with the processor's policy and each row's window. A row with a `captions`
    list (MSR-VTT training without sentence expansion) gets a random one of them, as CLIP4Clip draws one per epoch.

    With `return_foils`, rows with a `foils` list (false captions of the row's video: a direction reversed, two colours
    swapped) also give `foil_input_ids`, `foil_attention_mask` and `foil_mask`: one foil per row, drawn anew each
    epoch (`set_epoch`), and an empty text with `foil_mask` 0 for a row without any. The training loss scores them as
    extra negative texts. The draw is a function of (seed, epoch, row) rather than the next number of a stream, so
    that a resumed run, and every data-loader worker, draws what an uninterrupted run in the main process draws.

    Args:
        processor: an `S2CAProcessor`.
        frame_cache: a `FrameCache` built for this processor, or `None` to decode.
        on_error: `"raise"`, or `"skip"` to leave out rows whose video cannot be decoded (each logged; counted in
            `num_skipped`). A batch left with no row is an empty dict.
        return_video_index: also return the rows' `video_index` (evaluation and the training loss need it).
        seed: the caption and foil draws' random seed.
        return_foils: also return one foil per row when the rows have a `foils` column (training).
        positives_width: with rows that list the videos their text fits (`positive_video_indices`, and per foil
            `foil_positive_video_indices`: the built-in corpus's training split), also return them as
            `positive_video_index` and `foil_positive_video_index`, `(rows, positives_width)` padded with -1, for the
            loss to leave those pairs out (`max_positives` gives the width a dataset needs).
    """

    def __init__(
        self,
        processor,
        frame_cache: FrameCache | None = None,
        on_error: str = "raise",
        return_video_index: bool = False,
        seed: int | None = None,
        return_foils: bool = False,
        positives_width: int | None = None,
    ):
        check_on_error(on_error)
        self.processor = processor
        self.frame_cache = frame_cache
        self.on_error = on_error
        self.return_video_index = return_video_index
        self.policy = _video_processor(processor).frame_policy
        self.num_skipped = 0
        self.seed = seed
        self.return_foils = return_foils
        self.positives_width = positives_width
        self.epoch = 0
        self._rng = random.Random(seed)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose foils to draw (the training loop calls it before each epoch, as the sampler's)."""
        self.epoch = epoch

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.frame_cache is not None:
            kept = [row for row in rows if self._cached(row)]
            if not kept:
                return {}
            batch = self.frame_cache.video_inputs([row["video_id"] for row in kept], self.processor)
        else:
            kept, clips = [], []
            for row in rows:
                try:
                    clip = read_frames(row["video_path"], self.policy, row.get("start"), row.get("end"))
                except VideoDecodeError as error:
                    if self.on_error == "raise":
                        raise
                    self._skip(row, str(error))
                    continue
                kept.append(row)
                clips.append(clip.real_frames)
            if not kept:
                return {}
            video_processor = _video_processor(self.processor)
            out = video_processor(videos=clips, do_sample_frames=False, return_tensors="pt")
            batch = {"pixel_values_videos": out["pixel_values_videos"], "frame_mask": out["frame_mask"]}
        if "text" in kept[0]:
            texts = [self._text(row) for row in kept]
            encoded = self.processor(text=texts, return_tensors="pt")
            batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], **batch}
            answers = self.positives_width is not None and "positive_video_indices" in kept[0]
            if answers:
                batch["positive_video_index"] = self._padded([row["positive_video_indices"] for row in kept])
            if self.return_foils and "foils" in kept[0]:
                drawn = [self._foil(row, text) for row, text in zip(kept, texts)]
                foils = [None if k is None else row["foils"][k] for row, k in zip(kept, drawn)]
                encoded = self.processor(text=["" if foil is None else foil for foil in foils], return_tensors="pt")
                batch["foil_input_ids"] = encoded["input_ids"]
                batch["foil_attention_mask"] = encoded["attention_mask"]
                batch["foil_mask"] = torch.tensor([int(foil is not None) for foil in foils])
                if answers and "foil_positive_video_indices" in kept[0]:
                    true_of = [
                        [] if k is None else row["foil_positive_video_indices"][k] for row, k in zip(kept, drawn)
                    ]
                    batch["foil_positive_video_index"] = self._padded(true_of)
        if self.return_video_index:
            batch["video_index"] = torch.tensor([row["video_index"] for row in kept])
        return batch

    def _text(self, row: dict) -> str:
        captions = row.get("captions")
        return self._rng.choice(captions) if captions else row["text"]

    def _foil(self, row: dict, text: str) -> int | None:
        """Which of the row's foils to use, or `None` without any; the same for the same (seed, epoch, video,
        caption)."""
        if not row["foils"]:
            return None
        # A string seed is hashed with SHA-512: the same draw in every process, whatever PYTHONHASHSEED.
        draw = random.Random(f"{self.seed}/{self.epoch}/{row['video_id']}/{text}")
        return draw.randrange(len(row["foils"]))

    def _padded(self, lists: list[list[int]]) -> torch.Tensor:
        """`(rows, positives_width)` video indices, -1 padding: the same width in every batch and process, so that
        the loss can gather them."""
        out = torch.full((len(lists), self.positives_width), -1, dtype=torch.long)
        for n, values in enumerate(lists):
            if len(values) > self.positives_width:
                raise ValueError(
                    f"A row lists {len(values)} correct videos, more than positives_width={self.positives_width}: "
                    "pass the largest count in the dataset (`max_positives`)."
                )
            out[n, : len(values)] = torch.tensor(values, dtype=torch.long)
        return out

    def _cached(self, row: dict) -> bool:
        if self.frame_cache is not None and row["video_id"] in self.frame_cache.failed:
            if self.on_error == "raise":
                raise VideoDecodeError(row["video_path"], self.frame_cache.failed[row["video_id"]])
            self._skip(row, self.frame_cache.failed[row["video_id"]])
            return False
        return True

    def _skip(self, row: dict, reason: str) -> None:
        self.num_skipped += 1
        logger.warning("Skipping video %s (%d skipped so far): %s", row["video_id"], self.num_skipped, reason)


def max_positives(dataset) -> int:
    """The most videos any row's text (or foil) fits, in a dataset with `positive_video_indices` (0 without)."""
    widths = [0]
    if "positive_video_indices" in dataset.column_names:
        widths += [len(values) for values in dataset["positive_video_indices"]]
    if "foil_positive_video_indices" in dataset.column_names:
        widths += [len(values) for per_foil in dataset["foil_positive_video_indices"] for values in per_foil]
    return max(widths)


__all__ = ["VideoTextCollator", "max_positives"]
