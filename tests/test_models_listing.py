"""`/v1/models` in both official SDKs' shapes (the app in-process, fake-engine models)."""

from __future__ import annotations

from tests.inprocess import FAKE_CHAT, FAKE_EMBED, InProcessApp


def test_model_cards_parse_as_mistral_and_openai_cards(app: InProcessApp) -> None:
    from mistralai.client.models import BaseModelCard, ModelList
    from openai.types import Model

    r = app.client("user").get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    listing = ModelList.model_validate(body)
    cards = {card.id: card for card in listing.data or []}
    # Mistral's SDK reads each card as a base model card, not as its "unknown" fallback.
    assert all(isinstance(card, BaseModelCard) for card in cards.values()), cards
    chat, embed = cards[FAKE_CHAT], cards[FAKE_EMBED]
    assert isinstance(chat, BaseModelCard) and isinstance(embed, BaseModelCard)
    assert chat.capabilities.completion_chat and chat.capabilities.function_calling
    assert not embed.capabilities.completion_chat
    assert chat.max_context_length == 2048
    for raw in body["data"]:
        openai_card = Model.model_validate(raw)
        assert openai_card.object == "model" and openai_card.owned_by == "intramuros"
        assert isinstance(raw["intramuros"], dict)  # provenance, beside both shapes
    one = app.client("user").get(f"/v1/models/{FAKE_CHAT}").json()
    assert BaseModelCard.model_validate(one).id == FAKE_CHAT
