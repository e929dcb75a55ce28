"""Read a GGUF file's header metadata without loading the model.

Only the key/value section is parsed (no tensors), so describing a 10 GB
model costs a few milliseconds. Large arrays (the tokenizer's vocabulary) are
skipped, not kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from intramuros.errors import InvalidRequest

GGUF_MAGIC = b"GGUF"

# llama.cpp's `llama_ftype` enum: the predominant quantisation of the tensors.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0",
}  # fmt: skip

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9
# Arrays longer than this are skipped (vocabularies, merges): we only want scalars.
_KEEP_ARRAY_MAX = 64
# No sane header string is this long; a larger length means a corrupt file.
_MAX_STRING = 64 * 1024 * 1024


@dataclass(frozen=True)
class GGUFInfo:
    """What the catalogue wants to know from a GGUF header."""

    version: int
    architecture: str | None
    context_length: int | None
    quantization: str | None
    name: str | None
    license: str | None
    has_chat_template: bool
    metadata: dict[str, Any]


class _Reader:
    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def take(self, n: int) -> bytes:
        data = self.fh.read(n)
        if len(data) != n:
            raise ValueError("unexpected end of file")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.scalar("<Q")
        if length > _MAX_STRING:
            raise ValueError(f"string length {length} is implausible")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.scalar("<I")
            count = self.scalar("<Q")
            if count <= _KEEP_ARRAY_MAX:
                return [self.value(item_type) for _ in range(count)]
            self.skip_array(item_type, count)
            return None
        raise ValueError(f"unknown GGUF value type {vtype}")

    def skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            self.fh.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)
            return
        for _ in range(count):
            self.value(item_type)


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse ``path``'s GGUF header.

    Raises ``InvalidRequest`` (param ``path``) when the file is not GGUF or is
    truncated: the operator gave us the wrong file.
    """
    try:
        with path.open("rb") as fh:
            reader = _Reader(fh)
            if reader.take(4) != GGUF_MAGIC:
                raise ValueError("not a GGUF file (bad magic number)")
            version = reader.scalar("<I")
            if version not in (2, 3):
                raise ValueError(f"unsupported GGUF version {version}")
            reader.scalar("<Q")  # tensor count
            kv_count = reader.scalar("<Q")
            if kv_count > 1_000_000:
                raise ValueError(f"implausible metadata count {kv_count}")
            metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = reader.string()
                metadata[key] = reader.value(reader.scalar("<I"))
    except (ValueError, struct.error, OSError) as exc:
        raise InvalidRequest(f"{path.name}: cannot read GGUF header: {exc}", param="path") from None

    arch = metadata.get("general.architecture")
    ctx = metadata.get(f"{arch}.context_length") if arch else None
    ftype = metadata.get("general.file_type")
    return GGUFInfo(
        version=version,
        architecture=arch,
        context_length=int(ctx) if isinstance(ctx, int) else None,
        quantization=FILE_TYPES.get(ftype) if isinstance(ftype, int) else None,
        name=metadata.get("general.name"),
        license=metadata.get("general.license"),
        has_chat_template="tokenizer.chat_template" in metadata,
        metadata=metadata,
    )
