"""The document-AI workload's service: Files API, ``/v1/ocr`` and OCR batch jobs.

Built once per app from the platform. Every document read is a metered
call of the gate (``platform.begin_call(who, "/v1/ocr", model)`` ... ``end_call``,
pages and bytes in ``meter.extra``, the tenant's personal-data policy applied
to the text read); structured extraction is a chat call through
``platform.chat``. Reading is CPU-bound: each page (and the opening of a
document) runs in one of ``docai_concurrency`` reader threads, the slots
shared fairly among tenants (:mod:`intramuros.docai.fair`); every read can
be stopped between steps (:mod:`intramuros.docai.control`): its client left,
its job was cancelled, its work-time budget ran out, the server stops.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, cast

from intramuros.docai import pipeline
from intramuros.docai import protocol as dp
from intramuros.docai.control import ReadControl
from intramuros.docai.errors import ReadCancelled, ServerStopping
from intramuros.docai.extract import extract
from intramuros.docai.fair import FairSlots
from intramuros.docai.jobs import JobRunner
from intramuros.docai.options import OcrOptions, ocr_options
from intramuros.docai.pipeline import DocumentResult
from intramuros.docai.retention import purge_documents
from intramuros.docai.settings import DocaiSettings
from intramuros.docai.sources import decode_data_url, document_source, to_response, usage_extra
from intramuros.errors import IntramurosError, InvalidRequest
from intramuros.files.errors import DocumentUnreadable, FileTooLarge
from intramuros.files.names import clean_mime, safe_filename, sniff_mime
from intramuros.files.settings import FilesSettings
from intramuros.files.store import FileRecord, FileStore
from intramuros.gate import privacy
from intramuros.gate.tenants import Principal
from intramuros.platform.interface import Platform
from intramuros.platform.offload import run_cpu
from intramuros.settings import section

log = logging.getLogger(__name__)

_MULTIPART_SLACK = 1024 * 1024  # form fields and part headers around the file
_CLIENT_POLL_S = 0.25  # how often a synchronous read checks that its client is still there


class DocaiService:
    """Serving logic of the docai workload; routes call it, it calls the platform."""

    name = "docai"

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.config = section(platform.settings, DocaiSettings)
        self.files_config = section(platform.settings, FilesSettings)
        limit = self.files_config.files_max_bytes
        # Uploads and inline (base64, 4/3 larger) documents get their own body limits.
        self.body_limits: dict[str, int] = {
            "/v1/files": limit + _MULTIPART_SLACK,
            "/v1/ocr": limit * 4 // 3 + _MULTIPART_SLACK,
        }
        self._store: FileStore | None = None
        # Page reads: as many threads as slots, so a waiting document holds no thread
        # and the reader's per-thread OCR engines are built at most that many times.
        self.turns = FairSlots(self.config.docai_concurrency)
        self._readers = self._reader_pool()
        self._running: set[ReadControl] = set()
        self._closed = False
        self.jobs = JobRunner(self)
        platform.on_purge(self.purge)

    def _reader_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.config.docai_concurrency,
                                  thread_name_prefix="docai-read")  # fmt: skip

    async def start(self) -> None:
        """Open the file store (creating its key on first use) and the job runner."""
        if self._closed:  # started again after close (tests, an embedding app)
            self._readers, self._closed = self._reader_pool(), False
        self._store = await asyncio.to_thread(FileStore.from_settings, self.settings,
                                              self.platform.tables)  # fmt: skip
        if "ledger" not in self._store.keys.sets and self.files_config.files_key_file is None:
            log.warning("stored files are encrypted with %s, kept in the data dir; give "
                        "--files-key-file or a ledger key for protection at rest",
                        self.settings.data_dir / "files.key")  # fmt: skip
        await self.jobs.start()

    async def close(self) -> None:
        """Stop every read at its next step, and the job runner (its jobs resume at the next
        start): a long document does not hold up the server's shutdown."""
        for control in list(self._running):
            control.cancel(ServerStopping("The server is shutting down; send the document "
                                          "again."))  # fmt: skip
        await self.jobs.close()
        self._readers.shutdown(wait=False, cancel_futures=True)
        self._closed = True

    def purge(self, actor: str) -> None:
        """Delete expired files, and files and jobs past retention (the platform's purge
        hook; blocking)."""
        purge_documents(self.platform.tenant_policies(), self.files, self.platform.auditor,
                        actor=actor)  # fmt: skip

    @property
    def files(self) -> FileStore:
        """The file store (opened in ``start``)."""
        if self._store is None:
            self._store = FileStore.from_settings(self.settings, self.platform.tables)
        return self._store

    # -- files ---------------------------------------------------------------

    async def upload(
        self, who: Principal, *, filename: str | None, content_type: str | None, data: bytes,
        purpose: str, expires_after: int | None = None,
    ) -> dp.FileObject:  # fmt: skip
        """Store an uploaded file for the caller's tenant (and ledger the upload).

        ``expires_after`` (seconds from now): the file expires then, and the
        retention schedule deletes it (see :mod:`intramuros.docai.retention`).
        """
        if purpose not in dp.PURPOSES:
            raise InvalidRequest(f"Unknown purpose '{purpose[:64]}'; use one of "
                                 f"{', '.join(dp.PURPOSES)}.", param="purpose")  # fmt: skip
        if len(data) > self.files_config.files_max_bytes:
            raise FileTooLarge(f"The file is over the limit of {self.files_config.files_max_bytes} "
                               "bytes.", param="file")  # fmt: skip
        mime = sniff_mime(data) or clean_mime(content_type) or "application/octet-stream"
        record = await asyncio.to_thread(
            self.files.put, who.tenant, data, filename=safe_filename(filename),
            purpose=purpose, mime_type=mime, key_id=who.key_id, expires_after=expires_after,
        )  # fmt: skip
        await asyncio.to_thread(self._audit, who, "file_upload", record)
        return dp.FileObject.model_validate(record.to_wire())

    def _audit(self, who: Principal, action: str, record: FileRecord) -> None:
        self.platform.auditor.append("file", tenant=who.tenant, key_id=who.key_id,
                                     subject=None,
                                     data={"action": action, "file_id": record.id,
                                           "bytes": record.bytes, "sha256": record.sha256,
                                           "purpose": record.purpose})  # fmt: skip

    async def list_files(
        self, who: Principal, *, purpose: str | None, limit: int, after: str | None, order: str,
        offset: int = 0,
    ) -> dp.FileList:
        """The caller's tenant's files (OpenAI's cursor paging)."""
        direction: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
        records, more = await asyncio.to_thread(self.files.list_files, who.tenant,
                                                purpose=purpose, limit=limit, after=after,
                                                order=direction, offset=offset)  # fmt: skip
        total = await asyncio.to_thread(self.files.count, who.tenant, purpose)
        data = [dp.FileObject.model_validate(r.to_wire()) for r in records]
        return dp.FileList(data=data, has_more=more, total=total,
                           first_id=data[0].id if data else None,
                           last_id=data[-1].id if data else None)  # fmt: skip

    async def get_file(self, who: Principal, file_id: str) -> dp.FileObject:
        """One file's metadata (404 for a missing file or another tenant's)."""
        record = await asyncio.to_thread(self.files.get, who.tenant, file_id)
        return dp.FileObject.model_validate(record.to_wire())

    async def file_content(self, who: Principal, file_id: str) -> tuple[FileRecord, bytes]:
        """One file's bytes, decrypted and checked against its sha256."""
        return await asyncio.to_thread(self.files.read, who.tenant, file_id)

    async def delete_file(self, who: Principal, file_id: str) -> dp.FileDeleted:
        """Delete a file (its row and its ciphertext), and ledger it."""
        record = await asyncio.to_thread(self.files.delete, who.tenant, file_id)
        await asyncio.to_thread(self._audit, who, "file_delete", record)
        return dp.FileDeleted(id=record.id)

    # -- OCR -------------------------------------------------------------------

    def options(self, req: dp.OCRRequest | dp.OCRJobRequest) -> OcrOptions:
        """Check a request's options (every refusal names its parameter)."""
        return ocr_options(req, self.config.docai_max_pages)

    async def ocr(
        self, req: dp.OCRRequest, who: Principal, *,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        inline: list[bytes] | None = None,
    ) -> dp.OCRResponse:  # fmt: skip
        """``POST /v1/ocr``: read a document (inline or a stored file), maybe annotate it.

        ``disconnected`` (the route's ``request.is_disconnected``) is polled while
        the document is read: when the client has gone, the read stops.
        ``inline``: the data URL's payload, cut out of a large body by the route.
        """
        opts = self.options(req)
        doc = req.document
        if isinstance(doc, dp.FileChunk):
            record, data = await asyncio.to_thread(self.files.read, who.tenant, doc.file_id,
                                                   param="document.file_id")  # fmt: skip
            filename, source = record.filename, "file"
        else:
            url, param, images_only = document_source(doc)
            # Up to files_max_bytes of base64 to check and decode: not on the event loop.
            _mime, data = await run_cpu(decode_data_url, url, param=param,
                                        images_only=images_only,
                                        max_bytes=self.files_config.files_max_bytes,
                                        inline=inline)  # fmt: skip
            name = doc.document_name if isinstance(doc, dp.DocumentURLChunk) else None
            filename, source = safe_filename(name, default="document"), "inline"
        control = self.control(filename)
        watch = None
        if disconnected is not None:
            watch = asyncio.create_task(_watch_client(disconnected, control))
        try:
            return await self.process(who, data, filename=filename, opts=opts, source=source,
                                      control=control)  # fmt: skip
        finally:
            if watch is not None:
                watch.cancel()

    def control(self, filename: str) -> ReadControl:
        """A new read's cancel flag and work-time budget (``docai_max_seconds``)."""
        return ReadControl(filename, self.config.docai_max_seconds)

    async def process(
        self, who: Principal, data: bytes, *, filename: str, opts: OcrOptions, source: str,
        control: ReadControl | None = None,
    ) -> dp.OCRResponse:  # fmt: skip
        """Read one document and (if asked) fill the annotation schema from its text."""
        result = await self.read(who, data, filename=filename, opts=opts, source=source,
                                 control=control)  # fmt: skip
        response = to_response(result, opts.model, include_images=opts.include_images,
                               image_limit=opts.image_limit,
                               image_min_size=opts.image_min_size)  # fmt: skip
        if opts.schema is not None:
            found = await extract(
                self.platform, who, [page.markdown for page in result.pages], opts.schema,
                model=self.config.docai_extract_model, name=opts.schema_name,
                instructions=opts.instructions,
            )  # fmt: skip
            response.document_annotation = json.dumps(found.fields, ensure_ascii=False)
            response.document_annotation_pages = {
                k: (result.pages[v].index if v is not None else None)
                for k, v in found.pages.items()
            }
        return response

    async def read(
        self, who: Principal, data: bytes, *, filename: str, opts: OcrOptions, source: str,
        control: ReadControl | None = None,
    ) -> DocumentResult:  # fmt: skip
        """One metered document read, page by page in the readers' threads, tenants in turn.

        The tenant's personal-data policy applies to the text read: a category
        set to ``block`` refuses the call (400 ``personal_data_blocked``, the
        decision in the ledger); the client gets the text otherwise (it is the
        tenant's own document), and whatever is kept in records is redacted.
        """
        control = control or self.control(filename)
        meter, policy = await self.platform.begin_call(who, "/v1/ocr", opts.model)
        self._running.add(control)
        try:
            result = await self._read_pages(who.tenant, data, filename, opts, control)
            texts = [page.markdown for page in result.pages]
            decision = await run_cpu(privacy.inspect, texts, policy)
            meter.pii = decision  # in the ledger record, also when it blocks
            meter.extra = usage_extra(result, source)
            decision.enforce("document")
        except IntramurosError as exc:
            await self.platform.end_call(meter, exc)
            raise
        except (asyncio.CancelledError, GeneratorExit) as exc:
            # The request's task was cancelled (the server stops, a caller gave
            # up): the page being read stops at its next step.
            control.cancel(ReadCancelled(f"The read of '{filename}' was cancelled."))
            await self.platform.end_call(meter, exc)
            raise
        except Exception as exc:
            # A reader failure it did not classify: the document made it fail, so the
            # caller gets a 4xx naming it; the traceback goes to the log.
            log.exception("reader failed on %s", filename)
            refusal = DocumentUnreadable(f"Cannot read '{filename}': {type(exc).__name__}.",
                                         param="document")  # fmt: skip
            await self.platform.end_call(meter, refusal)
            raise refusal from None
        finally:
            self._running.discard(control)
        if self.platform.keeps_content(policy):
            # Kept as the call's output, redacted by the ledger record (for_record).
            meter.keep_content = True
            meter.output = [page_text(result)]
        await self.platform.end_call(meter)
        return result

    async def _read_pages(self, tenant: str, data: bytes, filename: str, opts: OcrOptions,
                          control: ReadControl) -> DocumentResult:  # fmt: skip
        """Open the document, then read its pages one turn at a time (see ``docai.fair``)."""
        loop = asyncio.get_running_loop()

        def work(func: Callable[..., Any], *args: Any) -> Any:
            with control.working():
                return func(*args)

        control.check()
        opener = functools.partial(
            pipeline.open_document, data, filename=filename, pages=opts.pages, ocr=opts.engine,
            languages=opts.languages, include_images=opts.include_images,
            max_pages=self.config.docai_max_pages, max_pixels=self.config.docai_max_pixels,
            checkpoint=control.check,
        )  # fmt: skip
        async def in_reader(func: Callable[..., Any], *args: Any) -> Any:
            async with self.turns.turn(tenant):
                try:
                    return await loop.run_in_executor(self._readers, work, func, *args)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if control.cancelled and current is not None and not current.cancelling():
                        # Not this task cancelled: the pool dropped the work at shutdown.
                        control.check()  # raises why the read was stopped
                    raise

        doc = await in_reader(opener)
        try:
            pages = []
            for index in doc.wanted:
                control.check()
                pages.append(await in_reader(doc.read_page, index))
            return cast("DocumentResult", doc.result(pages))
        finally:
            # Closed in a reader thread, after a page still being read (its lock).
            try:
                self._readers.submit(doc.close)
            except RuntimeError:  # the pool is shut down: the server is stopping
                threading.Thread(target=doc.close, daemon=True).start()


async def _watch_client(disconnected: Callable[[], Awaitable[bool]],
                        control: ReadControl) -> None:  # fmt: skip
    """Cancel the read when the client has disconnected (polled: ASGI has no callback)."""
    while not control.cancelled:
        try:
            gone = await disconnected()
        except Exception:  # the connection's state cannot be read: leave the read alone
            return
        if gone:
            control.cancel(ReadCancelled("The client closed the connection."))
            return
        await asyncio.sleep(_CLIENT_POLL_S)


def page_text(result: DocumentResult) -> str:
    """The document's text as one string, pages apart (what a record may keep)."""
    return "\n\n".join(f"<!-- page {p.index} -->\n{p.markdown}" for p in result.pages)
