"""Unit tests of the docai API's own logic: data URLs, pages, attribution, repair, jobs."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from intramuros.docai import pipeline
from intramuros.docai import protocol as dp
from intramuros.docai.extract import check_schema, locate, repair, spellings
from intramuros.docai.pipeline import DocumentResult, PageImage, PageResult
from intramuros.docai.sources import decode_data_url, page_list, to_response
from intramuros.errors import InvalidRequest
from intramuros.files.errors import BadDocument, FileTooLarge, RemoteURLRefused

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def _url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def test_data_urls() -> None:
    assert decode_data_url(_url("image/png", PNG), param="p", images_only=True,
                           max_bytes=1000) == ("image/png", PNG)  # fmt: skip
    spaced = "data:image/PNG;base64," + " \n".join(base64.b64encode(PNG).decode())
    assert decode_data_url(spaced, param="p", images_only=False, max_bytes=1000)[1] == PNG
    with pytest.raises(RemoteURLRefused):
        decode_data_url("s3://bucket/x.pdf", param="p", images_only=False, max_bytes=10)
    with pytest.raises(FileTooLarge):
        decode_data_url(_url("image/png", PNG * 100), param="p", images_only=False,
                        max_bytes=100)  # fmt: skip
    for bad in ("data:image/png;base64,%%%", "data:;base64,AAAA", "nonsense",
                _url("image/jpeg", PNG), _url("application/zip", b"PK\x03\x04")):  # fmt: skip
        with pytest.raises(BadDocument):
            decode_data_url(bad, param="p", images_only=False, max_bytes=1000)


def test_page_lists() -> None:
    assert page_list(None, 10) is None
    assert page_list(3, 10) == [3]
    assert page_list([4, 1, 4], 10) == [1, 4]
    assert page_list("0,2-4", 10) == [0, 2, 3, 4]
    for bad in ([], [-1], "a", "3-1", list(range(11))):
        with pytest.raises(InvalidRequest):
            page_list(bad, 10)


def test_spellings_and_locate() -> None:
    assert "35,70" in spellings(35.7) and "1,234.50" in spellings(1234.5)
    pages = ["Cover letter", "Total due: **1.234,50 EUR**\n| IBAN | DE89 3704 0044 0532 0130 00 |"]
    found = locate({"total": 1234.5, "iban": "DE89370400440532013000", "made_up": "Zorglub",
                    "items": [{"cur": "eur"}], "flag": True, "none": None}, pages)  # fmt: skip
    assert found == {"total": 1, "iban": 1, "made_up": None, "items[0].cur": 1}
    # A short value counts only as a whole word.
    assert locate({"sex": "F", "n": 12}, ["Fee 125", "Sex: F, 12 items"]) == {"sex": 1, "n": 1}


def test_repair_uses_the_only_match_of_a_pattern() -> None:
    schema = {"type": "object", "properties": {
        "iban": {"anyOf": [{"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"},
                           {"type": "null"}]},
        "ref": {"type": "string", "pattern": "^R-[0-9]{4}$"},
        "name": {"type": "string"},
    }}  # fmt: skip
    fields: dict[str, Any] = {"iban": "DE00000000000000000", "ref": "R-0000", "name": "x"}
    text = ["Pay to DE89370400440532013000. Refs R-1111 and R-2222."]
    assert repair(fields, schema, text) == ["iban"]
    assert fields["iban"] == "DE89370400440532013000"
    assert fields["ref"] == "R-0000"  # two candidates: left alone (and shown unattributed)
    assert repair({"iban": "DE89370400440532013000"}, schema, text) == []


def test_check_schema() -> None:
    assert check_schema({"type": "object"}, "s") == {"type": "object"}
    for bad in ({"type": "string"}, [], {"type": "object", "properties": 3},
                {"type": "object", "description": "x" * 30_000}):  # fmt: skip
        with pytest.raises(InvalidRequest):
            check_schema(bad, "s")


def test_bundled_schemas_compile_to_grammars() -> None:
    from intramuros.docai.cli import bundled_schemas, load_schema
    from intramuros.engines.prompting import schema_to_gbnf

    assert bundled_schemas() == ["identity_document", "invoice"]
    for name in bundled_schemas():
        schema, _ = load_schema(name)
        assert "root ::=" in schema_to_gbnf(schema, "s")


def _result() -> DocumentResult:
    img = PageImage("img-0", 0, 0, 50, 40, image_base64="QUJD")
    small = PageImage("img-1", 0, 0, 5, 5, image_base64="QUJD")
    page = PageResult(index=2, markdown="# T", width=100, height=200, dpi=72,
                      method="text-layer", confidence=1.0, images=[img, small])  # fmt: skip
    return DocumentResult(pages=[page], page_count=3, mime_type="application/pdf",
                          size_bytes=999)  # fmt: skip


class _FakeDocument:
    """What ``pipeline.open_document`` returns, over a fixed result (or a reader crash)."""

    def __init__(self, result: DocumentResult, crash: bool = False) -> None:
        self._result = result
        self._crash = crash
        self.wanted = [page.index for page in result.pages]
        self.closed = False

    def read_page(self, index: int) -> PageResult:
        if self._crash:
            raise ZeroDivisionError
        return next(page for page in self._result.pages if page.index == index)

    def result(self, pages: list[PageResult]) -> DocumentResult:
        return DocumentResult(pages=pages, page_count=self._result.page_count,
                              mime_type=self._result.mime_type,
                              size_bytes=self._result.size_bytes)  # fmt: skip

    def close(self) -> None:
        self.closed = True


def fake_reader(calls: list[dict[str, Any]], crash: bool = False,
                bad_prefix: bytes | None = None) -> Any:  # fmt: skip
    """A stand-in for ``pipeline.open_document`` that records its options."""

    def open_document(data: bytes, **kw: Any) -> _FakeDocument:
        calls.append(kw)
        if bad_prefix is not None and data.startswith(bad_prefix):
            raise BadDocument("Cannot read 'x': broken", param="document")
        return _FakeDocument(_result(), crash=crash)

    return open_document


def test_to_response_shape() -> None:
    resp = to_response(_result(), "intramuros-ocr", include_images=False)
    page = resp.pages[0]
    assert page.index == 2 and page.dimensions is not None and page.dimensions.height == 200
    assert [i.image_base64 for i in page.images] == [None, None]
    assert resp.usage_info.model_dump() == {"pages_processed": 1, "doc_size_bytes": 999}
    kept = to_response(_result(), "m", include_images=True, image_min_size=10).pages[0].images
    assert [i.id for i in kept] == ["img-0"] and kept[0].image_base64 == "QUJD"
    assert to_response(_result(), "m", include_images=True, image_limit=0).pages[0].images == []


def test_service_meters_reads_and_classifies_reader_bugs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a fake reader: the meter gets pages; an unexpected reader crash is a 422."""
    from intramuros.docai.service import DocaiService
    from intramuros.files.errors import DocumentUnreadable
    from intramuros.gate.tenants import Principal
    from intramuros.serving.service import InferenceService
    from intramuros.settings import load_settings

    settings = load_settings(data_dir=tmp_path, preload_models=[], egress_guard=False)
    core = InferenceService(settings)
    core.db.migrate()
    svc = DocaiService(core)
    who = Principal(tenant="acme", key_id=None, role="user")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(pipeline, "open_document", fake_reader(calls))
    req = dp.OCRRequest.model_validate({"document": {"type": "document_url",
                                                      "document_url": _url("image/png", PNG)},
                                        "pages": "2", "languages": ["ell", "grc"]})  # fmt: skip
    try:
        resp = asyncio.run(svc.ocr(req, who))
        assert resp.pages[0].index == 2
        assert calls[0]["pages"] == [2] and calls[0]["languages"] == ["ell", "grc"]
        record = [e for e in core.ledger.records("acme") if e.kind == "model_call"][-1]
        assert record.data["extra"]["pages"] == 1 and record.data["route"] == "/v1/ocr"

        monkeypatch.setattr(pipeline, "open_document", fake_reader(calls, crash=True))
        with pytest.raises(DocumentUnreadable):
            asyncio.run(svc.ocr(req, who))
        last = [e for e in core.ledger.records("acme") if e.kind == "model_call"][-1]
        assert last.data["status"] == 422
    finally:
        core.db.close()
    assert json.loads(resp.model_dump_json())["pages"][0]["method"] == "text-layer"


