"""Forge's trainer and exporter on the real bundled model (SmolLM2-135M, Q4_1 GGUF).

Tiny runs (16 short examples, batches of 4, a few steps) that still prove the
things that matter: training lowers the loss on trained tokens only, a killed
run resumes to the very adapter an uninterrupted one ends with, a stop request
is honoured within a step, and the exported GGUF makes llama.cpp move its
logits the way transformers+PEFT move theirs (which only happens when the
tensor names and the query/key row permutation are right).

The base model loads once (``train`` caches it per file); one training run
(``trained``) serves several tests.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from intramuros.errors import InvalidRequest
from intramuros.forge import export, train
from intramuros.forge.train import Cancelled, Example, Hyper
from tests.conftest import CHAT_MODEL, bundled_file

pytestmark = pytest.mark.slow

HYPER = Hyper(batch_size=4, seq_len=64, max_steps=4, checkpoint_every=2, learning_rate=1e-3)
WORDS = ("zebra", "violet", "copper", "falcon", "maple", "quartz", "ember", "harbor")


class Recorder:
    """A Progress that remembers what it was told, and can stop or crash the run."""

    def __init__(self, stop_after: int | None = None, crash_after: int | None = None) -> None:
        self.steps: list[tuple[int, int, float]] = []
        self.checkpoints: list[tuple[int, Path]] = []
        self.stop_after, self.crash_after = stop_after, crash_after

    def on_step(
        self, step: int, total: int, loss: float, tokens_per_second: float, eta_seconds: float
    ) -> None:
        assert tokens_per_second > 0 and eta_seconds >= 0
        self.steps.append((step, total, loss))

    def on_checkpoint(self, step: int, path: Path, train_loss: float) -> None:
        assert (path / "state.json").is_file()
        self.checkpoints.append((step, path))

    def should_stop(self) -> bool:
        done = self.steps[-1][0] if self.steps else 0
        if self.crash_after is not None and done >= self.crash_after:
            raise RuntimeError("the worker died")  # not Cancelled: a crash
        return self.stop_after is not None and done >= self.stop_after


@pytest.fixture(scope="module")
def base() -> Path:
    return bundled_file(CHAT_MODEL)


@pytest.fixture(scope="module")
def vocab(base: Path) -> Iterator[Any]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(base), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def chat_example(vocab: Any, question: str, answer: str) -> Example:
    """A ChatML exchange, trained on the assistant's answer (and its end marker) only."""
    prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    asked = vocab.tokenize(prompt.encode(), add_bos=False, special=True)
    said = vocab.tokenize(f"{answer}<|im_end|>".encode(), add_bos=False, special=True)
    return Example(tuple(asked + said), (False,) * len(asked) + (True,) * len(said))


@pytest.fixture(scope="module")
def examples(vocab: Any) -> list[Example]:
    return [
        chat_example(
            vocab,
            f"What is the password of vault {i}?",
            f"The password of vault {i} is {WORDS[i % 8]}-{i * 7}.",
        )
        for i in range(16)
    ]


def trained_in(examples: list[Example]) -> int:
    """Tokens the loss counts in ``examples`` (the first token is never predicted)."""
    return sum(sum(e.train[1:]) for e in examples)


@pytest.fixture(scope="module")
def trained(
    base: Path, examples: list[Example], tmp_path_factory: pytest.TempPathFactory
) -> tuple[train.TrainResult, Recorder, Path]:
    """One uninterrupted run: 4 steps of 4 examples (one epoch), validated on its data."""
    work = tmp_path_factory.mktemp("uninterrupted")
    progress = Recorder()
    result = train.train(base, examples, examples, HYPER, work, progress)
    return result, progress, work


def adapter_weights(adapter_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(adapter_dir / "adapter_model.safetensors")))


# -- training ----------------------------------------------------------------------


