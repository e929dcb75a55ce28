"""Abuse of the document readers on a real server: one request may slow itself, never the server.

Each test does what an attacker (or a careless client) did to a server built
from main, with real PDFs made here and the real RapidOCR reader:

* a ``pages`` bomb (``"0-100000,"`` 800 times; a list of a million indexes)
  while ``/healthz`` is polled: refused at once, ``/healthz`` under 100 ms;
* a 1,000-page image-only PDF: stopped by the per-document work-time limit
  (``--docai-max-seconds``, 5 s here), and the server free again at once;
* a 14,400-point page (also with ``/UserUnit``), a PNG and a TIFF frame
  claiming billions of pixels: refused before rendering or decoding, the
  server's peak memory (VmHWM) flat;
* a client that leaves, a batch job cancelled while a long document is
  read: the work stops (the 499 in the metrics, the server's CPU time);
* tenant A's 200-page scan, then tenant B's one page: B is answered while A
  is still being read (pages are served tenants in turn);
* OCR output under the tenant's personal-data policy: an IBAN under
  ``block`` refuses the call (and the batch item), an e-mail under
  ``redact-in-logs`` reaches the client but not the ledger's content.

Every wait is bounded; a test that fails here fails within about a minute.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, cli, make_keys, start_server, stop_server
from tests.helpers import check_error
from tests.test_docai_docs import FONT, assemble_pdf, make_pdf
from tests.watch import HealthWatch, cpu_seconds, memory

# Real models or a server process: the slow tier.
pytestmark = pytest.mark.slow

IBAN = "FR76 3000 6000 0112 3456 7890 189"
EMAIL = "claire.dubois@example.org"
MB = 1024 * 1024


# -- documents -------------------------------------------------------------------


def _image(text: str, size: tuple[int, int] = (600, 300)) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", size, 255)
    ImageDraw.Draw(img).text((30, size[1] // 3), text, fill=0,
                             font=ImageFont.truetype(str(FONT), 40))  # fmt: skip
    return img


def scan_pdf(pages: int, text: str = "Page of a long scan") -> bytes:
    """An image-only PDF: ``pages`` pages (2 x 1 inches) showing one shared scanned image."""
    img = _image(text)
    raw = zlib.compress(img.tobytes())
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    draw = b"q 144 0 0 72 0 0 cm /Im0 Do Q"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n"
        % (img.width, img.height, len(raw)) + raw + b"\nendstream",
        b"<< /Length %d >>\nstream\n" % len(draw) + draw + b"\nendstream",
    ]  # fmt: skip
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 144 72] /Contents 4 0 R "
            b"/Resources << /XObject << /Im0 3 0 R >> >> >>")  # fmt: skip
    return assemble_pdf(objects + [page] * pages)


def giant_page_pdf(points: int = 14_400, user_unit: float | None = None) -> bytes:
    """One blank page ``points`` square (the PDF maximum), maybe scaled by ``/UserUnit``."""
    unit = f" /UserUnit {user_unit}" if user_unit is not None else ""
    return assemble_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {points} {points}]{unit} >>".encode(),
    ])  # fmt: skip


def png_bomb(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height``: a few hundred bytes, gigabytes decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))  # fmt: skip

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_with_a_giant_frame() -> bytes:
    """Two pages: a small one, then 6000 x 6000 (36 M pixels, a few kB compressed)."""
    from PIL import Image

    buf = io.BytesIO()
    first = _image("Cover page")
    giant = Image.new("1", (6000, 6000), 1)
    first.convert("1").save(buf, format="TIFF", save_all=True, append_images=[giant],
                            compression="group4")  # fmt: skip
    return buf.getvalue()


def data_url(mime: str, data: bytes) -> dict[str, str]:
    return {"type": "document_url",
            "document_url": f"data:{mime};base64," + base64.b64encode(data).decode()}  # fmt: skip


# -- watching the server -------------------------------------------------------------


def ocr_status_count(base_url: str, status: int) -> float:
    """``intramuros_requests_total`` for /v1/ocr with ``status``, all models."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    pattern = re.compile(r'^intramuros_requests_total\{(?=[^}]*route="/v1/ocr")'
                         rf'(?=[^}}]*status="{status}")[^}}]*\}} ([0-9.e+]+)$', re.M)
    return sum(float(v) for v in pattern.findall(text))