def test_jobs_on_both_databases(tmp_path: Path, db_url: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Submit, run (fake reader), resume a stale claim, results: SQLite and PostgreSQL."""
    from intramuros.docai.service import DocaiService
    from intramuros.gate.tenants import Principal
    from intramuros.serving.service import InferenceService
    from intramuros.settings import load_settings

    monkeypatch.setattr(pipeline, "open_document", fake_reader([], bad_prefix=b"bad"))
    settings = load_settings(data_dir=tmp_path, database_url=db_url, preload_models=[],
                        egress_guard=False)  # fmt: skip
    core = InferenceService(settings)
    core.db.migrate()
    svc = DocaiService(core)
    acme = Principal(tenant="acme", key_id=None, role="user")

    async def scenario() -> tuple[dp.OCRJob, dp.OCRJobResults]:
        await svc.start()
        try:
            good = await svc.upload(acme, filename="a.pdf", content_type=None, data=b"%PDF-1",
                                    purpose="ocr")  # fmt: skip
            bad = await svc.upload(acme, filename="b.pdf", content_type=None, data=b"bad",
                                   purpose="ocr")  # fmt: skip
            job = await svc.jobs.submit(acme, dp.OCRJobRequest(file_ids=[good.id, bad.id]))
            for _ in range(200):
                job = await svc.jobs.get(acme, job.id)
                if job.status == "completed":
                    break
                await asyncio.sleep(0.05)
            results = await svc.jobs.results(acme, job.id)
        finally:
            await svc.close()
        # A server died mid-job: its claim goes stale, another runner resumes the job
        # at the first unfinished item, redoing nothing finished.
        import sqlalchemy as sa

        from intramuros.docai.tables import docai_job_items, docai_jobs

        items = docai_job_items.c
        with core.db.begin() as conn:
            conn.execute(docai_jobs.update().where(docai_jobs.c.id == job.id).values(
                status="running", heartbeat=time.time() - 1000, failed=0, worker="dead"))
            conn.execute(docai_job_items.update().where(items.job_id == job.id, items.idx == 1)
                         .values(status="pending", error=None))
            first_done = conn.execute(sa.select(items.completed_at).where(
                items.job_id == job.id, items.idx == 0)).scalar_one()
        await svc.start()
        try:
            for _ in range(200):
                job = await svc.jobs.get(acme, job.id)
                if job.status == "completed":
                    break
                await asyncio.sleep(0.05)
            resumed = await svc.jobs.results(acme, job.id)
        finally:
            await svc.close()
        # The resumed item was really read again (by the restarted service's readers).
        assert resumed.data[1].error is not None
        assert resumed.data[1].error["code"] == "invalid_document"
        with core.db.begin() as conn:
            assert conn.execute(sa.select(items.completed_at).where(
                items.job_id == job.id, items.idx == 0)).scalar_one() == first_done
        return job, results

    try:
        job, results = asyncio.run(scenario())
    finally:
        core.db.close()
    assert job.status == "completed"
    assert job.request_counts.model_dump() == {"total": 2, "completed": 2, "succeeded": 1,
                                               "failed": 1}  # fmt: skip
    assert [r.status for r in results.data] == ["succeeded", "failed"]
    assert results.data[0].response is not None and results.data[0].response.pages[0].index == 2
    assert results.data[1].error is not None and results.data[1].error["code"] == "invalid_document"