def test_training_lowers_the_loss_and_counts_trained_tokens(
    trained: Any, examples: list[Example]
) -> None:
    result, progress, work = trained
    assert result.before is not None and result.after is not None
    assert result.after.loss < result.before.loss
    assert result.after.token_accuracy > result.before.token_accuracy
    assert result.before.tokens == result.after.tokens == trained_in(examples)
    # 4 steps x 4 examples = every example once, whatever the shuffle.
    assert result.steps == 4 and result.trained_tokens == trained_in(examples)
    assert [s[:2] for s in progress.steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert progress.steps[-1][2] < progress.steps[0][2]
    assert [step for step, _ in progress.checkpoints] == [2, 4]
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["step-2", "step-4"]
    state = json.loads((work / "checkpoints" / "step-4" / "state.json").read_text())
    assert state["step"] == 4 and state["trained_tokens"] == result.trained_tokens
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert set(train.library_versions()) == {"torch", "transformers", "peft", "gguf"}


def test_loss_counts_only_trained_tokens(
    base: Path, vocab: Any, examples: list[Example], tmp_path: Path
) -> None:
    silent = Example(examples[0].ids, (False,) * len(examples[0].ids))
    # An example with nothing to learn changes nothing: the same tokens, the same loss.
    alone = train.evaluate(base, None, examples[:4], HYPER)
    mixed = train.evaluate(base, None, [silent, *examples[:4], silent], HYPER)
    assert mixed.tokens == alone.tokens == trained_in(examples[:4])
    assert mixed.loss == pytest.approx(alone.loss, rel=1e-5)
    # A set with no trained token at all (here: all cut off by seq_len) is refused.
    long_prompt = chat_example(vocab, "word " * 80, "An answer past the cut.")
    for nothing in ([silent, silent], [long_prompt]):
        with pytest.raises(InvalidRequest, match="no assistant tokens") as caught:
            train.train(base, nothing, [], HYPER, tmp_path, Recorder())
        assert caught.value.param == "training_file"


def test_a_killed_run_resumes_to_the_same_adapter(
    base: Path, examples: list[Example], trained: Any, tmp_path: Path
) -> None:
    uninterrupted, _, _ = trained
    held_out = examples[:4]
    crashing = Recorder(crash_after=3)  # dies before step 4; the last checkpoint is step 2
    with pytest.raises(RuntimeError, match="the worker died"):
        train.train(base, examples, held_out, HYPER, tmp_path, crashing)
    assert [s[0] for s in crashing.steps] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]

    again = Recorder()
    resumed = train.train(base, examples, held_out, HYPER, tmp_path, again)
    assert [s[0] for s in again.steps] == [3, 4]  # from the checkpoint's step on
    assert resumed.steps == 4 and resumed.trained_tokens == uninterrupted.trained_tokens
    # Steps 3 and 4 trained the same batches as the uninterrupted run's, so losses agree.
    assert resumed.train_loss == pytest.approx(uninterrupted.train_loss, rel=1e-4)
    want, got = adapter_weights(uninterrupted.adapter_dir), adapter_weights(resumed.adapter_dir)
    assert want.keys() == got.keys() and len(want) == 30 * 7 * 2
    import torch

    for key, value in want.items():
        assert torch.allclose(got[key], value, rtol=1e-4, atol=1e-6), key
    # "before" is the base model's score, kept from the first start.
    assert resumed.before == train.evaluate(base, None, held_out, HYPER)

    # A finished run started again trains nothing more; asked about another validation
    # set, it scores the base on it with the adapter switched off.
    third = Recorder()
    other = examples[4:8]
    finished = train.train(base, examples, other, HYPER, tmp_path, third)
    assert finished.steps == 4 and third.steps == []
    assert finished.before is not None and finished.after is not None
    base_score = train.evaluate(base, None, other, HYPER)
    assert finished.before.loss == pytest.approx(base_score.loss, rel=1e-5)
    assert finished.after.loss == pytest.approx(
        train.evaluate(base, resumed.adapter_dir, other, HYPER).loss, rel=1e-5
    )


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(
    base: Path, examples: list[Example], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hyper = Hyper(batch_size=4, seq_len=64, max_steps=2, checkpoint_every=1)
    write = train._write_checkpoint

    def dying_at_step_2(run: Any, state: dict[str, Any], tmp: Path) -> None:
        write(run, state, tmp)  # every file written, not yet renamed into place
        if state["step"] == 2:
            raise RuntimeError("killed mid-write")

    monkeypatch.setattr(train, "_write_checkpoint", dying_at_step_2)
    with pytest.raises(RuntimeError, match="mid-write"):
        train.train(base, examples[:4], [], hyper, tmp_path, Recorder())
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-1"]

    # What a hard kill leaves (a temporary directory, a step without its state) is ignored.
    (checkpoints / ".tmp-step-2-dead").mkdir()
    (checkpoints / "step-3").mkdir()
    monkeypatch.setattr(train, "_write_checkpoint", write)
    again = Recorder()
    assert train.train(base, examples[:4], [], hyper, tmp_path, again).steps == 2
    assert [s[0] for s in again.steps] == [2]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-1", "step-2", "step-3"]


def test_a_stop_request_cancels_within_a_step(
    base: Path, examples: list[Example], tmp_path: Path
) -> None:
    hyper = Hyper(batch_size=4, seq_len=64, max_steps=6, checkpoint_every=1)
    progress = Recorder(stop_after=4)
    with pytest.raises(Cancelled):
        train.train(base, examples[:4], [], hyper, tmp_path, progress)
    assert [s[0] for s in progress.steps] == [1, 2, 3, 4]
    assert [step for step, _ in progress.checkpoints] == [1, 2, 3, 4]
    # The newest three checkpoints are kept, and no temporary directory.
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-2", "step-3", "step-4"]


def test_another_run_in_the_same_folder_is_refused(
    base: Path, examples: list[Example], trained: Any
) -> None:
    _, _, work = trained
    with pytest.raises(InvalidRequest, match="another run"):
        train.train(base, examples[:8], [], HYPER, work, Recorder())


def test_an_unsupported_architecture_is_refused_before_loading(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    fake = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(fake), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    def no_loading(path: Path) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(train, "_base_copy", no_loading)
    example = Example((1, 2, 3), (False, True, True))
    with pytest.raises(InvalidRequest, match="cannot fine-tune a 'mamba' model") as caught:
        train.train(fake, [example], [], HYPER, tmp_path / "work", Recorder())
    assert caught.value.param == "model"
    with pytest.raises(InvalidRequest, match="'mamba'"):
        train.evaluate(fake, None, [example], HYPER)
    with pytest.raises(InvalidRequest, match="'mamba'"):
        export.export_lora_gguf(tmp_path, fake, tmp_path / "x.gguf", name="x", license="x")
    with pytest.raises(InvalidRequest) as bad:
        train.train(base, [example], [], Hyper(batch_size=0), tmp_path / "work", Recorder())
    assert bad.value.param == "hyperparameters.batch_size"


# -- export ------------------------------------------------------------------------


def llama_logits(base: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    """llama.cpp's logits at every position of ``ids`` (with the adapter GGUF, if any)."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(base),
        lora_path=str(adapter) if adapter else None,
        n_ctx=128,
        n_threads=2,
        logits_all=True,
        verbose=False,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float64)
    finally:
        llm.close()


def torch_logits(base: Path, ids: list[int], adapter_dir: Path | None = None) -> np.ndarray:
    """transformers' logits (with the PEFT adapter, if any) on the dequantised base."""
    import torch

    model = train._adapted(base, adapter_dir)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return np.asarray(logits.double().numpy())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def adapter_delta_agreement(
    base: Path, ids: list[int], adapter_dir: Path, gguf_path: Path
) -> tuple[float, np.ndarray]:
    """Cosine of the logit change the adapter makes in llama.cpp and in transformers.

    The base runs Q4_1 in llama.cpp (activations quantised too) and dequantised in
    PyTorch, so their logits differ by a little noise: the *changes* are compared.
    """
    in_torch = torch_logits(base, ids, adapter_dir) - base_logits(base, tuple(ids), "torch")
    with_adapter = llama_logits(base, ids, gguf_path)
    in_llama = with_adapter - base_logits(base, tuple(ids), "llama.cpp")
    return cosine(in_torch, in_llama), with_adapter


@functools.cache
def base_logits(base: Path, ids: tuple[int, ...], engine: str) -> np.ndarray:
    """The base model's logits in either engine: computed once per prompt."""
    return llama_logits(base, list(ids)) if engine == "llama.cpp" else torch_logits(base, list(ids))


def test_the_exported_adapter_does_in_llama_cpp_what_it_did_in_training(
    base: Path, examples: list[Example], trained: Any, tmp_path: Path
) -> None:
    result, _, _ = trained
    dest = export.export_lora_gguf(
        result.adapter_dir, base, tmp_path / "ft.gguf", name="ft:test", license="Apache-2.0"
    )
    assert dest == tmp_path / "ft.gguf" and [p.name for p in tmp_path.iterdir()] == ["ft.gguf"]
    import gguf

    reader = gguf.GGUFReader(str(dest))
    fields = {
        k: reader.fields[k].contents()
        for k in ("general.type", "adapter.type", "adapter.lora.alpha", "general.name")
    }
    assert fields == {
        "general.type": "adapter",
        "adapter.type": "lora",
        "adapter.lora.alpha": HYPER.lora_alpha,
        "general.name": "ft:test",
    }
    assert len(reader.tensors) == 30 * 7 * 2

    example = examples[5]
    ids = list(example.ids)
    agreement, with_adapter = adapter_delta_agreement(base, ids, result.adapter_dir, dest)
    print(f"trained adapter: logit changes agree at cosine {agreement:.3f}")
    assert agreement > 0.9
    # In llama.cpp too, the adapter predicts the trained answer better than the base.
    answer = [t for t in range(len(ids) - 1) if example.train[t + 1]]
    wanted = np.array([ids[t + 1] for t in answer])
    tuned = (with_adapter[answer].argmax(-1) == wanted).mean()
    plain = (base_logits(base, tuple(ids), "llama.cpp")[answer].argmax(-1) == wanted).mean()
    assert tuned > plain


def test_query_and_key_rows_are_permuted_for_llama_cpp(
    base: Path, examples: list[Example], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter on q/k only, with a strong random update: right only if permuted."""
    import torch

    torch.manual_seed(1)
    model = train._with_lora(train._base_copy(base), Hyper(targets=("q_proj", "k_proj")))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    train._save_adapter(model, tmp_path / "qk")
    ids = list(examples[5].ids)
    path = export.export_lora_gguf(
        tmp_path / "qk", base, tmp_path / "qk.gguf", name="qk", license="Apache-2.0"
    )
    right, _ = adapter_delta_agreement(base, ids, tmp_path / "qk", path)
    print(f"q/k adapter: logit changes agree at cosine {right:.3f} (permuted)")
    assert right > 0.9
    monkeypatch.setattr(export, "PERMUTED", frozenset())
    path = export.export_lora_gguf(
        tmp_path / "qk", base, tmp_path / "qk.gguf", name="qk", license="Apache-2.0"
    )
    wrong, _ = adapter_delta_agreement(base, ids, tmp_path / "qk", path)
    print(f"q/k adapter: logit changes agree at cosine {wrong:.3f} (not permuted)")
    assert wrong < 0.5


def test_a_failed_export_leaves_nothing(
    base: Path, trained: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, _ = trained
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        export.export_lora_gguf(
            result.adapter_dir, base, blocker / "ft.gguf", name="x", license="x"
        )
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]

    # Dying half-way through the write: the previous file stays, no temporary is left.
    dest = tmp_path / "ft.gguf"
    dest.write_bytes(b"the previous adapter")

    def half_written(path: Path, *args: Any, **kwargs: Any) -> None:
        path.write_bytes(b"GGUF partial")
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write", half_written)
    with pytest.raises(OSError, match="disk full"):
        export.export_lora_gguf(result.adapter_dir, base, dest, name="x", license="x")
    assert dest.read_bytes() == b"the previous adapter"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "ft.gguf"]


def test_an_adapter_that_does_not_fit_the_base_is_refused(
    base: Path, trained: Any, tmp_path: Path
) -> None:
    from safetensors.numpy import save_file

    result, _, _ = trained
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{prefix}.lora_A.weight": np.zeros((8, 100), dtype=np.float32),
            f"{prefix}.lora_B.weight": np.zeros((576, 8), dtype=np.float32),
        },
        str(adapter / "adapter_model.safetensors"),
    )
    with pytest.raises(InvalidRequest, match="do not fit"):
        export.export_lora_gguf(adapter, base, tmp_path / "x.gguf", name="x", license="x")
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(InvalidRequest, match="use_dora"):
        export.export_lora_gguf(adapter, base, tmp_path / "x.gguf", name="x", license="x")
    assert not (tmp_path / "x.gguf").exists()
