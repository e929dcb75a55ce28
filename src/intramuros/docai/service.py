"""The document-AI workload's service: Files API, ``/v1/ocr`` and OCR batch jobs.

Built once per app from the core service. Every document read is a metered
call of the gate (``core.begin_call(who, "/v1/ocr", model)`` ... ``end_call``,
pages and bytes in ``meter.extra``); structured extraction is a chat call
through ``core.chat``. Reading is CPU-bound: it runs in a worker thread,
at most ``docai_concurrency`` documents at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from intramuros.docai import pipeline
from intramuros.docai import protocol as dp
from intramuros.docai.extract import annotation_schema, extract
from intramuros.docai.jobs import JobRunner
from intramuros.docai.pipeline import DocumentResult, OcrEngine
from intramuros.docai.retention import purge_documents
from intramuros.docai.sources import (
    decode_data_url,
    document_source,
    ocr_engine,
    page_list,
    to_response,
    usage_extra,
)
from intramuros.errors import IntramurosError, InvalidRequest
from intramuros.files.errors import DocumentUnreadable, FileTooLarge
from intramuros.files.names import clean_mime, safe_filename, sniff_mime
from intramuros.files.store import FileRecord, FileStore
from intramuros.gate.tenants import Principal
from intramuros.serving.service import InferenceService

log = logging.getLogger(__name__)

_MULTIPART_SLACK = 1024 * 1024  # form fields and part headers around the file


@dataclass(frozen=True)
class OcrOptions:
    """What to do with a document: the options of one /v1/ocr request (or job)."""

    model: str
    engine: OcrEngine
    pages: list[int] | None = None
    include_images: bool = False
    image_limit: int | None = None
    image_min_size: int | None = None
    schema: dict[str, Any] | None = None
    schema_name: str = "document"
    instructions: str | None = None
    languages: list[str] | None = None


class DocaiService:
    """Serving logic of the docai workload; routes call it, it calls the core service."""

    name = "docai"

    def __init__(self, core: InferenceService) -> None:
        self.core = core
        self.settings = core.settings
        limit = self.settings.files_max_bytes
        # Uploads and inline (base64, 4/3 larger) documents get their own body limits.
        self.body_limits: dict[str, int] = {
            "/v1/files": limit + _MULTIPART_SLACK,
            "/v1/ocr": limit * 4 // 3 + _MULTIPART_SLACK,
        }
        self._store: FileStore | None = None
        self._slots = asyncio.Semaphore(self.settings.docai_concurrency)
        self.jobs = JobRunner(self)
        core.purge_hooks.append(self.purge)

    async def start(self) -> None:
        """Open the file store (creating its key on first use) and the job runner."""
        self._store = await asyncio.to_thread(FileStore.from_settings, self.settings,
                                              self.core.db)  # fmt: skip
        if "ledger" not in self._store.keys.sets and self.settings.files_key_file is None:
            log.warning("stored files are encrypted with %s, kept in the data dir; give "
                        "--files-key-file or a ledger key for protection at rest",
                        self.settings.data_dir / "files.key")  # fmt: skip
        await self.jobs.start()

    async def close(self) -> None:
        """Stop the job runner (running jobs resume at the next start)."""
        await self.jobs.close()

    def purge(self, actor: str) -> None:
        """Delete expired files, and files and jobs past retention (the core's purge hook)."""
        purge_documents(self.core.tenants, self.files, self.core.ledger, actor=actor)

    @property
    def files(self) -> FileStore:
        """The file store (opened in ``start``)."""
        if self._store is None:
            self._store = FileStore.from_settings(self.settings, self.core.db)
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
        if len(data) > self.settings.files_max_bytes:
            raise FileTooLarge(f"The file is over the limit of {self.settings.files_max_bytes} "
                               "bytes.", param="file")  # fmt: skip
        mime = sniff_mime(data) or clean_mime(content_type) or "application/octet-stream"
        record = await asyncio.to_thread(
            self.files.put, who.tenant, data, filename=safe_filename(filename),
            purpose=purpose, mime_type=mime, key_id=who.key_id, expires_after=expires_after,
        )  # fmt: skip
        await asyncio.to_thread(self._audit, who, "file_upload", record)
        return dp.FileObject.model_validate(record.to_wire())

    def _audit(self, who: Principal, action: str, record: FileRecord) -> None:
        self.core.ledger.append("file", tenant=who.tenant, key_id=who.key_id, subject=None,
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
        model, engine = ocr_engine(req.model)
        if isinstance(req, dp.OCRRequest):
            if req.bbox_annotation_format is not None:
                raise InvalidRequest("bbox_annotation_format is not supported here; use "
                                     "document_annotation_format.",
                                     param="bbox_annotation_format")  # fmt: skip
            if req.table_format == "html":
                raise InvalidRequest("Only table_format 'markdown' is supported.",
                                     param="table_format")  # fmt: skip
            if req.confidence_scores_granularity not in (None, "page"):
                raise InvalidRequest("Only confidence_scores_granularity 'page' is supported "
                                     "(each page has a confidence).",
                                     param="confidence_scores_granularity")  # fmt: skip
            for name in ("extract_header", "extract_footer"):
                if getattr(req, name):
                    raise InvalidRequest(f"{name} is not supported: headers and footers stay "
                                         "in each page's markdown.", param=name)  # fmt: skip
        found = annotation_schema(req.document_annotation_format, "document_annotation_format")
        image_limit = req.image_limit if isinstance(req, dp.OCRRequest) else None
        image_min = req.image_min_size if isinstance(req, dp.OCRRequest) else None
        return OcrOptions(
            model=model, engine=engine,
            pages=page_list(req.pages, self.settings.docai_max_pages),
            include_images=bool(req.include_image_base64), image_limit=image_limit,
            image_min_size=image_min, schema=found[0] if found else None,
            schema_name=found[1] if found else "document",
            instructions=req.document_annotation_prompt, languages=req.languages,
        )  # fmt: skip

    async def ocr(self, req: dp.OCRRequest, who: Principal) -> dp.OCRResponse:
        """``POST /v1/ocr``: read a document (inline or a stored file), maybe annotate it."""
        opts = self.options(req)
        doc = req.document
        if isinstance(doc, dp.FileChunk):
            record, data = await asyncio.to_thread(self.files.read, who.tenant, doc.file_id,
                                                   param="document.file_id")  # fmt: skip
            filename, source = record.filename, "file"
        else:
            url, param, images_only = document_source(doc)
            _mime, data = decode_data_url(url, param=param, images_only=images_only,
                                          max_bytes=self.settings.files_max_bytes)  # fmt: skip
            name = doc.document_name if isinstance(doc, dp.DocumentURLChunk) else None
            filename, source = safe_filename(name, default="document"), "inline"
        return await self.process(who, data, filename=filename, opts=opts, source=source)

    async def process(
        self, who: Principal, data: bytes, *, filename: str, opts: OcrOptions, source: str
    ) -> dp.OCRResponse:
        """Read one document and (if asked) fill the annotation schema from its text."""
        result = await self.read(who, data, filename=filename, opts=opts, source=source)
        response = to_response(result, opts.model, include_images=opts.include_images,
                               image_limit=opts.image_limit,
                               image_min_size=opts.image_min_size)  # fmt: skip
        if opts.schema is not None:
            found = await extract(
                self.core, who, [page.markdown for page in result.pages], opts.schema,
                model=self.settings.docai_extract_model, name=opts.schema_name,
                instructions=opts.instructions,
            )  # fmt: skip
            response.document_annotation = json.dumps(found.fields, ensure_ascii=False)
            response.document_annotation_pages = {
                k: (result.pages[v].index if v is not None else None)
                for k, v in found.pages.items()
            }
        return response

    async def read(
        self, who: Principal, data: bytes, *, filename: str, opts: OcrOptions, source: str
    ) -> DocumentResult:
        """One metered document read, in a worker thread, at most N at once."""
        meter, _policy = await self.core.begin_call(who, "/v1/ocr", opts.model)
        try:
            async with self._slots:
                result = await asyncio.to_thread(
                    pipeline.read_document, data, filename=filename, pages=opts.pages,
                    ocr=opts.engine, languages=opts.languages,
                    include_images=opts.include_images,
                    max_pages=self.settings.docai_max_pages,
                    max_pixels=self.settings.docai_max_pixels,
                )  # fmt: skip
        except IntramurosError as exc:
            self.core.end_call(meter, exc)
            raise
        except (asyncio.CancelledError, GeneratorExit) as exc:
            meter.status = 499
            self.core.end_call(meter, exc)
            raise
        except Exception as exc:
            # A reader failure it did not classify: the document made it fail, so the
            # caller gets a 4xx naming it; the traceback goes to the log.
            log.exception("reader failed on %s", filename)
            refusal = DocumentUnreadable(f"Cannot read '{filename}': {type(exc).__name__}.",
                                         param="document")  # fmt: skip
            self.core.end_call(meter, refusal)
            raise refusal from None
        meter.extra = usage_extra(result, source)
        self.core.end_call(meter)
        return result
