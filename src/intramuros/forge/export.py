"""A PEFT LoRA adapter turned into the GGUF adapter llama.cpp applies at serving time.

llama.cpp's adapter format: ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha``, and for each adapted weight ``W`` of the base GGUF a pair
``W.lora_a`` (numpy shape ``(rank, n_in)``) and ``W.lora_b`` (``(n_out, rank)``).
llama.cpp scales the update by ``alpha / rank``, PEFT by ``lora_alpha / r``: the
alpha is carried over unchanged, so both apply the same update.

Two things make this more than renaming tensors. The names: transformers'
``model.layers.N.self_attn.q_proj`` is llama.cpp's ``blk.N.attn_q``. And the
row order of the query and key projections: llama.cpp's converter permutes
their rows (rotary embedding pairs laid out its own way) and transformers'
GGUF loader undoes that when it loads the base we train on, so an update
learnt in transformers' order gets the converter's permutation again here.

Needs only ``gguf``, ``numpy`` and ``safetensors`` (no PyTorch): exporting is
cheap and may run outside the training worker.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from intramuros.errors import InvalidRequest
from intramuros.fsutil import atomic_path

if TYPE_CHECKING:
    import numpy as np

# What we know how to export: llama.cpp's name of each transformers projection,
# and the architectures whose tensor layout (and row permutation) we handle.
GGUF_NAMES: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TARGETS: frozenset[str] = frozenset(name.split(".")[1] for name in GGUF_NAMES)
ARCHITECTURES: frozenset[str] = frozenset({"llama"})
# The projections whose rows llama.cpp's converter permutes, for the llama architecture.
PERMUTED = frozenset({"attn_q", "attn_k"})

_PEFT_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
_WEIGHTS = "adapter_model.safetensors"
# PEFT options that llama.cpp's adapters have no equivalent for.
_UNEXPORTABLE = (
    "use_dora",
    "use_rslora",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "trainable_token_indices",
)
_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF says about itself before its weights: the scalar metadata (arrays,
    such as the vocabulary, are skipped) and each tensor's shape, in ggml order."""

    fields: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture") or "")


def read_header(path: Path) -> GGUFHeader:
    """The header of the GGUF at ``path``, read without touching its weights.

    Parsed here rather than with ``gguf.GGUFReader``, which builds an array for every
    token of the vocabulary: four seconds per call on a 49k-token model, against a
    few milliseconds for the values we need.
    """
    try:
        with open(path, "rb") as handle:
            return _parse_header(handle)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"'{path.name}' is not a GGUF model", param="model") from exc


def _parse_header(handle: BinaryIO) -> GGUFHeader:
    magic, version = handle.read(4), _unpack(handle, "<I")
    if magic != b"GGUF" or version not in (2, 3):  # v1 and big-endian files: not llama.cpp's now
        raise ValueError(f"not a little-endian GGUF v2/v3 (magic {magic!r}, version {version})")
    tensors, entries = _unpack(handle, "<Q"), _unpack(handle, "<Q")
    fields: dict[str, Any] = {}
    for _ in range(entries):
        key = _string(handle)
        kind = _unpack(handle, "<I")
        if kind == _ARRAY:
            _skip_array(handle)
        else:
            fields[key] = _value(handle, kind)
    shapes = {}
    for _ in range(tensors):
        name = _string(handle)
        dims = _unpack(handle, "<I")
        if dims > _MAX_DIMS:
            raise ValueError(f"tensor '{name}' has {dims} dimensions")
        shapes[name] = struct.unpack(f"<{dims}Q", handle.read(8 * dims))
        handle.read(12)  # the type (uint32) and the data offset (uint64)
    return GGUFHeader(fields, shapes)


# GGUF value types (the spec's numbering): struct formats of the fixed-size ones.
_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 8  # ggml has 4
_MAX_STRING = 1 << 24  # the longest metadata strings (chat templates) are kilobytes


