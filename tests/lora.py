"""LoRA adapter GGUFs for tests, written with the ``gguf`` package.

An adapter is llama.cpp's format: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted weight
``W`` (ggml shape ``[n_in, n_out]``) a pair ``W.lora_a`` (``[n_in, r]``) and
``W.lora_b`` (``[r, n_out]``). Random low-rank updates, seeded: each seed
gives an adapter that changes what the model writes, the same way every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ADAPTED = ("attn_q", "attn_v", "ffn_down")


def make_lora(base: Path, dest: Path, *, seed: int, rank: int = 8, strength: float = 0.06,
              architecture: str | None = None, wrong_shape: bool = False) -> Path:  # fmt: skip
    """A LoRA adapter for the GGUF model ``base`` at ``dest``.

    ``architecture`` overrides the one written (to make a mismatched adapter);
    ``wrong_shape`` gives the update matrices a width the model does not have.
    """
    import gguf

    reader = gguf.GGUFReader(str(base))
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    writer = gguf.GGUFWriter(str(dest), architecture or arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    writer.add_name(f"test adapter {seed}")
    writer.add_license("apache-2.0")
    rng = np.random.default_rng(seed)
    for tensor in reader.tensors:
        if not tensor.name.endswith(".weight") or tensor.name.split(".")[-2] not in ADAPTED:
            continue
        n_in, n_out = (int(x) for x in tensor.shape[:2])
        if wrong_shape:
            n_in += 1
        a = rng.standard_normal((rank, n_in)).astype(np.float32) * strength
        b = rng.standard_normal((n_out, rank)).astype(np.float32) * strength
        writer.add_tensor(tensor.name + ".lora_a", a)
        writer.add_tensor(tensor.name + ".lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest
