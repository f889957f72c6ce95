"""Corpora, the frame cache and the built-in synthetic corpus (needs the `train` extra: `datasets`, PyAV). Video
decoding is `s2ca_hf.video_io` and the frame policy `s2ca_hf.frame_policy`. The model files never import this package;
it is not pushed to the Hub."""

from .cache import FrameCache, build_frame_cache, default_cache_dir
from .collator import VideoTextCollator, max_positives
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
from .own_data import load_pairs
from .sampler import GroupBatchSampler
from .synthetic import ensure_synthetic_corpus, generate_synthetic_corpus


__all__ = [
    "CORPORA",
    "CorpusFormatError",
    "FrameCache",
    "GroupBatchSampler",
    "MissingVideosError",
    "VideoTextCollator",
    "max_positives",
    "build_frame_cache",
    "corpus_info",
    "corpus_videos",
    "default_cache_dir",
    "ensure_synthetic_corpus",
    "generate_synthetic_corpus",
    "load_corpus",
    "load_pairs",
    "msvd_youtube_id",
    "reindex_videos",
]
