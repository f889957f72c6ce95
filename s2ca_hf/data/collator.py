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

    Args:
        processor: an `S2CAProcessor`.
        frame_cache: a `FrameCache` built for this processor, or `None` to decode.
        on_error: `"raise"`, or `"skip"` to leave out rows whose video cannot be decoded (each logged; counted in
            `num_skipped`). A batch left with no row is an empty dict.
        return_video_index: also return the rows' `video_index` (evaluation needs it).
        seed: the caption draws' random seed.
    """

    def __init__(
        self,
        processor,
        frame_cache: FrameCache | None = None,
        on_error: str = "raise",
        return_video_index: bool = False,
        seed: int | None = None,
    ):
        check_on_error(on_error)
        self.processor = processor
        self.frame_cache = frame_cache
        self.on_error = on_error
        self.return_video_index = return_video_index
        self.policy = _video_processor(processor).frame_policy
        self.num_skipped = 0
        self._rng = random.Random(seed)

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
        if self.return_video_index:
            batch["video_index"] = torch.tensor([row["video_index"] for row in kept])
        return batch

    def _text(self, row: dict) -> str:
        captions = row.get("captions")
        return self._rng.choice(captions) if captions else row["text"]

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


__all__ = ["VideoTextCollator"]
