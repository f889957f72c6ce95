"""The errors of the video index: every one says which file or request is wrong and what to do."""


class VideoIndexError(ValueError):
    """The index folder, its source of videos or a request against it is not usable; the message says why."""


class ModelMismatchError(VideoIndexError):
    """The model is not the one the index was built with (dimension, config hash or weights)."""


class EmptyCollectionError(VideoIndexError):
    """The source of videos holds no video file."""


__all__ = ["EmptyCollectionError", "ModelMismatchError", "VideoIndexError"]
