"""Processor for S2CA: the CLIP tokenizer and `S2CAVideoProcessor` in one object."""

from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin


TEXT_KWARGS = ("padding", "truncation", "pad_to_multiple_of", "add_special_tokens")


class S2CAProcessor(ProcessorMixin):
    r"""
    Pairs a CLIP tokenizer with an [`S2CAVideoProcessor`]. `processor(text=..., videos=..., return_tensors="pt")`
    returns exactly the keyword arguments of `S2CAModel.forward`: `input_ids`, `attention_mask`,
    `pixel_values_videos` and `frame_mask`.

    Args:
        video_processor ([`S2CAVideoProcessor`]): frame sampling, resizing and normalisation.
        tokenizer ([`CLIPTokenizer`]): the CLIP BPE tokenizer.
        max_text_length (`int`, *optional*, defaults to 32):
            Texts are truncated to this many tokens, start and end-of-text included (32 words for MSR-VTT and
            MSVD, 64 for the DiDeMo and ActivityNet paragraphs; CLIP's limit is 77). End-of-text is always kept.

    Example:

    ```python
    >>> inputs = processor(text=["a man is cooking"], videos=["clip.mp4"], return_tensors="pt")
    >>> sorted(inputs.keys())
    ['attention_mask', 'frame_mask', 'input_ids', 'pixel_values_videos']
    ```
    """

    def __init__(self, video_processor=None, tokenizer=None, max_text_length: int = 32, **kwargs):
        if max_text_length < 2:
            raise ValueError(f"`max_text_length` must be >= 2 (start and end-of-text tokens), got {max_text_length}.")
        self.max_text_length = max_text_length
        super().__init__(video_processor, tokenizer, **kwargs)

    def __call__(self, text=None, videos=None, return_tensors=None, max_length: int | None = None, **kwargs):
        """Tokenizes `text` (a string or a list) and/or processes `videos` (paths or decoded frames).

        Tokenizer arguments (`padding`, `truncation`, `pad_to_multiple_of`, `add_special_tokens`) go to the
        tokenizer, whether or not videos are given; every other keyword goes to the video processor."""
        if text is None and videos is None:
            raise ValueError("S2CAProcessor needs `text`, `videos`, or both.")
        text_kwargs = {key: kwargs.pop(key) for key in TEXT_KWARGS if key in kwargs}
        video_kwargs = kwargs
        if text is None and text_kwargs:
            raise ValueError(f"{sorted(text_kwargs)} apply to `text`, and no text was given.")
        data = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not all(isinstance(item, str) for item in texts):
                raise TypeError("`text` must be a string or a list of strings.")
            encoded = self.tokenizer(
                texts,
                **{"padding": True, "truncation": True, **text_kwargs},
                max_length=max_length or self.max_text_length,
                return_attention_mask=True,
            )
            data["input_ids"] = encoded["input_ids"]
            data["attention_mask"] = encoded["attention_mask"]
        if videos is not None:
            data.update(self.video_processor(videos, return_tensors=return_tensors, **video_kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    @classmethod
    def from_clip(
        cls, clip_name_or_path: str, max_text_length: int = 32, tokenizer_kwargs: dict | None = None, **video_kwargs
    ) -> "S2CAProcessor":
        """The tokenizer of a CLIP checkpoint (Hub id or local folder) with a new `S2CAVideoProcessor`.

        `video_kwargs` set the frame policy (`max_frames=64`, `frame_sampling="xpool"`, ...), to pair with
        `S2CAModel.from_clip`.
        """
        from transformers import AutoTokenizer

        from .video_processing_s2ca import S2CAVideoProcessor

        tokenizer = AutoTokenizer.from_pretrained(clip_name_or_path, **(tokenizer_kwargs or {}))
        return cls(S2CAVideoProcessor(**video_kwargs), tokenizer, max_text_length=max_text_length)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "frame_mask"]


__all__ = ["S2CAProcessor"]