def post_ocr(srv: Server, body: dict[str, Any], who: str = "user",
             timeout: float = 90) -> httpx.Response:  # fmt: skip
    return httpx.post(srv.base_url + "/v1/ocr", json=body, headers=srv.headers(who),
                      timeout=timeout)  # fmt: skip


# -- servers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a 5-second work limit per document, a ledger key and two policies:
    acme blocks IBANs; globex keeps (redacted) content and redacts e-mails in records."""
    data = tmp_path_factory.mktemp("abuse-docai")
    key = data / "ledger.key"
    subprocess.run([sys.executable, "-m", "intramuros.cli", "ledger", "keygen", str(key)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    # Policies before the server starts (a running one sees a change within a second).
    keys = make_keys(data)
    cli(data, "tenants", "policy", "acme", "--pii", "iban=block")
    cli(data, "tenants", "policy", "globex", "--store-content", "--pii", "email=redact-in-logs")
    srv = start_server(data, "--preload-models", "", "--docai-max-seconds", "5",
                       "--ledger-key-file", str(key), auth=keys)  # fmt: skip
    srv.keys["globex-admin"] = cli(data, "keys", "create", "--tenant", "globex", "--role",
                                   "admin").strip()  # fmt: skip
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default limits (300 s of work per document), one page at a time."""
    srv = start_server(tmp_path_factory.mktemp("abuse-docai-roomy"), "--preload-models", "",
                       auth=True)  # fmt: skip
    yield srv
    stop_server(srv)


# -- the pages bomb ------------------------------------------------------------------------


def test_pages_bombs_are_refused_at_once_and_healthz_stays_fast(limits: Server) -> None:
    doc = data_url("application/pdf", make_pdf([["One page"]]))
    bombs: list[Any] = [
        "0-100000," * 800,  # 7 KB that expanded to 80 million page numbers
        "0-9999," * 5000,  # far past any document's pages (--docai-max-pages 1000)
        "7," * 20_000 + "7",
        list(range(20_000)),
        list(range(1_000_000)),  # 7 MB of JSON
    ]
    with HealthWatch(limits.base_url) as watch:
        for pages in bombs * 2:
            start = time.perf_counter()
            r = post_ocr(limits, {"document": doc, "pages": pages}, timeout=30)
            took = time.perf_counter() - start
            assert r.status_code in (400, 413), r.text
            if r.status_code == 400:
                check_error(r, 400, param="pages")
            assert took < 5, f"refused after {took:.1f} s"
    assert watch.worst() < 0.1, f"/healthz took {watch.worst() * 1000:.0f} ms"
    # A sane page list still works (0-based, ranges merged).
    r = post_ocr(limits, {"document": doc, "pages": "0,0-0"})
    assert r.status_code == 200 and [p["index"] for p in r.json()["pages"]] == [0]
    r = post_ocr(limits, {"document": doc, "pages": "999"})
    check_error(r, 400, param="pages")  # the document has 1 page
    r = post_ocr(limits, {"document": doc, "pages": "1000"})
    check_error(r, 400, contains=("--docai-max-pages",))


# -- unbounded work ----------------------------------------------------------------------


def test_a_thousand_page_scan_stops_at_the_work_time_limit(limits: Server) -> None:
    pdf = scan_pdf(1000)
    assert len(pdf) < 400_000  # a few hundred kB: the cost is in the reading
    start = time.perf_counter()
    r = post_ocr(limits, {"document": data_url("application/pdf", pdf)}, timeout=90)
    took = time.perf_counter() - start
    check_error(r, 422, "document_time_limit", param="document",
                contains=("--docai-max-seconds",))  # fmt: skip
    assert took < 30, f"stopped after {took:.1f} s"
    # Nothing of it is left running: the next document is read at once.
    start = time.perf_counter()
    r = post_ocr(limits, {"document": data_url("application/pdf", make_pdf([["Receipt 4417"]]))},
                 timeout=60)  # fmt: skip
    assert r.status_code == 200 and "4417" in r.json()["pages"][0]["markdown"], r.text
    assert time.perf_counter() - start < 10


