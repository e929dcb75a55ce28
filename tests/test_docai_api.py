"""POST /v1/ocr (Mistral's shape), structured extraction and OCR jobs on a real server.

The real readers (text layer, RapidOCR, Tesseract) and the bundled 135M chat
model run behind the gate: calls are metered and ledgered, tenants are
walled off, and every bad document is a 4xx naming the problem.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import CHAT_MODEL, Server, start_server, stop_server
from tests.helpers import check_error
from tests.test_docai_docs import INVOICE_LINES, image_pdf, locked_pdf, make_pdf, make_png

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

LIMIT = 400_000
COVER = ["Dear customer,", "please find our invoice on the next page.", "Kind regards"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("docai"), "--preload-models", CHAT_MODEL,
                          "--n-ctx", "4096", "--files-max-bytes", str(LIMIT),
                          auth=True)  # fmt: skip
    yield server
    stop_server(server)


@pytest.fixture()
def http(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, headers=srv.headers(), timeout=300) as client:
        yield client


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _doc(mime: str, data: bytes) -> dict[str, str]:
    return {"type": "document_url", "document_url": _data_url(mime, data)}


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _upload(http: httpx.Client, name: str, data: bytes) -> str:
    r = http.post("/v1/files", data={"purpose": "ocr"}, files={"file": (name, data)})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def invoice_pdf() -> bytes:
    return make_pdf([COVER, INVOICE_LINES])


def test_born_digital_pdf(http: httpx.Client, invoice_pdf: bytes) -> None:
    r = http.post("/v1/ocr", json={"model": "intramuros-ocr",
                                   "document": _doc("application/pdf", invoice_pdf)})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "intramuros-ocr"
    assert body["usage_info"] == {"pages_processed": 2, "doc_size_bytes": len(invoice_pdf)}
    cover, invoice = body["pages"]
    assert (cover["index"], invoice["index"]) == (0, 1)
    assert invoice["method"] == "text-layer" and invoice["confidence"] == 1.0
    assert invoice["dimensions"]["width"] > 0 and invoice["dimensions"]["dpi"] > 0
    for line in INVOICE_LINES[3:6] + INVOICE_LINES[-1:]:
        assert _compact(line) in _compact(invoice["markdown"])
    assert "INV-2026-0042" not in cover["markdown"]
    # A subset of pages (Mistral: 0-based list, or one index).
    one = http.post("/v1/ocr", json={"document": _doc("application/pdf", invoice_pdf),
                                     "pages": [1]}).json()  # fmt: skip
    assert [p["index"] for p in one["pages"]] == [1]
    assert one["usage_info"]["pages_processed"] == 1
    for pages in (0, "0", "0-0"):
        assert [p["index"] for p in http.post("/v1/ocr", json={
            "document": _doc("application/pdf", invoice_pdf), "pages": pages,
        }).json()["pages"]] == [0]  # fmt: skip


def test_scans_through_file_ids_and_image_urls(srv: Server, http: httpx.Client) -> None:
    png = make_png(INVOICE_LINES[:6] + INVOICE_LINES[-1:])
    file_id = _upload(http, "scan.png", png)
    r = http.post("/v1/ocr", json={"document": {"type": "file", "file_id": file_id}})
    assert r.status_code == 200, r.text
    page = r.json()["pages"][0]
    assert page["method"].startswith("ocr-") and 0 < page["confidence"] <= 1
    text = _compact(page["markdown"])
    for must in ("INV-2026-0042", "2026-11-15", "DE89370400440532013000", "Globex"):
        assert must in text, page["markdown"]
    # The same scan inline as image_url (string and object forms), read by Tesseract.
    for image_url in (_data_url("image/png", png), {"url": _data_url("image/png", png)}):
        r = http.post("/v1/ocr", json={"model": "tesseract",
                                       "document": {"type": "image_url", "image_url": image_url}})
        assert r.status_code == 200, r.text
        page = r.json()["pages"][0]
        assert page["method"] == "ocr-tesseract"
        assert "INV-2026-0042" in _compact(page["markdown"])
    # A scanned PDF (no text layer) is OCR'd too.
    scan = image_pdf(make_png(["Scanned contract 7731", "Signed in Lyon"]))
    page = http.post("/v1/ocr", json={"document": _doc("application/pdf", scan)}).json()["pages"][0]
    assert page["method"].startswith("ocr-") and "7731" in page["markdown"]


def test_mistral_client(srv: Server, invoice_pdf: bytes) -> None:
    from mistralai.client import Mistral

    with Mistral(api_key=srv.keys["user"], server_url=srv.base_url) as client:
        resp = client.ocr.process(model="mistral-ocr-latest",
                                  document={"type": "document_url",
                                            "document_url": _data_url("application/pdf",
                                                                      invoice_pdf)})  # fmt: skip
    assert resp.model == "mistral-ocr-latest"
    assert [p.index for p in resp.pages] == [0, 1]
    assert "INV-2026-0042" in resp.pages[1].markdown
    assert resp.usage_info.pages_processed == 2


def test_ocr_calls_are_metered_and_ledgered(srv: Server, http: httpx.Client,
                                            invoice_pdf: bytes) -> None:  # fmt: skip
    r = http.post("/v1/ocr", json={"document": _doc("application/pdf", invoice_pdf)})
    assert r.status_code == 200
    admin = {"Authorization": f"Bearer {srv.keys['admin']}"}
    records = httpx.get(srv.base_url + "/v1/admin/ledger", headers=admin, timeout=30,
                        params={"tenant": "acme", "limit": 1000}).json()["data"]  # fmt: skip
    ocr = [e for e in records if e["kind"] == "model_call" and e["data"]["route"] == "/v1/ocr"]
    assert ocr, "no ledger record of /v1/ocr"
    last = ocr[-1]["data"]
    assert last["status"] == 200 and last["model"] == "intramuros-ocr"
    assert last["extra"]["pages"] == 2 and last["extra"]["doc_size_bytes"] == len(invoice_pdf)
    assert last["extra"]["methods"] == {"text-layer": 2}
    uploads = [e for e in records if e["kind"] == "file"]
    assert uploads and uploads[-1]["data"]["action"] in ("file_upload", "file_delete")


def test_document_annotation_with_the_invoice_schema(http: httpx.Client,
                                                     invoice_pdf: bytes) -> None:  # fmt: skip
    schema = json.loads(resources.files("intramuros.docai").joinpath(
        "schemas", "invoice.json").read_text())  # fmt: skip
    r = http.post("/v1/ocr", json={
        "document": _doc("application/pdf", invoice_pdf),
        "document_annotation_format": {"type": "json_schema",
                                       "json_schema": {"name": "invoice", "schema": schema}},
    })  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    fields = json.loads(body["document_annotation"])
    jsonschema.validate(fields, schema)  # grammar-constrained: always valid
    assert fields["invoice_number"] == "INV-2026-0042"
    assert fields["iban"].replace(" ", "") == "DE89370400440532013000"
    assert fields["total_gross"] == pytest.approx(35.70)
    where = body["document_annotation_pages"]
    assert where["invoice_number"] == 1 and where["iban"] == 1  # the invoice is page 1
    assert where["total_gross"] == 1


def _bomb() -> bytes:
    """A few kB of PNG that decode to 144 million pixels."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000), 1).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_ocr_requests(srv: Server, http: httpx.Client, invoice_pdf: bytes) -> None:
    def ocr(document: Any, **extra: Any) -> httpx.Response:
        return http.post("/v1/ocr", json={"document": document, **extra})

    for url in ("https://example.com/a.pdf", "http://10.0.0.1/x.pdf", "ftp://h/x.pdf",
                " HTTPS://EXAMPLE.COM/A.PDF"):  # fmt: skip
        err = check_error(ocr({"type": "document_url", "document_url": url}), 400)
        assert err["code"] == "remote_url_refused" and err["param"] == "document.document_url"
    err = check_error(ocr({"type": "image_url", "image_url": "https://example.com/a.png"}), 400)
    assert err["code"] == "remote_url_refused" and err["param"] == "document.image_url"
    cases = [
        {"type": "document_url", "document_url": "data:application/pdf;base64,@@@not-b64@@@"},
        {"type": "document_url", "document_url": "data:application/pdf,plain%20text"},
        {"type": "document_url", "document_url": _data_url("text/html", b"<b>hi</b>")},
        {"type": "document_url", "document_url": "data:application/pdf;base64,"},
        {"type": "document_url", "document_url": "/etc/passwd"},
        {"type": "document_url", "document_url": _data_url("image/png", invoice_pdf)},
        {"type": "image_url", "image_url": _data_url("application/pdf", invoice_pdf)},
    ]
    for document in cases:
        err = check_error(ocr(document), 400)
        assert err["code"] == "invalid_document" and err["param"].startswith("document."), err
    # Broken documents: the reader names the reason.
    for broken in (invoice_pdf[: len(invoice_pdf) // 3], b"%PDF-1.4\n garbage " * 20,
                   b"\x89PNG\r\n\x1a\n" + b"\x00" * 50):  # fmt: skip
        mime = "image/png" if broken.startswith(b"\x89PNG") else "application/pdf"
        r = ocr(_doc(mime, broken))
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]["param"] == "document"
    err = check_error(ocr({"type": "document_url",
                           "document_url": _data_url("application/pdf", b"hello, not a pdf")}),
                      415)  # fmt: skip
    assert err["param"] == "document"
    err = check_error(ocr(_doc("application/pdf", make_pdf([]))), 400)
    assert err["code"] == "document_empty"
    err = check_error(ocr(_doc("application/pdf", locked_pdf(["Secret"]))), 400)
    assert err["code"] == "document_encrypted" and "password" in err["message"]
    check_error(ocr(_doc("image/png", _bomb())), 413, "image_too_large")
    # Files: unknown, malformed, and another tenant's.
    globex = httpx.post(srv.base_url + "/v1/files", headers=srv.headers("other"),
                        data={"purpose": "ocr"},
                        files={"file": ("g.pdf", invoice_pdf)}).json()["id"]  # fmt: skip
    for file_id in ("file-" + "0" * 24, "../../etc/passwd", globex):
        err = check_error(ocr({"type": "file", "file_id": file_id}), 404)
        assert err["code"] == "file_not_found" and err["param"] == "document.file_id"
    good = _doc("application/pdf", invoice_pdf)
    check_error(ocr(good, model="gpt-4o"), 404, param="model")
    check_error(ocr(good, pages=[-1]), 400, param="pages")
    check_error(ocr(good, pages=[7]), 400, param="pages")
    check_error(ocr(good, pages="0-x"), 400, param="pages")
    check_error(ocr(good, pages=True), 400, param="pages")
    check_error(ocr(good, include_image_base64="yes"), 400, param="include_image_base64")
    check_error(ocr(good, table_format="html"), 400, param="table_format")
    check_error(ocr(good, bbox_annotation_format={"type": "json_schema", "json_schema": {
        "name": "b", "schema": {"type": "object"}}}), 400, param="bbox_annotation_format")
    assert check_error(ocr(good, document_annotation_format={"type": "json_schema", "json_schema": {
        "name": "b", "schema": {"type": "string"}}}), 400)["param"].startswith(
        "document_annotation_format")  # fmt: skip
    check_error(ocr(good, document_annotation_format={"type": "text"}), 400,
                param="document_annotation_format")  # fmt: skip
    check_error(ocr(good, surprise=1), 400, param="surprise")
    assert check_error(ocr({"type": "carrier_pigeon"}), 400)["param"].startswith("document")
    check_error(http.post("/v1/ocr", json={"model": "intramuros-ocr"}), 400, param="document")
    check_error(http.post("/v1/ocr", content=b"{not json",
                          headers={"content-type": "application/json"}), 400)  # fmt: skip
    # Over the limit inline (the body limit, or the decoded size).
    big = _doc("application/pdf", b"%PDF-1.4\n" + b"0" * (LIMIT + 10))
    assert ocr(big).status_code == 413
    assert httpx.post(srv.base_url + "/v1/ocr", json={"document": good}).status_code == 401
    # And the server still answers.
    assert ocr(good).status_code == 200


