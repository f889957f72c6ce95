"""Corpora, video decoding, the frame cache and the built-in synthetic corpus (needs the `train` extra: `datasets`,
PyAV). The model files never import this package; it is not pushed to the Hub."""

from ..frame_policy import FramePolicy
from ..video_io import VideoDecodeError, VideoFrames, VideoNotFoundError, read_frames
from .cache import FrameCache, build_frame_cache, default_cache_dir
from .collator import VideoTextCollator
from .corpora import (
    CORPORA,
    CorpusFormatError,
    MissingVideosError,
    corpus_info,
    corpus_videos,
    load_corpus,
    msvd_youtube_id,
    reindex_videos,
)
from .synthetic import ensure_synthetic_corpus, generate_synthetic_corpus


__all__ = [
    "CORPORA",
    "CorpusFormatError",
    "FrameCache",
    "FramePolicy",
    "MissingVideosError",
    "VideoDecodeError",
    "VideoFrames",
    "VideoNotFoundError",
    "VideoTextCollator",
    "build_frame_cache",
    "corpus_info",
    "corpus_videos",
    "default_cache_dir",
    "ensure_synthetic_corpus",
    "generate_synthetic_corpus",
    "load_corpus",
    "msvd_youtube_id",
    "read_frames",
    "reindex_videos",
]
