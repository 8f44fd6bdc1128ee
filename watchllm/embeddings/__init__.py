"""Sentence-embedding providers for the semantic cache.

`LocalEmbedder` runs all-MiniLM-L6-v2 on the CPU with numpy (extra
``watchllm[local-embeddings]``); it is imported lazily so that the gateway does
not need numpy unless the semantic cache uses the local model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from watchllm.embeddings.local import LocalEmbedder, ModelUnavailable

__all__ = ["LocalEmbedder", "ModelUnavailable"]
LOCAL_MODEL = "all-minilm-l6-v2"  # LocalEmbedder.name, known without importing numpy


def __getattr__(name: str) -> Any:
    if name in __all__:
        from watchllm.embeddings import local

        return getattr(local, name)
    raise AttributeError(name)