def test_giant_pages_and_images_are_refused_before_any_pixel(limits: Server) -> None:
    # The reader's engine loaded first, so that its own memory is in the baseline.
    for _ in range(2):
        warm = post_ocr(limits, {"document": data_url("application/pdf", scan_pdf(1))})
        assert warm.status_code in (200, 422), warm.text  # 422: a slow machine's time limit
    pid = limits.proc.pid
    before = memory(pid)
    for unit in (None, 10, 75_000):
        pdf = giant_page_pdf(14_400, unit)
        assert len(pdf) < 1500
        r = post_ocr(limits, {"document": data_url("application/pdf", pdf)}, timeout=60)
        err = check_error(r, 413, "page_too_large", contains=("--docai-max-pixels",))
        assert ("/UserUnit" in err["message"]) == (unit is not None)
    r = post_ocr(limits, {"document": {"type": "image_url", "image_url": "data:image/png;base64,"
                                       + base64.b64encode(png_bomb(100_000, 100_000)).decode()}})
    check_error(r, 413, "image_too_large")
    tiff = tiff_with_a_giant_frame()
    r = post_ocr(limits, {"document": data_url("image/tiff", tiff), "pages": [1]})
    check_error(r, 413, contains=("page 1",))
    r = post_ocr(limits, {"document": data_url("image/tiff", tiff), "pages": [0]})
    assert r.status_code == 200 and "Cover" in r.json()["pages"][0]["markdown"], r.text
    after = memory(pid)
    grown = after["VmHWM"] - before["VmHWM"]
    assert grown < 400, f"peak memory grew by {grown:.0f} MB ({before} -> {after})"


# -- personal data in what was read --------------------------------------------------------


def _ledger_calls(srv: Server, who: str, tenant: str) -> list[dict[str, Any]]:
    rows = httpx.get(srv.base_url + f"/v1/admin/ledger?tenant={tenant}&limit=1000",
                     headers=srv.headers(who), timeout=30).json()["data"]  # fmt: skip
    return [r for r in rows if r["kind"] == "model_call" and r["data"]["route"] == "/v1/ocr"]


def test_ocr_output_falls_under_the_tenants_personal_data_policy(limits: Server) -> None:
    pdf = make_pdf([["Payment details", f"IBAN: {IBAN}", f"Contact: {EMAIL}"]])
    body = {"document": data_url("application/pdf", pdf)}
    # acme blocks IBANs: the read is refused, the decision is in the ledger.
    r = post_ocr(limits, body)
    err = check_error(r, 400, "personal_data_blocked", param="document", contains=("iban",))
    assert "3000" not in err["message"]
    last = _ledger_calls(limits, "admin", "acme")[-1]
    assert last["data"]["status"] == 400
    assert last["data"]["pii"]["iban"]["action"] == "block"
    # globex: the client gets its own document's text; the kept content is redacted.
    r = post_ocr(limits, body, who="other")
    assert r.status_code == 200, r.text
    assert EMAIL in r.json()["pages"][0]["markdown"]
    record = _ledger_calls(limits, "globex-admin", "globex")[-1]
    assert record["data"]["status"] == 200 and record["has_content"]
    assert record["data"]["pii"]["email"] == {"count": 1, "action": "redact-in-logs"}
    content = httpx.get(limits.base_url + f"/v1/admin/ledger/{record['seq']}/content",
                        headers=limits.headers("globex-admin"), timeout=30).json()["content"]
    kept = str(content)
    assert "Payment details" in kept and "[EMAIL]" in kept, kept
    assert EMAIL not in kept and "claire.dubois" not in kept and "3000 6000" not in kept


