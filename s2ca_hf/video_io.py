"""How video files are read and written: `read_frames` decodes the frames a `FramePolicy` (`frame_policy.py`)
selects, and `encode_frames` writes the clips the synthetic corpus, the demo and the tests use.

`read_frames` first reads the packet index of the stream (demuxing without decoding is cheap), which gives the exact
frame count, the presentation time of every frame and the keyframes. The wanted frames are then decoded in order,
and the decoder jumps ahead with a seek only when a keyframe lies between the last decoded frame and the next
wanted one: that skips whole groups of pictures in long videos, and costs nothing in short all-intra or
one-keyframe clips, where it reduces to a sequential decode that stops after the last wanted frame.

Part of the model code pushed to the Hub (the video processor imports it); needs numpy, and PyAV to decode.
"""

import bisect
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .frame_policy import FramePolicy


# Extensions PyAV/FFmpeg commonly decode; compared case-insensitively (the corpora and the index use this list).
VIDEO_EXTENSIONS = (
    ".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".ogv", ".ts",
    ".webm", ".wmv",
)  # fmt: skip


# The demuxers (FFmpeg names) a video is opened with, one per container of VIDEO_EXTENSIONS, and local files as the
# only protocol. FFmpeg probes a file's bytes, whatever its name, and some demuxers open other files: an HLS playlist
# (.m3u8, or a text file named .mp4) or a concat list names files anywhere on the machine (or URLs) and would make a
# fetched or uploaded "video" read them. Those demuxers are never allowed.
SAFE_DEMUXERS = "mov,matroska,avi,flv,mpegts,mpeg,mpegvideo,m4v,ogg,asf"
PLAYLIST_MAGIC = (b"#EXTM3U", b"ffconcat", b"<?xml")  # HLS, concat lists, DASH manifests: named in the error


