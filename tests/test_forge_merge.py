"""The adapter merged into its base (a standalone GGUF), and the task score, on the real
bundled 135M model and llama.cpp, with a random adapter (no training: fast)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from intramuros.catalog.records import ModelRecord
from intramuros.errors import InvalidRequest
from intramuros.forge import evaluate
from intramuros.forge.merge import merge_gguf
from intramuros.settings import Settings, load_settings

BASE = "smollm2-135m-instruct"
ADAPTED = ("blk.0.attn_q.weight", "blk.3.ffn_down.weight", "blk.7.attn_v.weight")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, ModelRecord]]:
    from intramuros.catalog.catalog import Catalog
    from intramuros.store.db import Database

    settings = load_settings(data_dir=tmp_path_factory.mktemp("merge"))
    db = Database(settings.resolved_database_url())
    db.migrate()
    catalog = Catalog(db, settings)
    catalog.sync_bundled()
    yield settings, catalog.get(BASE)
    db.close()


def _adapter(base: Path, dest: Path, *, std: float = 0.05,
             names: tuple[str, ...] = ADAPTED) -> Path:  # fmt: skip
    """A rank-8 LoRA adapter GGUF with random pairs for ``names``."""
    import gguf

    shapes = {t.name: (int(t.shape[0]), int(t.shape[1])) for t in gguf.GGUFReader(str(base)).tensors
              if t.name in names}  # fmt: skip
    rng = np.random.default_rng(7)
    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 16.0)
    for name in names:
        n_in, n_out = shapes.get(name, (576, 576))
        a, b = rng.standard_normal((8, n_in)) * std, rng.standard_normal((n_out, 8)) * std
        writer.add_tensor(f"{name}.lora_a", a.astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", b.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def _logits(path: Path, lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=64,
                n_threads=2, logits_all=True, verbose=False)  # fmt: skip
    try:
        llm.eval(llm.tokenize(b"The capital of France is Paris, and the capital of Italy is"))
        return np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
    finally:
        llm.close()


@pytest.mark.slow
def test_the_merged_gguf_is_the_base_with_the_update(installed: tuple[Settings, ModelRecord],
                                                      tmp_path: Path) -> None:  # fmt: skip
    import gguf

    base = installed[1].weights_path()
    assert base is not None
    adapter = _adapter(base, tmp_path / "adapter.gguf", std=0.15)
    merged = merge_gguf(base, adapter, tmp_path / "merged.gguf", name="ft:x:y:z:merged")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    old, new = gguf.GGUFReader(str(base)), gguf.GGUFReader(str(merged))
    # Every key kept (the vocabulary, the chat template), the name the new model's.
    assert set(old.fields) == set(new.fields)
    for key in ("tokenizer.ggml.tokens", "tokenizer.chat_template", "llama.context_length"):
        assert old.fields[key].contents() == new.fields[key].contents()
    assert new.fields["general.name"].contents() == "ft:x:y:z:merged"
    before = {t.name: t for t in old.tensors}
    pairs = {t.name: gguf.quants.dequantize(t.data, t.tensor_type)
             for t in gguf.GGUFReader(str(adapter)).tensors}  # fmt: skip
    for tensor in new.tensors:
        was = before[tensor.name]
        if tensor.name not in ADAPTED:
            assert tensor.tensor_type == was.tensor_type
            assert np.array_equal(np.asarray(tensor.data), np.asarray(was.data)), tensor.name
            continue
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
        a, b = pairs[f"{tensor.name}.lora_a"], pairs[f"{tensor.name}.lora_b"]
        want = gguf.quants.dequantize(was.data, was.tensor_type) + 16.0 / 8 * (b @ a)
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert np.abs(got - want).max() < 0.02 * np.abs(want).max(), tensor.name
    # llama.cpp reads it, and it computes what the base with the adapter computes. Not to
    # the last digit: a weight stored as another type changes how llama.cpp rounds the
    # activations it multiplies (about 0.1-0.3 in the logits for the same weights).
    plain, with_adapter, standalone = _logits(base), _logits(base, adapter), _logits(merged)
    moved = np.abs(with_adapter - plain).mean()
    assert moved > 1.0
    assert np.abs(standalone - with_adapter).mean() < moved / 5


def test_an_adapter_that_does_not_fit_is_refused_and_nothing_is_written(
        installed: tuple[Settings, ModelRecord], tmp_path: Path) -> None:  # fmt: skip
    base = installed[1].weights_path()
    assert base is not None
    stranger = _adapter(base, tmp_path / "a.gguf", names=("blk.99.attn_q.weight",))
    with pytest.raises(InvalidRequest, match="does not have"):
        merge_gguf(base, stranger, tmp_path / "m.gguf", name="m")
    with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
        merge_gguf(base, base, tmp_path / "m.gguf", name="m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf"]


def test_the_task_items_come_from_a_suite_or_the_scored_lines() -> None:
    tasks = evaluate.tasks_for("transaction_category", [], 5)
    assert tasks is not None and tasks.source == "suite:transaction_category"
    assert len(tasks.items) == 5 and tasks.sha256 is not None and len(tasks.sha256) == 64
    line = {"id": "3", "messages": [{"role": "user", "content": "2+2?"}], "scorer": "numeric",
            "expected": 4}  # fmt: skip
    mine = evaluate.tasks_for(None, [line] * 3, 2)
    assert mine is not None and mine.source == "validation_file" and len(mine.items) == 2
    assert evaluate.tasks_for(None, [], 10) is None
    params = evaluate.chat_params(tasks.items[0])
    assert params.sampling.temperature == 0 and params.sampling.seed == evaluate.SEED
    assert params.response_format["type"] == "json_schema"
    assert params.response_format["schema"]["required"] == ["category"]


@pytest.mark.slow
def test_the_base_and_the_adapter_are_scored_on_the_same_items(
        installed: tuple[Settings, ModelRecord], tmp_path: Path) -> None:  # fmt: skip
    settings, base = installed
    weights = base.weights_path()
    assert weights is not None
    adapter = _adapter(weights, tmp_path / "adapter.gguf", std=0.2)
    tuned = base.model_copy(update={"name": "ft:t", "path": str(adapter), "base": BASE})
    tasks = evaluate.tasks_for("transaction_category", [], 4)
    assert tasks is not None
    score = evaluate.score_models(base, tuned, settings, tasks, lambda: False)
    assert score.items == 4 and 0 <= score.before <= 1 and 0 <= score.after <= 1
    assert score.to_wire()["source"] == "suite:transaction_category"
    # A cancel between items stops the scoring.
    with pytest.raises(evaluate.Stopped):
        evaluate.score_models(base, tuned, settings, tasks, lambda: True)
