"""s2ca-hf: S2CA text-video retrieval (shared concept prototypes, concept-level alignment) for Hugging Face.

Importing the package registers `S2CAConfig`, `S2CAModel`, `S2CAVideoProcessor` and `S2CAProcessor` with the Auto
classes and the `"video-text-retrieval"` pipeline, so `AutoModel.from_pretrained(folder)` and
`pipeline("video-text-retrieval", model=folder)` work without `trust_remote_code` for pip users. It also registers
them for auto classes, so every `save_pretrained` / `push_to_hub` writes the model code and an `auto_map` next to
the weights: any saved folder loads with `trust_remote_code=True` where the package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, AutoVideoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_s2ca import S2CAConfig
from .modeling_s2ca import (
    S2CAConceptOutput,
    S2CAEncoderOutput,
    S2CAModel,
    S2CAOutput,
    S2CAPreTrainedModel,
)
from .pipeline_s2ca import TASK as PIPELINE_TASK
from .pipeline_s2ca import VideoTextRetrievalPipeline
from .processing_s2ca import S2CAProcessor
from .video_processing_s2ca import S2CAVideoProcessor


__version__ = "0.1.0"

AutoConfig.register("s2ca", S2CAConfig, exist_ok=True)
AutoModel.register(S2CAConfig, S2CAModel, exist_ok=True)
AutoVideoProcessor.register(S2CAConfig, S2CAVideoProcessor, exist_ok=True)
AutoProcessor.register(S2CAConfig, S2CAProcessor, exist_ok=True)


def register_pipeline() -> None:
    """Registers `VideoTextRetrievalPipeline` for the task `"video-text-retrieval"` (done at import).

    `pt_model=AutoModel`, not `S2CAModel`: `Pipeline.save_pretrained` writes the class *names* into the config's
    `custom_pipelines`, and a process without `s2ca_hf` resolves them as `transformers.<name>`, where only the
    Auto classes exist.
    """
    registered = PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK, {}).get("impl")
    if registered is not VideoTextRetrievalPipeline:  # registering again would only log an "overwriting" warning
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK, pipeline_class=VideoTextRetrievalPipeline, pt_model=AutoModel, type="multimodal"
        )


register_pipeline()


def register_for_auto_class() -> None:
    """Makes `save_pretrained` write Hub custom code: the model files next to the weights and an `auto_map`, so that
    `AutoModel` / `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` load the folder where `s2ca_hf` is
    not installed."""
    S2CAConfig.register_for_auto_class()
    S2CAModel.register_for_auto_class("AutoModel")
    S2CAVideoProcessor.register_for_auto_class("AutoVideoProcessor")
    S2CAProcessor.register_for_auto_class("AutoProcessor")
    # The pipeline has no `register_for_auto_class`: its registration is what makes `Pipeline.save_pretrained`
    # copy `pipeline_s2ca.py` and write `custom_pipelines` (see `training/push_to_hub.py`).
    register_pipeline()


register_for_auto_class()

__all__ = [
    "S2CAConceptOutput",
    "S2CAConfig",
    "S2CAEncoderOutput",
    "S2CAModel",
    "S2CAOutput",
    "S2CAPreTrainedModel",
    "S2CAProcessor",
    "S2CAVideoProcessor",
    "VideoTextRetrievalPipeline",
    "__version__",
    "register_for_auto_class",
    "register_pipeline",
]
