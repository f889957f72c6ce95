"""Video processor for S2CA: CLIP4Clip's frame sampling and CLIP's resize, crop and normalisation.

The frame policy follows CLIP4Clip (`RawVideoExtractorCV2` and its loaders): read the first frame of every second at
the integer frame rate, keep at most `max_frames` of them by head, tail or uniform slicing (the first and the last
frame kept), and zero-pad the rest with `frame_mask` 0. X-Pool's "exactly N frames" policy is the alternative.

The policy itself (`FramePolicy`, its index functions) lives in `frame_policy.py` and the decoder (`read_frames`,
which seeks over groups of pictures it does not need) in `video_io.py`, both shared with the corpus loaders, the
frame cache and the index.
"""

import json
import os
import tempfile

import torch
from transformers import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling
from transformers.processing_utils import VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .frame_policy import FramePolicy, check_frame_policy, select_frame_indices
from .video_io import VideoDecodeError, read_frames


# The fields that decide the pixels of a frame: up to the crop (what the frame cache stores), then the scaling.
RESIZE_FIELDS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_convert_rgb")
SCALING_FIELDS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


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
    max_frames = FramePolicy.max_frames
    sample_fps = FramePolicy.sample_fps
    slice_framepos = FramePolicy.slice_framepos
    frame_sampling = FramePolicy.frame_sampling
    valid_kwargs = S2CAVideoProcessorKwargs
    model_input_names = ["pixel_values_videos", "frame_mask"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_frame_policy(self.max_frames, self.sample_fps, self.slice_framepos, self.frame_sampling)

    def preprocess(self, videos, **kwargs) -> BatchFeature:
        """transformers' `VideosKwargs` mapped onto the CLIP4Clip policy: `num_frames=N` is `max_frames=N` (at most N
        frames, or exactly N with X-Pool), `fps=r` is `sample_fps=r` (whole frames per second, CLIP4Clip only);
        `do_pad` has no meaning here (videos are always padded to `max_frames` with `frame_mask` 0) and is refused."""
        num_frames, fps = kwargs.pop("num_frames", None), kwargs.pop("fps", None)
        if kwargs.pop("do_pad", None) is not None:
            raise ValueError("`do_pad` is not an option of S2CAVideoProcessor: videos are always padded to "
                             "`max_frames` with `frame_mask` 0.")  # fmt: skip
        if num_frames is not None:
            if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
                raise ValueError(f"`num_frames` must be an integer >= 1 (it sets `max_frames`), got {num_frames!r}.")
            if kwargs.get("max_frames") not in (None, num_frames):
                raise ValueError(
                    f"`num_frames={num_frames}` and `max_frames={kwargs['max_frames']}` disagree: give one."
                )
            kwargs["max_frames"] = num_frames
        if fps is not None:
            if (kwargs.get("frame_sampling") or self.frame_sampling) == "xpool":
                raise ValueError("`fps` has no meaning with `frame_sampling='xpool'` (exactly `max_frames` frames of "
                                 "equal segments): give `num_frames`.")  # fmt: skip
            if not (isinstance(fps, (int, float)) and float(fps).is_integer() and fps >= 1):
                raise ValueError(f"`fps` must be a whole number of frames per second >= 1 (it sets `sample_fps`, "
                                 f"CLIP4Clip's per-second sampling), got {fps!r}.")  # fmt: skip
            if kwargs.get("sample_fps") not in (None, int(fps)):
                raise ValueError(f"`fps={fps}` and `sample_fps={kwargs['sample_fps']}` disagree: give one.")
            kwargs["sample_fps"] = int(fps)
        return super().preprocess(videos, **kwargs)

    @property
    def frame_policy(self) -> FramePolicy:
        """Which frames this processor keeps (`FramePolicy`), as everything that decodes for it must apply it."""
        return FramePolicy.from_processor(self)

    def pixel_settings(self, scaling: bool = True) -> dict:
        """The fields that decide a frame's pixels, JSON-ready: the resize and crop, and with `scaling` also the
        rescale and normalisation (the frame cache stores frames before scaling)."""
        fields = self.to_dict()
        keys = RESIZE_FIELDS + (SCALING_FIELDS if scaling else ())
        return json.loads(json.dumps({key: fields.get(key) for key in keys}, sort_keys=True, default=_json_value))

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
                frames, meta = _read_video_file(os.fspath(video), self.frame_policy, sample_indices_fn)
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


def _all_frames(metadata: VideoMetadata, **kwargs) -> list[int]:
    return list(range(metadata.total_num_frames))


def _json_value(value):
    return int(value) if hasattr(value, "__int__") else str(value)


URL_TIMEOUT_S = 30.0  # the longest wait for any one read of a video URL
# Whole-download limits, so that a huge or dripping answer ends with a clear error instead of filling the disk or
# never returning; set S2CA_URL_DEADLINE_S / S2CA_URL_MAX_BYTES in the environment to change them.
URL_DEADLINE_S = float(os.environ.get("S2CA_URL_DEADLINE_S", 300))
URL_MAX_BYTES = int(os.environ.get("S2CA_URL_MAX_BYTES", 512 * 2**20))


def _download(url: str, folder: str) -> str:
    """Fetches a video URL into `folder` (as transformers' own video loading accepts URLs), under a fixed name so
    that the URL's extension never chooses the demuxer. A URL that does not answer, answers with an error, sends
    more than `URL_MAX_BYTES` or takes longer than `URL_DEADLINE_S` in all raises a `ValueError` naming it."""
    import time
    import urllib.error
    import urllib.request

    target = os.path.join(folder, "video")
    deadline = time.monotonic() + URL_DEADLINE_S
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response, open(target, "wb") as handle:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > URL_MAX_BYTES:
                raise ValueError(f"it is {int(declared)} bytes, more than the {URL_MAX_BYTES} allowed")
            while block := response.read1(1 << 20):  # what one read gives: the deadline is checked between reads
                size += len(block)
                if size > URL_MAX_BYTES:
                    raise ValueError(f"it sent more than the {URL_MAX_BYTES} bytes allowed")
                if time.monotonic() > deadline:
                    raise ValueError(f"it took more than {URL_DEADLINE_S:g} s in all ({size} bytes received)")
                handle.write(block)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ValueError(f"Could not fetch video {url}: {reason}") from None
    return target


def _read_video_file(path: str, policy: FramePolicy, sample_indices_fn) -> tuple[torch.Tensor, VideoMetadata]:
    """The frames `sample_indices_fn(metadata=...)` (transformers' sampling hook) picks from a file, decoded by
    `read_frames` (the one decoder: it seeks over what it does not need), and their metadata."""

    def select(num_frames: int, fps: float) -> list[int]:
        duration = num_frames / fps
        return sample_indices_fn(
            metadata=VideoMetadata(total_num_frames=num_frames, fps=fps, duration=duration, video_backend="pyav")
        )

    if path.startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory(prefix="s2ca-video-") as folder:  # removed on every way out
            try:
                clip = read_frames(_download(path, folder), policy, select=select)
            except VideoDecodeError as error:  # name the URL, not the temporary file
                raise VideoDecodeError(path, error.reason) from None
    else:
        clip = read_frames(path, policy, select=select)
    frames = clip.real_frames
    metadata = VideoMetadata(
        total_num_frames=clip.num_video_frames,
        fps=clip.fps,
        duration=clip.num_video_frames / clip.fps,
        video_backend="pyav",
        height=int(frames.shape[1]),
        width=int(frames.shape[2]),
        frames_indices=list(clip.frame_indices),
    )
    return torch.from_numpy(frames), metadata


__all__ = ["S2CAVideoProcessor", "select_frame_indices"]
