"""Video decoding for the corpora and the frame cache: PyAV, the processor's frame policy, one error type.

`read_frames` decodes exactly the frames that `S2CAVideoProcessor`'s policy selects (CLIP4Clip's first frame of every
second at the integer frame rate, then head/tail/uniform down to `max_frames`; or X-Pool's exactly N frames), using
the index functions of `s2ca_hf.video_processing_s2ca`, so that a corpus decoded here and a file given to the
processor pick the same frames.

Decoding first reads the packet index of the stream (demuxing without decoding is cheap), which gives the exact
frame count, the presentation time of every frame and the keyframes. The wanted frames are then decoded in order,
and the decoder jumps ahead with a seek only when a keyframe lies between the last decoded frame and the next
wanted one: that skips whole groups of pictures in long videos, and costs nothing in short all-intra or
one-keyframe clips, where it reduces to a sequential decode that stops after the last wanted frame.
"""

import bisect
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np

from ..video_processing_s2ca import (
    S2CAVideoProcessor,
    check_frame_policy,
    select_frame_indices,
    slice_frame_positions,
    xpool_frame_indices,
)


logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


class VideoDecodeError(ValueError):
    """A video file could not be decoded: missing, empty, truncated, corrupt, or not a video. `path` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"Could not decode video {self.path}: {reason}")


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist. Also a `FileNotFoundError`, and caught with every other `VideoDecodeError`."""


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

    max_frames: int = S2CAVideoProcessor.max_frames
    sample_fps: int = S2CAVideoProcessor.sample_fps
    slice_framepos: str = S2CAVideoProcessor.slice_framepos
    frame_sampling: str = S2CAVideoProcessor.frame_sampling

    def __post_init__(self):
        check_frame_policy(self.max_frames, self.sample_fps, self.slice_framepos, self.frame_sampling)

    @classmethod
    def from_processor(cls, processor) -> "FramePolicy":
        """The policy of an `S2CAVideoProcessor` (or of the video processor inside an `S2CAProcessor`)."""
        processor = getattr(processor, "video_processor", processor)
        return cls(processor.max_frames, processor.sample_fps, processor.slice_framepos, processor.frame_sampling)

    def to_dict(self) -> dict:
        return asdict(self)

    def frame_indices(
        self,
        num_video_frames: int,
        fps: float,
        start_time: float | None = None,
        end_time: float | None = None,
    ) -> list[int]:
        """The indices (in presentation order) of the frames this policy keeps from a video."""
        if self.frame_sampling == "xpool" and (start_time is not None or end_time is not None):
            # X-Pool has no window; restricting its equal segments to the window's frames is the natural extension.
            first = max(int((start_time or 0) * fps), 0)
            last = num_video_frames if end_time is None else min(int(end_time * fps), num_video_frames)
            if last <= first:
                return []
            return [first + i for i in xpool_frame_indices(last - first, self.max_frames)]
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


@dataclass
class VideoFrames:
    """The frames `read_frames` decoded.

    Attributes:
        frames: `(max_frames, H, W, 3)` uint8 RGB at the file's resolution; slots past the real frames are zeros.
        frame_mask: `(max_frames,)` int64, 1 for a real frame and 0 for padding.
        frame_indices: the index of each real frame in the video, in presentation order.
        fps: the stream's frame rate as the container reports it (the policy truncates it to an integer).
        num_video_frames: the number of frames in the stream.
    """

    frames: np.ndarray
    frame_mask: np.ndarray
    frame_indices: list[int]
    fps: float
    num_video_frames: int

    @property
    def real_frames(self) -> np.ndarray:
        """`(n, H, W, 3)`: the real frames only, as the video processor takes them."""
        return self.frames[: len(self.frame_indices)]


def read_frames(
    path: str | os.PathLike,
    policy: FramePolicy | S2CAVideoProcessor | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
) -> VideoFrames:
    """Decodes the frames a frame policy selects from a video file, with PyAV.

    Args:
        path: the video file.
        policy: a `FramePolicy`, or an `S2CAVideoProcessor`/`S2CAProcessor` whose policy to use; `None` for the
            processor's defaults (CLIP4Clip, 1 fps, 12 frames, uniform).
        start_time, end_time: the clip window in seconds (CLIP4Clip's DiDeMo and ActivityNet windows), or `None`.

    Returns:
        `VideoFrames`: frames at the file's resolution, zero-padded to `max_frames`, and their `frame_mask`.
        Resizing to the processor's resolution is the processor's job (the frame cache stores that result).

    Raises:
        VideoNotFoundError: the file does not exist.
        VideoDecodeError: anything else PyAV cannot read (empty, truncated, corrupt, not a video, no frames),
            whether at opening or mid-stream. Both name the file.

    Example:

    ```python
    >>> clip = read_frames("video0.mp4", FramePolicy(max_frames=12))
    >>> clip.frames.shape, clip.frame_mask.tolist()  # a 7-second clip at 30 fps: 8 frames, 4 slots padded
    ((12, 240, 320, 3), [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    ```
    """
    if policy is None:
        policy = FramePolicy()
    elif not isinstance(policy, FramePolicy):
        policy = FramePolicy.from_processor(policy)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoNotFoundError(path, "the file does not exist")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "it is a directory")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "the file is empty")
    try:
        import av
    except ImportError as error:
        raise ImportError(f"Decoding {path} needs PyAV: `pip install av` (or s2ca-hf[train]).") from error

    try:
        with av.open(path) as container:
            frames, indices, fps, num_frames = _decode(container, policy, start_time, end_time)
    except VideoDecodeError:
        raise
    # PyAV raises its own errors (av.FFmpegError, a ValueError) at opening and mid-stream, OSError for unreadable
    # files, and a decoder can fail in numpy conversion or indexing: all of them mean this file is unusable.
    except (av.FFmpegError, OSError, ValueError, IndexError, RuntimeError, EOFError) as error:
        raise VideoDecodeError(path, f"{type(error).__name__}: {error}") from error
    except Exception as error:  # an unforeseen PyAV failure must still name the file
        raise VideoDecodeError(path, f"{type(error).__name__}: {error}") from error
    if not frames:
        raise VideoDecodeError(path, f"no frame could be read ({num_frames} frames in the stream)")

    height, width = frames[0].shape[:2]
    out = np.zeros((policy.max_frames, height, width, 3), dtype=np.uint8)
    out[: len(frames)] = np.stack(frames)
    mask = np.zeros(policy.max_frames, dtype=np.int64)
    mask[: len(frames)] = 1
    return VideoFrames(frames=out, frame_mask=mask, frame_indices=indices, fps=fps, num_video_frames=num_frames)