def _wait(http: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/v1/batch/ocr/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_ocr_jobs(srv: Server, http: httpx.Client, invoice_pdf: bytes) -> None:
    note = make_pdf([["Delivery note DN-88", "Shipped to Globex on",
                      "2026-11-20 by road freight.", "Parcels: 3"]])
    ids = [_upload(http, "inv.pdf", invoice_pdf),
           _upload(http, "broken.pdf", invoice_pdf[:200]),
           _upload(http, "note.pdf", note)]  # fmt: skip
    r = http.post("/v1/batch/ocr", json={"file_ids": ids, "metadata": {"batch": "nov"}})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "ocr.job" and job["status"] in ("queued", "running", "completed")
    assert job["file_ids"] == ids and job["request_counts"]["total"] == 3
    done = _wait(http, job["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 3, "completed": 3, "succeeded": 2, "failed": 1}
    assert done["pages_processed"] == 3 and done["metadata"] == {"batch": "nov"}
    results = http.get(f"/v1/batch/ocr/{job['id']}/results").json()["data"]
    assert [x["status"] for x in results] == ["succeeded", "failed", "succeeded"]
    assert "INV-2026-0042" in results[0]["response"]["pages"][1]["markdown"]
    assert results[1]["error"]["code"] and results[1]["response"] is None
    assert "DN-88" in results[2]["response"]["pages"][0]["markdown"]
    page = http.get(f"/v1/batch/ocr/{job['id']}/results", params={"after": 0, "limit": 1}).json()
    assert [x["index"] for x in page["data"]] == [1] and page["has_more"] is True
    assert job["id"] in [j["id"] for j in http.get("/v1/batch/ocr").json()["data"]]
    # Cancelling a finished job changes nothing.
    assert http.post(f"/v1/batch/ocr/{job['id']}/cancel").json()["status"] == "completed"
    # Another tenant sees nothing of it, and cannot submit acme's files.
    other = httpx.Client(base_url=srv.base_url, headers=srv.headers("other"), timeout=60)
    with other:
        for path in (f"/v1/batch/ocr/{job['id']}", f"/v1/batch/ocr/{job['id']}/results"):
            check_error(other.get(path), 404, "job_not_found")
        check_error(other.post(f"/v1/batch/ocr/{job['id']}/cancel"), 404)
        assert job["id"] not in [j["id"] for j in other.get("/v1/batch/ocr").json()["data"]]
        err = check_error(other.post("/v1/batch/ocr", json={"file_ids": [ids[0]]}), 404)
        assert err["param"] == "file_ids[0]"
    check_error(http.post("/v1/batch/ocr", json={"file_ids": []}), 400, param="file_ids")
    check_error(http.post("/v1/batch/ocr", json={"file_ids": [ids[0]], "model": "nope"}), 404,
                param="model")  # fmt: skip
    check_error(http.get("/v1/batch/ocr/ocrjob-nope"), 404, "job_not_found")
