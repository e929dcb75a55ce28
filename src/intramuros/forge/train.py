"""LoRA fine-tuning of a GGUF model with PyTorch, resumable from its checkpoints.

The base is the very GGUF the platform serves: transformers dequantises it, so
the adapter learns on the weights llama.cpp will apply it to, and the token
ids are llama.cpp's (the same vocabulary). Only the low-rank pairs train
(float32; CUDA when there is one, else the CPU).

Runs are reproducible by construction, which is what makes resuming exact: the
data order of epoch ``e`` depends only on ``(seed, e)``, so step ``k`` always
trains the same batch; a checkpoint holds everything else that changes (the
adapter, the optimizer and scheduler, the RNG states, the token count). A run
killed after step ``k`` and started again ends with the adapter a run never
interrupted ends with.

PyTorch, transformers and PEFT are the ``forge`` extra: imported inside the
functions that need them, never when this module is imported, so the API
process can import the types without them.

Loss counts on trained tokens only (``Example.train``, the assistant's tokens).
An example with none left after cutting to ``seq_len`` teaches nothing and is
dropped before batching; a training set with none at all is refused
(:class:`~intramuros.errors.InvalidRequest`), since it would "train" nothing.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import random
import threading
import time
import warnings
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from intramuros.errors import ConfigError, InvalidRequest
from intramuros.forge import checkpoints as ckpt
from intramuros.forge.export import TARGETS, check_exportable

if TYPE_CHECKING:
    import torch

FORGE_EXTRA = "Fine-tuning needs the 'forge' extra: pip install 'intramuros[forge]'"
# Every projection of the attention and the MLP: on small models this learns far
# more per step than q/v alone, for a few megabytes of adapter.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_DROPOUT = 0.05
KEEP_CHECKPOINTS = 3
LOSS_WINDOW = 10  # steps averaged into the reported training loss
MAX_GRAD_NORM = 1.0
PAD_ID = 0  # any id: padding is masked out of both attention and loss
CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Example:
    """One tokenised training example.

    ``ids`` are token ids in the GGUF's vocabulary; ``train`` (same length) is
    True where the loss counts (the assistant's tokens). The first token is
    never predicted, so it never counts.
    """

    ids: tuple[int, ...]
    train: tuple[bool, ...]


@dataclass(frozen=True)
class Hyper:
    """The knobs of a run. ``max_steps``, when set, replaces ``epochs`` (Mistral's
    ``training_steps``): the data is cycled through as many epochs as that takes."""

    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: float = 16.0
    seq_len: int = 512
    checkpoint_every: int = 20
    threads: int = 2
    seed: int = 0
    max_steps: int | None = None
    targets: tuple[str, ...] = DEFAULT_TARGETS


class Progress(Protocol):
    """What a run reports to, and asks whether to stop."""

    def on_step(
        self, step: int, total: int, loss: float, tokens_per_second: float, eta_seconds: float
    ) -> None: ...

    def on_checkpoint(self, step: int, path: Path, train_loss: float) -> None: ...

    def should_stop(self) -> bool: ...


class Cancelled(Exception):
    """The run was stopped on request, before a step (no partial checkpoint)."""


@dataclass(frozen=True)
class Metrics:
    """Next-token loss and argmax accuracy over the trained tokens of a set."""

    loss: float
    token_accuracy: float
    tokens: int


@dataclass(frozen=True)
class TrainResult:
    """A finished run: the final adapter and how it went."""

    adapter_dir: Path
    steps: int
    trained_tokens: int
    train_loss: float
    before: Metrics | None
    after: Metrics | None


def library_versions() -> dict[str, str]:
    """The versions of the training stack, for a job's record (missing: not listed)."""
    from importlib import metadata

    versions = {}
    for package in ("torch", "transformers", "peft", "gguf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def train(
    base_gguf: Path,
    examples: Sequence[Example],
    validation: Sequence[Example],
    hyper: Hyper,
    work_dir: Path,
    progress: Progress,
) -> TrainResult:
    """Fine-tune a LoRA adapter on ``examples``; resume from ``work_dir``'s checkpoints.

    Everything cheap is checked before the model loads: the architecture (from
    the GGUF's metadata), the hyperparameters, that there is something to train.
    """
    check_exportable(base_gguf)
    _check_hyper(hyper)
    data = _usable(examples, hyper.seq_len)
    if not data:
        raise InvalidRequest(
            "The training examples have no assistant tokens to learn from "
            f"(within the first {hyper.seq_len} tokens).",
            param="training_file",
        )
    held_out = _usable(validation, hyper.seq_len)
    total = _total_steps(len(data), hyper)
    with _threads(hyper.threads):
        return _Run(base_gguf, data, held_out, hyper, work_dir, progress, total).run()


def evaluate(
    base_gguf: Path, adapter_dir: Path | None, examples: Sequence[Example], hyper: Hyper
) -> Metrics:
    """Loss and token accuracy of the base (with the adapter, if given) on ``examples``."""
    check_exportable(base_gguf)
    data = _usable(examples, hyper.seq_len)
    if not data:
        raise InvalidRequest(
            "The examples have no assistant tokens to evaluate on.", param="validation_file"
        )
    with _threads(hyper.threads):
        return _evaluate(_adapted(base_gguf, adapter_dir), data, hyper.batch_size)


def clear_cache() -> None:
    """Forget the cached base model (it holds the dequantised weights in memory)."""
    with _cache_lock:
        _cache.clear()


# -- the run ---------------------------------------------------------------------


class _Run:
    """One call of :func:`train`: the model, optimizer and bookkeeping it shares."""

    def __init__(
        self,
        base_gguf: Path,
        data: list[Example],
        held_out: list[Example],
        hyper: Hyper,
        work_dir: Path,
        progress: Progress,
        total: int,
    ) -> None:
        self.base_gguf, self.data, self.held_out = base_gguf, data, held_out
        self.hyper, self.progress, self.total = hyper, progress, total
        self.work_dir = work_dir
        self.checkpoints = work_dir / CHECKPOINTS
        self.fingerprint = _fingerprint(base_gguf, data, hyper)
        self.held_out_digest = _digest(held_out)
        self.step = 0
        self.trained_tokens = 0
        self.losses: list[float] = []
        self.before: Metrics | None = None

    def run(self) -> TrainResult:
        torch, _, _ = _forge()
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        ckpt.clear_partial(self.checkpoints)
        ckpt.clear_partial(self.work_dir, "adapter")
        _seed_everything(self.hyper.seed)
        self.device = _device()
        self.model = _with_lora(_base_copy(self.base_gguf), self.hyper).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.hyper.learning_rate, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(_lr_factor, total=self.total)
        )
        latest = ckpt.latest(self.checkpoints)
        if latest is not None:
            self._resume(latest)
        if self.before is None and self.held_out:
            with self.model.disable_adapter():  # the base model's score, even on resume
                self.before = _evaluate(self.model, self.held_out, self.hyper.batch_size)
        self._train()
        after = (
            _evaluate(self.model, self.held_out, self.hyper.batch_size) if self.held_out else None
        )
        adapter_dir = self.work_dir / "adapter"
        ckpt.save_dir(adapter_dir, lambda tmp: _save_adapter(self.model, tmp))
        return TrainResult(
            adapter_dir, self.step, self.trained_tokens, self._train_loss(), self.before, after
        )

    def _train(self) -> None:
        """The steps left, each checked for a stop request first."""
        started, tokens, start_step = time.monotonic(), 0, self.step
        self.model.train()
        while self.step < self.total:
            if self.progress.should_stop():
                raise Cancelled(f"Training stopped before step {self.step + 1} of {self.total}")
            loss, counted, seen = self._one_step(_batch_at(self.step, self.data, self.hyper))
            self.step += 1
            self.trained_tokens += counted
            self.losses = [*self.losses, loss][-LOSS_WINDOW:]
            tokens += seen
            elapsed = max(time.monotonic() - started, 1e-9)
            per_step = elapsed / (self.step - start_step)
            self.progress.on_step(
                self.step, self.total, loss, tokens / elapsed, per_step * (self.total - self.step)
            )
            if self.step % self.hyper.checkpoint_every == 0 or self.step == self.total:
                self._checkpoint()

    def _one_step(self, batch: list[Example]) -> tuple[float, int, int]:
        """One optimizer step on ``batch``: (mean loss, trained tokens, tokens read)."""
        import torch

        inputs = _collate(batch, self.device)
        loss_sum, counted, _ = _token_loss(self.model, *inputs)
        loss = loss_sum / counted
        loss.backward()  # type: ignore[no-untyped-call]
        params = [p for p in self.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), counted, int(inputs[1].sum())

    def _train_loss(self) -> float:
        return sum(self.losses) / len(self.losses) if self.losses else math.nan

    def _checkpoint(self) -> None:
        """Write ``step-N`` whole or not at all, keep the newest few, then say so."""
        path = self.checkpoints / f"step-{self.step}"
        state = {
            "version": ckpt.STATE_VERSION,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "total": self.total,
            "trained_tokens": self.trained_tokens,
            "losses": self.losses,
            "before": asdict(self.before) if self.before else None,
            "before_on": self.held_out_digest,
            "rng": ckpt.rng_state(),
        }
        ckpt.save_dir(path, functools.partial(_write_checkpoint, self, state))
        ckpt.prune(self.checkpoints, KEEP_CHECKPOINTS)
        self.progress.on_checkpoint(self.step, path, self._train_loss())

    def _resume(self, path: Path) -> None:
        """Carry on from the checkpoint at ``path``, exactly where it left off."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((path / ckpt.STATE).read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise InvalidRequest(
                f"'{self.checkpoints}' holds checkpoints of another run (other data, model "
                "or hyperparameters); use a fresh work directory.",
                param="work_dir",
            )
        weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        with _quiet():
            set_peft_model_state_dict(self.model, weights)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        self.step, self.trained_tokens = int(state["step"]), int(state["trained_tokens"])
        self.losses = [float(x) for x in state["losses"]]
        if state["before"] and state.get("before_on") == self.held_out_digest:
            # Kept from the first start: the base's score on this very validation set.
            self.before = Metrics(**state["before"])
        ckpt.set_rng_state(state["rng"], torch.load(path / "torch_rng.pt", weights_only=True))


def _write_checkpoint(run: _Run, state: dict[str, Any], tmp: Path) -> None:
    """The files of one checkpoint, into the not-yet-renamed directory ``tmp``."""
    import torch

    _save_adapter(run.model, tmp / "adapter")
    torch.save(run.optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(run.scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(ckpt.torch_rng(), tmp / "torch_rng.pt")
    (tmp / ckpt.STATE).write_text(json.dumps(state))


# -- data ------------------------------------------------------------------------


def _usable(examples: Sequence[Example], seq_len: int) -> list[Example]:
    """The examples cut to ``seq_len``, less those left with no trained token."""
    kept = []
    for example in examples:
        if len(example.ids) != len(example.train):
            raise InvalidRequest(
                "An example's ids and train mask differ in length", param="training_file"
            )
        cut = Example(example.ids[:seq_len], example.train[:seq_len])
        if any(cut.train[1:]):
            kept.append(cut)
    return kept


def _total_steps(examples: int, hyper: Hyper) -> int:
    if hyper.max_steps is not None:
        return hyper.max_steps
    return math.ceil(examples / hyper.batch_size) * hyper.epochs


def _epoch_order(examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) alone, so a
    resumed run needs no generator state to see the same batches."""
    order = list(range(examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _batch_at(step: int, data: list[Example], hyper: Hyper) -> list[Example]:
    """The batch step ``step`` (0-based) trains on; the last of an epoch may be short."""
    per_epoch = math.ceil(len(data) / hyper.batch_size)
    epoch, index = divmod(step, per_epoch)
    order = _epoch_order(len(data), hyper.seed, epoch)
    return [data[i] for i in order[index * hyper.batch_size : (index + 1) * hyper.batch_size]]


def _collate(
    batch: Sequence[Example], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, targets) padded on the right.

    ``targets[i, t]`` is the token position ``t`` predicts (``ids[t + 1]``), or
    -100 where that token is padding or not trained.
    """
    import torch

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width - 1), -100, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids, dtype=torch.long)
        mask[row, :n] = 1
        trained = torch.tensor(example.train[1:], dtype=torch.bool)
        targets[row, : n - 1] = torch.where(trained, ids[row, 1:n], -100)
    return ids.to(device), mask.to(device), targets.to(device)


def _token_loss(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, int, int]:
    """(summed cross-entropy, trained tokens, correct argmax guesses) of a batch.

    The vocabulary projection runs on the trained positions only: at 49k tokens
    the logits of a whole batch would take gigabytes, most of them never used.
    """
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = targets != -100
    logits = causal.lm_head(hidden[:, :-1][keep])
    wanted = targets[keep]
    loss = torch.nn.functional.cross_entropy(logits.float(), wanted, reduction="sum")
    correct = int((logits.detach().argmax(-1) == wanted).sum())
    return loss, int(keep.sum()), correct


def _evaluate(model: Any, data: list[Example], batch_size: int) -> Metrics:
    """Token-weighted loss and accuracy over ``data``, in eval mode (no dropout)."""
    import torch

    was_training = model.training
    model.eval()
    loss, tokens, correct = 0.0, 0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch_loss, n, right = _token_loss(
                model, *_collate(data[start : start + batch_size], device)
            )
            loss, tokens, correct = loss + float(batch_loss), tokens + n, correct + right
    model.train(was_training)
    return Metrics(loss=loss / tokens, token_accuracy=correct / tokens, tokens=tokens)


# -- the model -------------------------------------------------------------------


_cache: dict[tuple[str, int, int], Any] = {}
_cache_lock = threading.Lock()


def _forge() -> tuple[Any, Any, Any]:
    """(torch, transformers, peft), or the error that says how to install them."""
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(FORGE_EXTRA) from exc
    return torch, transformers, peft


def _device() -> torch.device:
    """CUDA when there is a GPU (much faster), else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _base_copy(base_gguf: Path) -> Any:
    """A private copy of the dequantised base model (loading it takes half a minute;
    copying the cached one, under a second). The cache keeps one model: the file's
    identity includes its size and mtime, so a replaced file is loaded afresh."""
    stat = base_gguf.stat()
    key = (str(base_gguf.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = _load_base(base_gguf)
        return copy.deepcopy(_cache[key])


def _load_base(base_gguf: Path) -> Any:
    """The base model from its GGUF, float32, frozen."""
    torch, transformers, _ = _forge()
    from transformers import modeling_gguf_pytorch_utils

    gguf_utils: Any = modeling_gguf_pytorch_utils

    # The loader draws progress bars on stderr, which in a worker's log are noise.
    bar = functools.partial(gguf_utils.tqdm, disable=True)
    bars = transformers.utils.logging
    shown = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()
    try:
        with _patched(gguf_utils, "tqdm", bar):
            model = transformers.AutoModelForCausalLM.from_pretrained(
                str(base_gguf.parent), gguf_file=base_gguf.name, dtype=torch.float32
            )
    finally:
        if shown:
            bars.enable_progress_bar()
    model.requires_grad_(False)
    return model.eval()


def _adapted(base_gguf: Path, adapter_dir: Path | None) -> Any:
    """The base model with the saved PEFT adapter applied (none: the base alone), in eval
    mode on the training device."""
    _, _, peft = _forge()
    model = _base_copy(base_gguf)
    if adapter_dir is not None:
        with _quiet():
            model = peft.PeftModel.from_pretrained(model, str(adapter_dir))
    return model.to(_device()).eval()


def _with_lora(model: Any, hyper: Hyper) -> Any:
    """``model`` with fresh LoRA pairs on ``hyper.targets`` (A seeded, B zero)."""
    _, _, peft = _forge()
    config = peft.LoraConfig(
        r=hyper.lora_rank,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=LORA_DROPOUT,
        target_modules=list(hyper.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with _quiet():
        return peft.get_peft_model(model, config)


def _save_adapter(model: Any, path: Path) -> None:
    """The adapter's weights and config (the embeddings are not trained: not saved,
    which also spares PEFT looking for a config.json that a GGUF folder lacks)."""
    with _quiet():
        model.save_pretrained(str(path), save_embedding_layers=False)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the library warnings known to be harmless here (warnings fail our tests
    and fill the workers' logs)."""
    with warnings.catch_warnings():
        # transformers deprecates the attribute PEFT still reads when wrapping a model.
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
        )
        yield


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _threads(threads: int) -> Iterator[None]:
    """PyTorch's thread count for the duration (it is process-wide)."""
    torch, _, _ = _forge()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr_factor(step: int, *, total: int) -> float:
    """Linear warm-up over the first tenth (at most 10 steps), then linear decay."""
    warmup = min(10, total // 10)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


# -- reproducibility ---------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fingerprint(base_gguf: Path, data: list[Example], hyper: Hyper) -> str:
    """What a checkpoint must match to be resumed: the model, the data and every knob
    that shapes the result (not the thread count or the checkpoint interval)."""
    knobs = asdict(replace(hyper, threads=0, checkpoint_every=0))
    setup = json.dumps([base_gguf.name, base_gguf.stat().st_size, knobs])
    return _digest(data, setup)


def _digest(examples: list[Example], salt: str = "") -> str:
    """A hash of ``examples`` (and ``salt``)."""
    digest = hashlib.sha256(salt.encode())
    for example in examples:
        digest.update(len(example.ids).to_bytes(4, "little"))
        digest.update(array("q", example.ids).tobytes())
        digest.update(bytes(example.train))
    return digest.hexdigest()


def _check_hyper(hyper: Hyper) -> None:
    """Refuse values no run can use, naming the one at fault."""
    problems = {
        "epochs": hyper.epochs < 1,
        "batch_size": hyper.batch_size < 1,
        "learning_rate": not hyper.learning_rate > 0,
        "lora_rank": hyper.lora_rank < 1,
        "lora_alpha": not hyper.lora_alpha > 0,
        "seq_len": hyper.seq_len < 2,
        "checkpoint_every": hyper.checkpoint_every < 1,
        "threads": hyper.threads < 1,
        "max_steps": hyper.max_steps is not None and hyper.max_steps < 1,
        "targets": not hyper.targets or not set(hyper.targets) <= TARGETS,
    }
    bad = [name for name, wrong in problems.items() if wrong]
    if bad:
        raise InvalidRequest(
            f"Invalid hyperparameter '{bad[0]}': {getattr(hyper, bad[0])!r}",
            param=f"hyperparameters.{bad[0]}",
        )
