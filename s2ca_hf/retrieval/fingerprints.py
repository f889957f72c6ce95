"""What identifies the vectors of an index: the model (config and weight hashes), the frame policy, the text side.

A model may search an index only if its vectors are comparable with the stored ones; `check_model` and
`check_text_side` refuse it otherwise, with a message that says what differs.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from ..utils import sha256_json
from .errors import ModelMismatchError


# Config keys that do not change the vectors (bookkeeping, output switches, the load dtype, which is recorded on
# its own): left out of the config hash so that re-saving a checkpoint with another transformers does not refuse it.
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "architectures",
        "dtype",
        "torch_dtype",
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation_autoset",
        "auto_map",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "use_cache",
    }
)


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_volatile(v) for k, v in value.items() if k not in _VOLATILE_CONFIG_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip_volatile(v) for v in value]
    return value


def config_hash(config) -> str:
    """sha256 of the model config without bookkeeping keys: equal configs give equal vectors for equal weights."""
    return sha256_json(_strip_volatile(config.to_dict()))


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer of the state dict (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(model, name_or_path: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """What the manifest records about the model; `config_sha256`, `weights_sha256` and `dimension` must match
    for a model to search the index."""
    config = model.config
    name_or_path = name_or_path or getattr(config, "_name_or_path", None) or None
    if name_or_path and os.path.isdir(name_or_path):
        name_or_path = os.path.abspath(name_or_path)
    return {
        "name_or_path": name_or_path,
        "revision": revision or getattr(config, "_commit_hash", None),
        "class": type(model).__name__,
        "config_sha256": config_hash(config),
        "weights_sha256": weights_hash(model),
        "dimension": int(config.embedding_dim),
        "projection_dim": int(config.projection_dim),  # D: psi's first D values are the instance feature
    }


def frame_policy(processor) -> dict[str, Any]:
    """Which frames are read (`FramePolicy`) and how their pixels are made (resize, crop, scaling), JSON-ready."""
    video_processor = getattr(processor, "video_processor", processor)
    return {**video_processor.frame_policy.to_dict(), **video_processor.pixel_settings()}


def text_settings(processor) -> dict[str, Any]:
    """What turns a query into phi besides the weights: the tokenizer's vocabulary (and merges) and the processor's
    text settings. The manifest records them, so that a search with another tokenizer or `max_text_length`, whose
    queries would rank differently, is refused."""
    tokenizer = getattr(processor, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)  # vocabulary, merges, normaliser: the whole pipeline
    if backend is not None:
        described = hashlib.sha256(backend.to_str().encode()).hexdigest()
    else:
        described = sha256_json(sorted(tokenizer.get_vocab().items()) if tokenizer is not None else [])
    return {
        "tokenizer_class": type(tokenizer).__name__,
        "tokenizer_sha256": described,
        "max_text_length": getattr(processor, "max_text_length", None),
    }


def check_text_side(manifest: dict[str, Any], processor, what: str = "this index") -> None:
    recorded = manifest.get("text")
    if recorded is None or processor is None:  # an index built before text settings were recorded
        return
    given = text_settings(processor)
    different = [key for key in recorded if recorded[key] != given.get(key)]
    if different:
        details = ", ".join(f"{key} {given.get(key)!r} instead of {recorded[key]!r}" for key in different)
        raise ModelMismatchError(
            f"The processor's text side differs from the one {what} was built with ({details}): its queries would "
            "rank differently. Use the processor saved with the model, or build a new index."
        )


def check_model(manifest: dict[str, Any], fingerprint: dict[str, Any], what: str = "this index") -> None:
    """Refuses a model whose vectors are not comparable with the index's: another dimension, config or weights."""
    expected = manifest["model"]
    source = expected.get("name_or_path") or "an unnamed model"
    given = fingerprint.get("name_or_path") or "the given model"
    if fingerprint["dimension"] != expected["dimension"]:
        raise ModelMismatchError(
            f"{given} gives {fingerprint['dimension']}-dimensional vectors but {what} holds "
            f"{expected['dimension']}-dimensional ones from {source}: build a new index with this model."
        )
    if fingerprint["config_sha256"] != expected["config_sha256"]:
        raise ModelMismatchError(
            f"The config of {given} (hash {fingerprint['config_sha256'][:12]}) is not the config {what} was built "
            f"with ({source}, hash {expected['config_sha256'][:12]}): its vectors would not be comparable. Use "
            "that model, or build a new index with this one."
        )
    if fingerprint["weights_sha256"] != expected["weights_sha256"]:
        raise ModelMismatchError(
            f"The weights of {given} (hash {fingerprint['weights_sha256'][:12]}) are not those {what} was built "
            f"with ({source}, hash {expected['weights_sha256'][:12]}): same architecture, different checkpoint. "
            "Use that checkpoint, or build a new index with this one."
        )


__all__ = [
    "check_model",
    "check_text_side",
    "config_hash",
    "frame_policy",
    "model_fingerprint",
    "text_settings",
    "weights_hash",
]