class VideoDecodeError(ValueError):
    """A video file could not be decoded: missing, empty, truncated, corrupt, or not a video. `path` names it."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"Could not decode video {self.path}: {reason}")


class VideoNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist. Also a `FileNotFoundError`, and caught with every other `VideoDecodeError`."""


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
    policy: FramePolicy | None = None,
    start_time: float | None = None,
    end_time: float | None = None,
    select: Callable[[int, float], list[int]] | None = None,
) -> VideoFrames:
    """Decodes the frames a frame policy selects from a video file, with PyAV.

    Args:
        path: the video file.
        policy: a `FramePolicy`, or an `S2CAVideoProcessor` / `S2CAProcessor` whose policy to use (anything with
            the four policy fields); `None` for the defaults (CLIP4Clip, 1 fps, 12 frames, uniform).
        start_time, end_time: the clip window in seconds (CLIP4Clip's DiDeMo and ActivityNet windows), or `None`.
        select: `select(number of frames, fps) -> frame indices`, to pick the frames some other way than the
            policy does (the video processor passes its per-call sampling here); `None` uses the policy.

    Returns:
        `VideoFrames`: frames at the file's resolution, zero-padded to `max_frames` (or as many as `select` chose),
        and their `frame_mask`.
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
        with open_video(path) as container:
            if select is None:
                frames, indices, fps, num_frames = _decode(
                    container, lambda count, rate: policy.frame_indices(count, rate, start_time, end_time)
                )
            else:
                frames, indices, fps, num_frames = _decode(container, select)
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
    slots = max(policy.max_frames, len(frames))
    out = np.zeros((slots, height, width, 3), dtype=np.uint8)
    out[: len(frames)] = np.stack(frames)
    mask = np.zeros(slots, dtype=np.int64)
    mask[: len(frames)] = 1
    return VideoFrames(frames=out, frame_mask=mask, frame_indices=indices, fps=fps, num_video_frames=num_frames)


def open_video(path: str):
    """A PyAV container for a local video file, opened with only the `SAFE_DEMUXERS` and the file protocol. A
    playlist or a file list (which would open other files) raises `VideoDecodeError` naming it."""
    try:
        import av
    except ImportError as error:
        raise ImportError(f"Decoding {path} needs PyAV: `pip install av` (or s2ca-hf[train]).") from error

    with open(path, "rb") as handle:
        head = handle.read(64).lstrip()
    if head.startswith(PLAYLIST_MAGIC):
        raise VideoDecodeError(path, "it is a playlist or a list of files, not a video (such files are never opened)")
    try:
        return av.open(path, options={"format_whitelist": SAFE_DEMUXERS, "protocol_whitelist": "file"})
    except av.ArgumentError as error:  # the whitelist refused every demuxer that recognised the bytes
        raise VideoDecodeError(path, f"not a video container this package reads ({SAFE_DEMUXERS}): {error}") from None


def _decode(container, select) -> tuple[list[np.ndarray], list[int], float, int]:
    """Decodes the frames `select(number of frames, fps)` picks from an open container: `(frames, their indices, fps,
    number of frames)`."""
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

    indices = [int(index) for index in select(num_frames, fps)]
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
                decoded[frame.pts] = _rgb(frame)
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
            decoded[key] = _rgb(frame)
        if key >= last:
            break
    return decoded


# ---------------------------------------------------------------------------------------------------------------------
# Writing videos (tests, the synthetic corpus)
# ---------------------------------------------------------------------------------------------------------------------


def _rgb(frame) -> np.ndarray:
    """A decoded frame as `(H, W, 3)` uint8 RGB, converted by swscale on one thread: its automatic thread pool does
    not survive `fork()` (with PyAV 18.1.1 / FFmpeg 8.1.3, a forked process such as a `datasets.map` worker building
    the frame cache waits forever in the conversion once its parent has converted a frame). Same pixels."""
    try:
        return frame.reformat(format="rgb24", threads=1).to_ndarray()
    except TypeError:  # a PyAV without `threads` (its conversion has no thread pool)
        return frame.to_ndarray(format="rgb24")


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """RGB uint8 `(H, W, 3)` (H and W even) to the planar yuv420p layout `(3H/2, W)`: ITU-R BT.601 limited range,
    the colour space decoders assume for untagged H.264; chroma from the mean of each 2x2 block. Plain float64
    arithmetic with rounding, so every machine and process computes the same bytes."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}.")
    rgb = image.astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 16.0 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255.0
    block = rgb.reshape(height // 2, 2, width // 2, 2, 3).mean(axis=(1, 3))
    red, green, blue = block[..., 0], block[..., 1], block[..., 2]
    cb = 128.0 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255.0
    cr = 128.0 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255.0
    planes = [luma.ravel(), cb.ravel(), cr.ravel()]
    return np.clip(np.round(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def encode_frames(
    path, frames: Iterable[np.ndarray], fps, codec: str = "libx264", options: dict | None = None, **container_options
) -> str:
    """Encodes RGB uint8 frames `(H, W, 3)` into a video file with PyAV (yuv420p); `options` go to the encoder
    (`{"g": "8"}` for a keyframe every 8 frames), `container_options` to the container. Returns the path."""
    try:
        import av  # PyAV comes with the `train` and `dev` extras
    except ImportError as error:
        raise ImportError(f"Writing {path} needs PyAV: `pip install av` (or s2ca-hf[train]).") from error

    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w", options=container_options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if options:
            stream.options = options
        height, width = first.shape[:2]
        for index, image in enumerate(itertools.chain([first], frames)):
            # The pixels are copied into frame buffers that PyAV owns. `VideoFrame.from_ndarray(array)` can point at
            # the array's memory instead, and a temporary array is freed before the encoder reads the frame: the
            # same frames then gave other bytes from run to run (the flaky same-seed test of the full suite).
            planes = rgb_to_yuv420p(image)
            frame = av.VideoFrame(width, height, "yuv420p")
            chroma = planes[height:].reshape(2, height // 2, width // 2)
            for plane, data in zip(frame.planes, (planes[:height], chroma[0], chroma[1])):
                rows = np.zeros((data.shape[0], plane.line_size), dtype=np.uint8)  # zeroed row padding
                rows[:, : data.shape[1]] = data
                plane.update(rows.tobytes())
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def write_video(path: str, num_frames: int, fps: int = 10, size: int = 48, codec: str = "mpeg4") -> str:
    """Encodes a grey clip with PyAV; frame i has brightness 8 * (i mod 32), so decoded frames can be identified."""
    grey = (np.full((size, size, 3), 8 * (i % 32), dtype=np.uint8) for i in range(num_frames))
    return encode_frames(path, grey, fps, codec)


__all__ = [
    "SAFE_DEMUXERS",
    "open_video",
    "VIDEO_EXTENSIONS",
    "FramePolicy",  # what read_frames takes, so importable from here too
    "VideoDecodeError",
    "VideoFrames",
    "VideoNotFoundError",
    "encode_frames",
    "read_frames",
    "rgb_to_yuv420p",
    "write_video",
]