def _unpack(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("the file ends inside its header")
    return struct.unpack(fmt, data)[0]


def _string(handle: BinaryIO) -> str:
    length = _unpack(handle, "<Q")
    if length > _MAX_STRING:  # a corrupt length would have us allocate it whole
        raise ValueError(f"a {length}-byte string in the header")
    data = handle.read(length)
    if len(data) != length:
        raise ValueError("the file ends inside its header")
    return data.decode("utf-8")


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(handle)
    if kind not in _FORMATS:
        raise ValueError(f"unknown GGUF value type {kind}")
    return _unpack(handle, _FORMATS[kind])


def _skip_array(handle: BinaryIO) -> None:
    kind, count = _unpack(handle, "<I"), _unpack(handle, "<Q")
    if kind == _STRING:
        for _ in range(count):
            handle.seek(_unpack(handle, "<Q"), os.SEEK_CUR)
    elif kind == _ARRAY:
        for _ in range(count):
            _skip_array(handle)
    elif kind in _FORMATS:
        handle.seek(count * struct.calcsize(_FORMATS[kind]), os.SEEK_CUR)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def check_exportable(base_gguf: Path) -> str:
    """The base model's architecture, refused unless we can export an adapter for it.

    Checked from the GGUF's metadata before anything heavy loads, so an
    unsupported model fails in milliseconds, not after a minute of loading.
    """
    return _exportable(read_header(base_gguf))


def _exportable(header: GGUFHeader) -> str:
    arch = header.architecture
    if arch not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise InvalidRequest(
            f"Forge cannot fine-tune a '{arch or 'unknown'}' model: LoRA adapters can be "
            f"exported for these architectures only: {supported}.",
            param="model",
        )
    return arch


def export_lora_gguf(
    adapter_dir: Path, base_gguf: Path, dest: Path, *, name: str, license: str
) -> Path:
    """Write the PEFT adapter in ``adapter_dir`` as a llama.cpp LoRA GGUF at ``dest``.

    ``base_gguf`` is the model it was trained on (its architecture, head counts
    and tensor shapes are checked against the adapter). Atomic: the file is
    written beside ``dest`` and renamed, so ``dest`` is either the whole adapter
    or untouched, and nothing is left behind on any error.
    """
    header = read_header(base_gguf)
    arch = _exportable(header)
    config = _peft_config(adapter_dir)
    pairs = _gguf_pairs(adapter_dir / _WEIGHTS)
    for weight, (a, b) in pairs.items():
        _check_shapes(weight, a, b, header.shapes)
    heads = _head_counts(header)
    tensors = {
        weight: (a, _permute_rows(b, weight, *heads) if _suffix(weight) in PERMUTED else b)
        for weight, (a, b) in sorted(pairs.items())
    }
    with atomic_path(dest) as tmp:
        _write(tmp, arch, tensors, alpha=float(config["lora_alpha"]), name=name, license=license)
    return dest


def _peft_config(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's PEFT config, refused where llama.cpp's single scale cannot match it."""
    try:
        config: dict[str, Any] = json.loads((adapter_dir / _CONFIG).read_text())
    except FileNotFoundError as exc:
        raise InvalidRequest(f"No PEFT adapter in '{adapter_dir}'", param="adapter") from exc
    unsupported = [key for key in _UNEXPORTABLE if config.get(key)]
    if config.get("peft_type") != "LORA":
        unsupported.append(f"peft_type {config.get('peft_type')}")
    if config.get("bias", "none") != "none":
        unsupported.append(f"bias {config.get('bias')}")
    if unsupported:
        # llama.cpp applies one alpha/rank scale to plain low-rank pairs, nothing else.
        raise InvalidRequest(
            f"This adapter cannot be exported to llama.cpp: {', '.join(unsupported)}",
            param="adapter",
        )
    return config


def _gguf_pairs(weights: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The adapter's (A, B) pairs by the llama.cpp name of the weight they adapt."""
    from safetensors.numpy import load_file

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(weights)).items():
        match = _PEFT_KEY.search(key)
        module = match and f"{match[2]}.{match[3]}"
        if match is None or module not in GGUF_NAMES:
            raise InvalidRequest(f"Cannot export the adapter tensor '{key}'", param="adapter")
        weight = f"blk.{match[1]}.{GGUF_NAMES[module]}.weight"
        pairs.setdefault(weight, {})[match[4]] = value
    incomplete = sorted(w for w, pair in pairs.items() if set(pair) != {"A", "B"})
    if incomplete:
        raise InvalidRequest(f"Adapter pairs incomplete for {incomplete}", param="adapter")
    return {w: (pair["A"], pair["B"]) for w, pair in pairs.items()}


def _suffix(weight: str) -> str:
    """``attn_q`` for ``blk.3.attn_q.weight``."""
    return weight.split(".")[-2]


def _head_counts(header: GGUFHeader) -> tuple[int, int]:
    """(query heads, key/value heads), which the q/k row permutation depends on."""
    arch = header.architecture
    n_head = int(header.fields[f"{arch}.attention.head_count"])
    n_head_kv = header.fields.get(f"{arch}.attention.head_count_kv", n_head)
    return n_head, int(n_head_kv)


def _permute_rows(b: np.ndarray, weight: str, n_head: int, n_head_kv: int) -> np.ndarray:
    """B's rows in llama.cpp's order: the converter's permutation of q (k: by kv heads).

    Permuting the rows of B permutes the rows of the update B @ A exactly as the
    converter permuted the base weight's, so the update lands on the same units.
    """
    heads = n_head if _suffix(weight) == "attn_q" else n_head_kv
    rows = b.shape[0]
    if rows % (2 * heads):
        raise InvalidRequest(
            f"'{weight}' has {rows} rows, not a multiple of 2 x {heads} heads", param="adapter"
        )
    return b.reshape(heads, 2, rows // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def _check_shapes(
    weight: str, a: np.ndarray, b: np.ndarray, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Refuse an adapter that does not fit the base: llama.cpp would refuse it at load."""
    if weight not in shapes:
        raise InvalidRequest(f"The base model has no tensor '{weight}'", param="adapter")
    n_in, n_out = shapes[weight][:2]  # ggml order: input width first
    pair = a.ndim == b.ndim == 2 and a.shape[0] == b.shape[1]
    if not pair or (a.shape[1], b.shape[0]) != (n_in, n_out):
        raise InvalidRequest(
            f"Adapter shapes {a.shape} x {b.shape} do not fit '{weight}' ({n_out} x {n_in})",
            param="adapter",
        )


def _write(
    path: Path,
    arch: str,
    tensors: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    alpha: float,
    name: str,
    license: str,
) -> None:
    """The adapter GGUF itself (float32 tensors: a rank-8 adapter is a few megabytes)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(name)
        writer.add_license(license)
        for weight, (a, b) in tensors.items():
            writer.add_tensor(f"{weight}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
            writer.add_tensor(f"{weight}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