def _job(srv: Server, who: str, file_id: str) -> dict[str, Any]:
    r = httpx.post(srv.base_url + "/v1/batch/ocr", json={"file_ids": [file_id]},
                   headers=srv.headers(who), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running", "cancelling") and time.monotonic() < deadline:
        time.sleep(0.3)
        job = httpx.get(srv.base_url + f"/v1/batch/ocr/{job['id']}", headers=srv.headers(who),
                        timeout=30).json()  # fmt: skip
    return job


def test_batch_ocr_jobs_fall_under_the_policy_too(limits: Server) -> None:
    pdf = make_pdf([["Wire transfer", f"IBAN: {IBAN}", f"Contact: {EMAIL}"]])
    ids = {}
    for who in ("user", "other"):
        r = httpx.post(limits.base_url + "/v1/files", headers=limits.headers(who),
                       data={"purpose": "ocr"}, files={"file": ("wire.pdf", pdf)}, timeout=30)
        assert r.status_code == 200, r.text
        ids[who] = r.json()["id"]
    job = _job(limits, "user", ids["user"])
    assert job["status"] == "completed" and job["request_counts"]["failed"] == 1, job
    results = httpx.get(limits.base_url + f"/v1/batch/ocr/{job['id']}/results",
                        headers=limits.headers(), timeout=30).json()["data"]  # fmt: skip
    assert results[0]["status"] == "failed" and results[0]["response"] is None
    assert results[0]["error"]["code"] == "personal_data_blocked"
    # globex reads its own file back, e-mail included: the results are the answer.
    job = _job(limits, "other", ids["other"])
    assert job["request_counts"]["succeeded"] == 1, job
    results = httpx.get(limits.base_url + f"/v1/batch/ocr/{job['id']}/results",
                        headers=limits.headers("other"), timeout=30).json()["data"]  # fmt: skip
    assert EMAIL in results[0]["response"]["pages"][0]["markdown"]


# -- stopping work nobody wants ---------------------------------------------------------------


def _wait_idle(pid: int, seconds: float = 3.0) -> float:
    """CPU seconds the process used over ``seconds`` of wall time."""
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - start


def test_the_read_stops_when_its_client_leaves(roomy: Server) -> None:
    pdf = scan_pdf(200)
    before = ocr_status_count(roomy.base_url, 499)
    with pytest.raises(httpx.ReadTimeout):
        post_ocr(roomy, {"document": data_url("application/pdf", pdf)}, timeout=4)
    deadline = time.monotonic() + 30
    while ocr_status_count(roomy.base_url, 499) == before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ocr_status_count(roomy.base_url, 499) == before + 1, "the read did not stop"
    used = _wait_idle(roomy.proc.pid)
    assert used < 1.0, f"the server still works: {used:.1f} s of CPU in 3 s"


def test_a_long_document_does_not_starve_another_tenant(roomy: Server) -> None:
    long_scan = data_url("application/pdf", scan_pdf(200))
    outcome: dict[str, Any] = {}

    def tenant_a() -> None:
        try:
            outcome["a"] = post_ocr(roomy, {"document": long_scan}, timeout=25)
        except httpx.HTTPError as exc:  # it gives up: 200 pages take minutes
            outcome["a"] = exc
        outcome["a_done"] = time.monotonic()

    a = threading.Thread(target=tenant_a)
    a.start()
    time.sleep(3)  # A's document is being read
    start = time.monotonic()
    r = post_ocr(roomy, {"document": data_url("application/pdf", scan_pdf(1, "Letter 5310"))},
                 who="other", timeout=60)  # fmt: skip
    b_done = time.monotonic()
    assert r.status_code == 200 and "5310" in r.json()["pages"][0]["markdown"], r.text
    assert "a_done" not in outcome, "A's 200 pages finished first"
    assert b_done - start < 30, f"B waited {b_done - start:.1f} s"
    a.join(timeout=60)
    assert outcome["a_done"] > b_done
    assert not isinstance(outcome["a"], httpx.Response), "200 pages read in 25 s?"


def test_a_cancelled_job_stops_mid_document(roomy: Server) -> None:
    r = httpx.post(roomy.base_url + "/v1/files", headers=roomy.headers(),
                   data={"purpose": "ocr"}, files={"file": ("long.pdf", scan_pdf(200))},
                   timeout=30)  # fmt: skip
    file_id = r.json()["id"]
    r = httpx.post(roomy.base_url + "/v1/batch/ocr", json={"file_ids": [file_id]},
                   headers=roomy.headers(), timeout=30)  # fmt: skip
    job_id = r.json()["id"]
    url = roomy.base_url + f"/v1/batch/ocr/{job_id}"
    deadline = time.monotonic() + 30
    while httpx.get(url, headers=roomy.headers(), timeout=30).json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    time.sleep(2)  # its document is being read
    httpx.post(url + "/cancel", headers=roomy.headers(), timeout=30)
    deadline = time.monotonic() + 20
    job = httpx.get(url, headers=roomy.headers(), timeout=30).json()
    while job["status"] != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.3)
        job = httpx.get(url, headers=roomy.headers(), timeout=30).json()
    assert job["status"] == "cancelled", job
    results = httpx.get(url + "/results", headers=roomy.headers(), timeout=30).json()["data"]
    assert results[0]["status"] == "pending"  # unfinished, nothing half-kept
    used = _wait_idle(roomy.proc.pid)
    assert used < 1.0, f"the server still works: {used:.1f} s of CPU in 3 s"
