"""Model backends: one small protocol, an embedded `transformers` implementation, a result cache."""

from inversecoder.core.backends.base import (
    Backend,
    BackendInfo,
    CachedModel,
    Completion,
    GenerationRequest,
    SamplingParams,
    YesNoScore,
    make_backend,
    open_model,
)

__all__ = [
    "Backend",
    "BackendInfo",
    "CachedModel",
    "Completion",
    "GenerationRequest",
    "SamplingParams",
    "YesNoScore",
    "make_backend",
    "open_model",
]
