"""Video processor for S2CA: CLIP4Clip's frame sampling and CLIP's resize, crop and normalisation.

The frame policy follows CLIP4Clip (`RawVideoExtractorCV2` and its loaders): read the first frame of every second at
the integer frame rate, keep at most `max_frames` of them by head, tail or uniform slicing (the first and the last
frame kept), and zero-pad the rest with `frame_mask` 0. X-Pool's "exactly N frames" policy is the alternative.

The index functions below are plain Python so that the corpus loaders and the frame cache (`s2ca_hf.data`) apply
the same policy as the processor.
"""

import os

import torch
from transformers import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import VideosKwargs
from transformers.utils import is_av_available
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata


if is_av_available():
    import av


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
        return xpool_frame_indices(num_video_frames, max_frames)
    if fps is None:
        candidates = list(range(num_video_frames))
    else:
        candidates = clip4clip_frame_indices(num_video_frames, fps, sample_fps, start_time, end_time)
    return [candidates[i] for i in slice_frame_positions(len(candidates), max_frames, slice_framepos)]


def decode_video_frames(path: str, sample_indices_fn) -> tuple[torch.Tensor, VideoMetadata]:
    """Decodes the frames `sample_indices_fn(metadata=...)` picks from a video file with PyAV: `(n, H, W, 3)` uint8.

    Raises `FileNotFoundError` for a missing file and `ValueError` naming the file for anything PyAV cannot read
    (corrupt, truncated, not a video, no frames); errors can surface mid-stream, so the whole decode is wrapped.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Video file not found: {path}")
    if not is_av_available():
        raise ImportError(f"Decoding {path} needs PyAV: `pip install av` (or `pip install s2ca-hf[train]`).")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
            num_frames = stream.frames
            if not num_frames:  # some containers do not record a frame count: count the packets
                num_frames = sum(1 for packet in container.demux(stream) if packet.size)
                container.seek(0)
            metadata = VideoMetadata(
                total_num_frames=int(num_frames),
                fps=fps,
                duration=num_frames / fps if fps else None,
                video_backend="pyav",
                height=stream.height,
                width=stream.width,
            )
            indices = [int(i) for i in sample_indices_fn(metadata=metadata)]
            wanted = set(indices)
            decoded = {}
            last = max(indices, default=-1)
            for position, frame in enumerate(container.decode(stream)):
                if position > last:
                    break
                if position in wanted:
                    decoded[position] = torch.from_numpy(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise ValueError(f"Could not decode video {path}: {error}") from error
    found = [i for i in indices if i in decoded]
    if not found:
        raise ValueError(f"Could not decode video {path}: no frame could be read.")
    # A container that claims more frames than it holds gives fewer frames; keep those that exist, in order.
    metadata.frames_indices = found
    return torch.stack([decoded[i] for i in found]), metadata


def _all_frames(metadata: VideoMetadata, **kwargs) -> list[int]:
    return list(range(metadata.total_num_frames))


class S2CAVideoProcessorKwargs(VideosKwargs, total=False):
    max_frames: int
    sample_fps: int
    slice_framepos: str
    frame_sampling: str


EXPECTED_VIDEO = (
    "a file path, or decoded frames of shape (num_frames, height, width, 3) or (num_frames, 3, height, width)"
)


def _check_video_inputs(videos) -> None:
    """A clear error for inputs that would otherwise fail deep inside transformers (an `IndexError`)."""
    shape = getattr(videos, "shape", None)
    if shape is not None and len(shape) == 5:  # one array holding a batch of videos
        videos = list(videos)
    elif shape is not None:
        videos = [videos]
    if not isinstance(videos, (list, tuple)) or len(videos) == 0:
        raise ValueError(
            f"`videos` is empty or not a list: give one video or a list of videos, each {EXPECTED_VIDEO}."
        )
    for index, video in enumerate(videos):
        if isinstance(video, (str, os.PathLike)) or (isinstance(video, (list, tuple)) and video):
            continue  # a path, or a list of frames (checked when they are converted)
        if isinstance(video, (bytes, bytearray)):
            raise ValueError(
                f"Video {index} of the batch is bytes: write it to a file, give its path; expected {EXPECTED_VIDEO}."
            )
        shape = getattr(video, "shape", None)
        if shape is None or len(shape) != 4:
            got = "no shape" if shape is None else f"shape {tuple(shape)}"
            raise ValueError(f"Video {index} of the batch has {got}; expected {EXPECTED_VIDEO}.")
        if 3 not in (shape[1], shape[-1]):
            raise ValueError(
                f"Video {index} of the batch has shape {tuple(shape)}: frames need 3 colour channels (RGB); for RGBA "
                "frames drop the alpha channel (frames[..., :3])."
            )


def _checked_pixel_range(video: torch.Tensor, index: int) -> torch.Tensor:
    """Frames on the 0-255 scale, or a clear error; never a silently wrong vector.

    Integer frames must lie in [0, 255]. Float frames must be finite; float frames whose values all lie in [0, 1]
    are taken to be on the 0-1 scale (as `torchvision.transforms.ToTensor` gives them) and multiplied by 255, since
    rescaling them again would make them black; other float frames must lie in [0, 255].
    """
    if video.numel() == 0:
        return video
    if video.is_floating_point():
        if not torch.isfinite(video).all():
            raise ValueError(f"Video {index} of the batch has NaN or infinite pixel values.")
        low, high = float(video.min()), float(video.max())
        if low >= 0.0 and high <= 1.0:
            return video * 255.0
    else:
        low, high = int(video.min()), int(video.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"Video {index} of the batch has pixel values in [{low}, {high}]; frames must be on the 0-255 scale "
            "(uint8), or floats in [0, 1] or [0, 255]."
        )
    return video


class S2CAVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into `pixel_values_videos` `(V, max_frames, 3, 224, 224)` and `frame_mask` `(V, max_frames)`.

    Input: a video file path (decoded with PyAV), or decoded frames (an array or tensor `(n, H, W, 3)` or
    `(n, 3, H, W)` per video). Frames: shorter side resized to 224 (bicubic), centre crop 224, CLIP mean/std.

    Args:
        max_frames (`int`, *optional*, defaults to 12):
            The number of frame slots per video (12 for MSR-VTT and MSVD, 64 for DiDeMo and ActivityNet).
        sample_fps (`int`, *optional*, defaults to 1):
            Frames read per second of a video file (CLIP4Clip's `feature_framerate`).
        slice_framepos (`str`, *optional*, defaults to `"uniform"`):
            How a video with more than `max_frames` sampled frames is cut: `"head"`, `"tail"`, or `"uniform"`
            (`linspace(0, n - 1, max_frames)`, first and last frame kept). Shorter videos keep every frame and are
            zero-padded with `frame_mask` 0: nothing is duplicated.
        frame_sampling (`str`, *optional*, defaults to `"clip4clip"`):
            `"clip4clip"` as above; `"xpool"` always gives exactly `max_frames` frames, the middle frame of
            `max_frames` equal segments, repeating the last frame of a short video (every slot real).

    Decoded frames may be uint8, or floats in [0, 1] (multiplied by 255 first) or in [0, 255]; values outside those
    ranges or NaN raise an error naming the video. Decoded frames given without `video_metadata` are taken to be
    sampled already (one per second, as the frame
    cache holds them): only the slicing applies. With metadata that gives their `fps`, they are sampled per second
    as a file would be.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    default_to_square = False
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    max_frames = 12
    sample_fps = 1
    slice_framepos = "uniform"
    frame_sampling = "clip4clip"
    valid_kwargs = S2CAVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "frame_mask"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_frame_policy(self.max_frames, self.sample_fps, self.slice_framepos, self.frame_sampling)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        max_frames: int | None = None,
        sample_fps: int | None = None,
        slice_framepos: str | None = None,
        frame_sampling: str | None = None,
        **kwargs,
    ) -> list[int]:
        indices = select_frame_indices(
            metadata.total_num_frames,
            metadata.fps,
            max_frames=max_frames or self.max_frames,
            sample_fps=sample_fps or self.sample_fps,
            slice_framepos=slice_framepos or self.slice_framepos,
            frame_sampling=frame_sampling or self.frame_sampling,
        )
        if not indices:
            raise ValueError("A video has no frames.")
        return indices

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        # transformers decides "paths or frames" from the first video alone; a batch may mix both, so paths are
        # decoded here, one by one, with PyAV (not torchcodec, which needs system FFmpeg libraries).
        if isinstance(videos, (str, os.PathLike)):
            videos = [videos]
        _check_video_inputs(videos)
        if not (isinstance(videos, (list, tuple)) and any(isinstance(v, (str, os.PathLike)) for v in videos)):
            return super()._decode_and_sample_videos(videos, video_metadata, do_sample_frames, sample_indices_fn)
        if not do_sample_frames:
            sample_indices_fn = _all_frames
        elif sample_indices_fn is None:
            sample_indices_fn = self.sample_frames
        decoded, metadata = [], []
        for index, video in enumerate(videos):
            item_metadata = video_metadata[index] if isinstance(video_metadata, (list, tuple)) else None
            if isinstance(video, (str, os.PathLike)):
                frames, meta = decode_video_frames(os.fspath(video), sample_indices_fn)
            else:
                frames, meta = super()._decode_and_sample_videos(
                    [video], None if item_metadata is None else [item_metadata], do_sample_frames, sample_indices_fn
                )
                frames, meta = frames[0], meta[0]
            decoded.append(frames)
            metadata.append(meta)
        return decoded, metadata

    def _preprocess(self, videos: list[torch.Tensor], return_tensors=None, max_frames: int | None = None, **kwargs):
        max_frames = max_frames or self.max_frames
        videos = [_checked_pixel_range(video, index) for index, video in enumerate(videos)]
        for index, video in enumerate(videos):
            if video.shape[0] == 0:
                raise ValueError(f"Video {index} of the batch has no frames.")
            if video.shape[0] > max_frames:
                raise ValueError(
                    f"Video {index} of the batch has {video.shape[0]} frames, more than `max_frames={max_frames}`; "
                    "sample its frames (`do_sample_frames=True`) or raise `max_frames`."
                )
        frames = super()._preprocess(videos, return_tensors=None, **kwargs)["pixel_values_videos"]
        # Zero padding in normalised space with frame_mask 0, as CLIP4Clip pads.
        pixel_values = frames[0].new_zeros(len(frames), max_frames, *frames[0].shape[1:])
        frame_mask = torch.zeros(len(frames), max_frames, dtype=torch.long)
        for index, video in enumerate(frames):
            pixel_values[index, : video.shape[0]] = video
            frame_mask[index, : video.shape[0]] = 1
        data = {"pixel_values_videos": pixel_values, "frame_mask": frame_mask}
        if return_tensors is None:
            data = {key: list(value) for key, value in data.items()}
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = [
    "S2CAVideoProcessor",
    "check_frame_policy",
    "clip4clip_frame_indices",
    "decode_video_frames",
    "select_frame_indices",
    "slice_frame_positions",
    "xpool_frame_indices",
]