def _decode(container, policy: FramePolicy, start_time, end_time) -> tuple[list[np.ndarray], list[int], float, int]:
    """Decodes the policy's frames from an open container: `(frames, their indices, fps, number of frames)`."""
    if not container.streams.video:
        raise ValueError("the file has no video stream")
    stream = container.streams.video[0]

    # The packet index: one packet per frame; presentation timestamps sorted give frame i's timestamp.
    timestamps, keyframes, has_all_timestamps = [], [], True
    for packet in container.demux(stream):
        if not packet.size:  # the flush packet at the end of the stream
            continue
        if packet.pts is None:
            has_all_timestamps = False
        else:
            timestamps.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    num_frames = len(timestamps) if has_all_timestamps else (stream.frames or 0)
    if num_frames == 0:
        raise ValueError("the video stream has no frames")
    is_mp4 = "mp4" in (container.format.name or "")
    if is_mp4 and has_all_timestamps and stream.frames and num_frames < stream.frames:
        # An mp4 cut short after its index (written with the index first): its tail is gone. (Other containers,
        # AVI among them, may count empty "dropped frame" packets in their header, so the check is mp4's only.)
        raise ValueError(f"the file is truncated: its header lists {stream.frames} frames, {num_frames} are present")

    fps = float(stream.average_rate or stream.guessed_rate or 0)
    if fps <= 0 and stream.duration and stream.time_base:
        fps = num_frames / float(stream.duration * stream.time_base)
    if fps <= 0:
        raise ValueError("the video stream has no frame rate")

    indices = policy.frame_indices(num_frames, fps, start_time, end_time)
    if not indices:
        return [], [], fps, num_frames
    # X-Pool repeats the last frame of a short video: decode each distinct frame once.
    wanted = sorted(set(indices))
    if has_all_timestamps:
        timestamps.sort()
        keyframes.sort()
        decoded = _decode_by_timestamp(container, stream, [timestamps[i] for i in wanted], keyframes)
        decoded = {index: decoded[timestamps[index]] for index in wanted if timestamps[index] in decoded}
    else:
        decoded = _decode_sequentially(container, stream, wanted)
    # A stream whose index promises more frames than it decodes keeps the frames that exist, in order.
    kept = [index for index in indices if index in decoded]
    return [decoded[index] for index in kept], kept, fps, num_frames


def _decode_by_timestamp(container, stream, targets: list[int], keyframes: list[int]) -> dict[int, np.ndarray]:
    """Decodes the frames with the given (sorted) presentation timestamps, seeking over the groups of pictures that
    hold none of them."""
    wanted = set(targets)
    decoded: dict[int, np.ndarray] = {}
    container.seek(0, stream=stream, backward=True, any_frame=False)
    frames_iter = container.decode(stream)
    last_timestamp, position = None, 0
    while position < len(targets):
        target = targets[position]
        keyframe_at = bisect.bisect_right(keyframes, target) - 1
        sought = False
        if keyframe_at >= 0 and last_timestamp is not None and keyframes[keyframe_at] > last_timestamp:
            # A keyframe between the last decoded frame and the target: jump to it rather than decode up to it.
            container.seek(keyframes[keyframe_at], stream=stream, backward=True, any_frame=False)
            frames_iter = container.decode(stream)
            sought = True
        for frame in frames_iter:
            if frame.pts is None:
                continue
            if sought and frame.pts > target:
                # The demuxer landed past the target (an inexact index): decode from the start instead.
                return _decode_sequentially(container, stream, targets, by_timestamp=True)
            sought = False
            last_timestamp = frame.pts
            if frame.pts in wanted:
                decoded[frame.pts] = frame.to_ndarray(format="rgb24")
            if frame.pts >= target:
                break
        else:
            break  # the stream ended before the target: it keeps the frames that exist
        while position < len(targets) and targets[position] <= last_timestamp:
            position += 1
    return decoded


def _decode_sequentially(container, stream, wanted: list[int], by_timestamp: bool = False) -> dict[int, np.ndarray]:
    """Decodes from the start, keeping the frames at the wanted positions (or timestamps) and stopping after the
    last one: for containers without timestamps, and as the fallback of an inexact seek."""
    container.seek(0, stream=stream, backward=True, any_frame=False)
    wanted_set, last = set(wanted), max(wanted)
    decoded = {}
    for position, frame in enumerate(container.decode(stream)):
        key = frame.pts if by_timestamp else position
        if key is None:
            continue
        if key in wanted_set:
            decoded[key] = frame.to_ndarray(format="rgb24")
        if key >= last:
            break
    return decoded


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")


__all__ = [
    "FramePolicy",
    "VideoDecodeError",
    "VideoFrames",
    "VideoNotFoundError",
    "read_frames",
    "slice_frame_positions",
]
