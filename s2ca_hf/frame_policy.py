"""Which frames of a video are used: `FramePolicy`, the one frame policy of the project, and the index arithmetic
behind it.

CLIP4Clip: the first frame of every second at the integer frame rate, then head / tail / uniform slicing down to
`max_frames`, zero padding with `frame_mask` 0. X-Pool: exactly `max_frames` frames, the middle one of equal
segments. Either with an optional time window (DiDeMo, ActivityNet clips). The video processor, the corpora, the
frame cache, the index, evaluation and the Hub card all take it from here; `video_io.read_frames` decodes the frames
it selects.

Part of the model code pushed to the Hub (the video processor imports it); plain Python, no decoding.
"""

import math
from dataclasses import asdict, dataclass


FRAME_SAMPLINGS = ("clip4clip", "xpool")
SLICE_FRAMEPOS = ("head", "tail", "uniform")


def clip4clip_frame_indices(
    num_video_frames: int,
    fps: float,
    sample_fps: int = 1,
    start_time: float | None = None,
    end_time: float | None = None,
) -> list[int]:
    """The frames CLIP4Clip reads from a video, before `max_frames` slicing.

    The frame rate is truncated to an integer (29.97 -> 29); the video lasts `ceil(num_video_frames / fps)` seconds;
    every second `sec` of the window `[start, end]` (both inclusive, end clipped to the duration) gives the frames
    `sec * fps + ind` for `ind` in `arange(0, fps, fps // sample_fps)[:sample_fps]`, stopping at the first frame past
    the end of the video. At `sample_fps=1` that is the first frame of every second.
    """
    if num_video_frames <= 0:
        return []
    if 0 < fps < 1:
        # Less than one frame a second (a slideshow, a time-lapse): CLIP4Clip's integer rate would be 0. Every frame
        # on screen during the window is kept (frame i shows from i / fps to (i + 1) / fps), none from outside it.
        start = max(start_time or 0.0, 0.0)
        end = num_video_frames / fps if end_time is None else min(end_time, num_video_frames / fps)
        first = min(math.floor(start * fps), num_video_frames - 1)
        return list(range(first, max(min(math.ceil(end * fps), num_video_frames), first + 1)))
    fps = max(int(fps), 1)
    total_duration = (num_video_frames + fps - 1) // fps
    start_sec, end_sec = 0, total_duration
    if start_time is not None or end_time is not None:
        start_sec = int(start_time or 0)
        end_sec = total_duration if end_time is None else int(end_time)
        # CLIP4Clip's loaders swap a reversed window and widen an empty one to one second.
        start_sec, end_sec = min(start_sec, end_sec), max(start_sec, end_sec)
        end_sec = min(max(end_sec, start_sec + 1), total_duration)
    interval = max(fps // sample_fps, 1)
    offsets = list(range(0, fps, interval))[:sample_fps]
    indices = []
    for second in range(start_sec, end_sec + 1):
        for offset in offsets:
            index = second * fps + offset
            if index >= num_video_frames:
                return indices
            indices.append(index)
    return indices


def check_frame_policy(max_frames: int, sample_fps: int, slice_framepos: str, frame_sampling: str) -> None:
    """Raises a `ValueError` naming the field for a frame policy the functions below cannot apply."""
    if frame_sampling not in FRAME_SAMPLINGS:
        raise ValueError(f"`frame_sampling` must be one of {FRAME_SAMPLINGS}, got {frame_sampling!r}.")
    if slice_framepos not in SLICE_FRAMEPOS:
        raise ValueError(f"`slice_framepos` must be one of {SLICE_FRAMEPOS}, got {slice_framepos!r}.")
    if max_frames < 1 or sample_fps < 1:
        raise ValueError(f"`max_frames` and `sample_fps` must be >= 1, got {max_frames}, {sample_fps}.")


def _linspace_int(start: int, stop: int, num: int) -> list[int]:
    """`np.linspace(start, stop, num).astype(int)` in plain Python, with numpy's arithmetic (i * step + start, the
    last point exactly `stop`), so the indices match the reference code without importing numpy here."""
    if num == 1:
        return [int(start)]
    step = (stop - start) / (num - 1)
    return [int(i * step + start) for i in range(num - 1)] + [int(stop)]


def slice_frame_positions(num_candidates: int, max_frames: int, slice_framepos: str = "uniform") -> list[int]:
    """Which of `num_candidates` sampled frames CLIP4Clip keeps: all of them if they fit in `max_frames`, else the
    head, the tail, or `np.linspace(0, n - 1, max_frames, dtype=int)` (uniform: first and last frame always kept)."""
    if slice_framepos not in SLICE_FRAMEPOS:
        raise ValueError(f"`slice_framepos` must be one of {SLICE_FRAMEPOS}, got {slice_framepos!r}.")
    if num_candidates <= max_frames:
        return list(range(num_candidates))
    if slice_framepos == "head":
        return list(range(max_frames))
    if slice_framepos == "tail":
        return list(range(num_candidates - max_frames, num_candidates))
    return _linspace_int(0, num_candidates - 1, max_frames)


def xpool_frame_indices(num_video_frames: int, num_frames: int) -> list[int]:
    """X-Pool's "exactly N frames": split `[0, n)` into N equal segments and take the middle frame of each; a video
    with fewer than N frames repeats its last frame."""
    if num_video_frames <= 0:
        return []
    segments = min(num_frames, num_video_frames)
    bounds = _linspace_int(0, num_video_frames, segments + 1)
    indices = [(bounds[i] + bounds[i + 1] - 1) // 2 for i in range(segments)]
    return indices + [indices[-1]] * (num_frames - segments)


def select_frame_indices(
    num_video_frames: int,
    fps: float | None,
    max_frames: int,
    sample_fps: int = 1,
    slice_framepos: str = "uniform",
    frame_sampling: str = "clip4clip",
    start_time: float | None = None,
    end_time: float | None = None,
) -> list[int]:
    """The indices of the frames to keep from a video of `num_video_frames` frames, under the processor's policy.

    With `fps=None` the frames are taken to be sampled already (one per second, as the frame cache stores them), so
    `"clip4clip"` only applies the `max_frames` slicing.
    """
    if frame_sampling not in FRAME_SAMPLINGS:
        raise ValueError(f"`frame_sampling` must be one of {FRAME_SAMPLINGS}, got {frame_sampling!r}.")
    if frame_sampling == "xpool":
        if start_time is None and end_time is None:
            return xpool_frame_indices(num_video_frames, max_frames)
        # X-Pool has no window; restricting its equal segments to the window's frames is the natural extension.
        rate = fps or 1.0
        first = max(int((start_time or 0) * rate), 0)
        last = num_video_frames if end_time is None else min(int(end_time * rate), num_video_frames)
        if last <= first:
            return []
        return [first + i for i in xpool_frame_indices(last - first, max_frames)]
    if fps is None:
        candidates = list(range(num_video_frames))
    else:
        candidates = clip4clip_frame_indices(num_video_frames, fps, sample_fps, start_time, end_time)
    return [candidates[i] for i in slice_frame_positions(len(candidates), max_frames, slice_framepos)]


@dataclass(frozen=True)
class FramePolicy:
    """Which frames of a video are kept: the frame-policy fields of `S2CAVideoProcessor`, with its defaults.

    Args:
        max_frames: frame slots per video (12 for MSR-VTT and MSVD, 64 for DiDeMo and ActivityNet).
        sample_fps: frames read per second (CLIP4Clip's `feature_framerate`).
        slice_framepos: `"head"`, `"tail"` or `"uniform"`: how more than `max_frames` sampled frames are cut.
        frame_sampling: `"clip4clip"` (per-second sampling, zero padding with mask 0) or `"xpool"` (exactly
            `max_frames` frames, the middle one of equal segments, the last frame repeated in a short video).
    """

    max_frames: int = 12
    sample_fps: int = 1
    slice_framepos: str = "uniform"
    frame_sampling: str = "clip4clip"

    def __post_init__(self):
        check_frame_policy(self.max_frames, self.sample_fps, self.slice_framepos, self.frame_sampling)

    @classmethod
    def from_processor(cls, processor) -> "FramePolicy":
        """The policy of an `S2CAVideoProcessor` (or of the video processor inside an `S2CAProcessor`)."""
        processor = getattr(processor, "video_processor", processor)
        return cls(processor.max_frames, processor.sample_fps, processor.slice_framepos, processor.frame_sampling)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for a model card or a log."""
        if self.frame_sampling == "xpool":
            return f"X-Pool: exactly {self.max_frames} frames, the middle frame of equal segments"
        return (
            f"CLIP4Clip: {self.sample_fps} frame(s) per second, at most {self.max_frames} (`{self.slice_framepos}` "
            "slicing), shorter videos zero-padded"
        )

    def frame_indices(
        self,
        num_video_frames: int,
        fps: float,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> list[int]:
        """The indices (in presentation order) of the frames this policy keeps from a video."""
        return select_frame_indices(
            num_video_frames,
            fps,
            max_frames=self.max_frames,
            sample_fps=self.sample_fps,
            slice_framepos=self.slice_framepos,
            frame_sampling=self.frame_sampling,
            start_time=start_time,
            end_time=end_time,
        )


__all__ = [
    "FRAME_SAMPLINGS",
    "SLICE_FRAMEPOS",
    "FramePolicy",
    "check_frame_policy",
    "clip4clip_frame_indices",
    "select_frame_indices",
    "slice_frame_positions",
    "xpool_frame_indices",
]
