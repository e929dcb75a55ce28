"""A fine-tuned model as one standalone GGUF: the LoRA update merged into its base.

An adapter is served on its base's loaded weights; a merged GGUF is a model of
its own, for an engine or a machine without adapters, and it spends no compute
on the low-rank product at every step. Each adapted weight ``W`` of the base is
dequantised, ``W + alpha / rank * B @ A`` is computed in float32 (``A`` and
``B`` read from the llama.cpp adapter GGUF, so in llama.cpp's row order
already), and stored re-quantised: as Q8_0, or as F16/F32 when the base held it
so. Q8_0 rather than the base's own 4-bit type, because the update of a short
fine-tune is often smaller than a 4-bit quantisation step, and would be rounded
away. Every other tensor and all the metadata (vocabulary, chat template) are
copied as they are; ``general.name`` is the new model's.

Needs ``gguf`` and ``numpy`` only; one weight is dequantised at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from intramuros.errors import InvalidRequest
from intramuros.fsutil import atomic_path

if TYPE_CHECKING:
    import numpy as np

# Keys the writer sets itself (counts and version) or that we set (the name).
_OWN_KEYS = ("GGUF.", "general.architecture", "general.name")


def merge_gguf(base_gguf: Path, adapter_gguf: Path, dest: Path, *, name: str) -> Path:
    """Write ``base_gguf`` with the LoRA ``adapter_gguf`` merged in, atomically, at ``dest``."""
    import gguf

    base = gguf.GGUFReader(str(base_gguf))
    pairs, scale = _adapter(adapter_gguf)
    arch = str(base.fields["general.architecture"].contents())
    unknown = sorted(set(pairs) - {t.name for t in base.tensors})
    if unknown:
        raise InvalidRequest(f"The adapter changes tensors the base does not have: "
                             f"{', '.join(unknown[:5])}", param="adapter")  # fmt: skip
    with atomic_path(dest) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        try:
            for key, field in base.fields.items():
                if key.startswith(_OWN_KEYS):
                    continue
                sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
                writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
            writer.add_name(name)
            for tensor in base.tensors:
                if tensor.name in pairs:
                    a, b = pairs[tensor.name]
                    data, kind = _merged(tensor, a, b, scale)
                    writer.add_tensor(tensor.name, data, raw_dtype=kind)
                else:
                    writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return dest


def _adapter(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """The (A, B) pairs by base tensor name, and the scale alpha / rank."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    if reader.fields.get("adapter.type") is None or (
            reader.fields["adapter.type"].contents() != "lora"):  # fmt: skip
        raise InvalidRequest(f"'{path.name}' is not a LoRA adapter GGUF", param="adapter")
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    found: dict[str, dict[str, Any]] = {}
    for tensor in reader.tensors:
        weight, _, part = tensor.name.rpartition(".")
        if part not in ("lora_a", "lora_b"):
            raise InvalidRequest(f"Unexpected adapter tensor '{tensor.name}'", param="adapter")
        found.setdefault(weight, {})[part] = gguf.quants.dequantize(tensor.data,
                                                                    tensor.tensor_type)
    ranks = {pair["lora_a"].shape[0] for pair in found.values() if "lora_a" in pair}
    if not found or any(set(p) != {"lora_a", "lora_b"} for p in found.values()) or len(ranks) != 1:
        raise InvalidRequest(f"'{path.name}' does not hold complete pairs of one rank",
                             param="adapter")  # fmt: skip
    return ({w: (p["lora_a"], p["lora_b"]) for w, p in found.items()}, alpha / ranks.pop())


def _merged(tensor: Any, a: np.ndarray, b: np.ndarray, scale: float) -> tuple[np.ndarray, Any]:
    """The weight with its update, re-quantised, and the type it is stored as."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType
    weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    if weight.shape != (b.shape[0], a.shape[1]):
        raise InvalidRequest(f"The adapter's {b.shape[0]} x {a.shape[1]} update does not fit "
                             f"'{tensor.name}' ({weight.shape})", param="adapter")  # fmt: skip
    weight += scale * (b.astype(np.float32) @ a.astype(np.float32))
    keep = {kind.F32: kind.F32, kind.F16: kind.F16, kind.BF16: kind.F16}
    target = keep.get(tensor.tensor_type, kind.Q8_0)
    if target == kind.Q8_0 and weight.shape[-1] % 32:  # Q8_0 packs rows in blocks of 32
        target = kind.F16
    return gguf.quants.quantize(weight, target), target
