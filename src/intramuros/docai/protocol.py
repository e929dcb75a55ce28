"""Wire types of the Files API, ``POST /v1/ocr`` (Mistral's shape) and OCR batch jobs.

Requests forbid unknown fields and coerce nothing, like the rest of the API;
Mistral's parameters we accept but cannot honour are refused by the service,
naming the parameter. This module imports no engine or serving code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from intramuros.protocol.base import Request, Wire
from intramuros.protocol.openai import ResponseFormat

# Bounds of ``pages`` before anything is parsed (a document never has more than
# ``docai_max_pages`` pages anyway): the list form's length, the string form's
# length in characters and number of ranges.
MAX_PAGE_ITEMS = 10_000
MAX_PAGES_TEXT = 65_536
Pages = (int | Annotated[list[int], Field(max_length=MAX_PAGE_ITEMS)]
         | Annotated[str, Field(max_length=MAX_PAGES_TEXT)] | None)  # fmt: skip



def bounded_pages(value: Any) -> Any:
    """Refuse an oversized ``pages`` with one clear error before the union is tried."""
    if isinstance(value, list) and len(value) > MAX_PAGE_ITEMS:
        raise ValueError(f"pages lists {len(value):,} page indexes; at most {MAX_PAGE_ITEMS:,}")
    if isinstance(value, str) and len(value) > MAX_PAGES_TEXT:
        raise ValueError(f"pages is {len(value):,} characters long; at most {MAX_PAGES_TEXT:,}")
    return value


# OpenAI's purposes, plus Mistral's ``ocr``.
PURPOSES = (
    "assistants", "assistants_output", "batch", "batch_output", "fine-tune",
    "fine-tune-results", "vision", "user_data", "evals", "ocr",
)  # fmt: skip


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


class FileObject(Wire):
    """OpenAI's File object (Mistral reads the same fields); ``sha256`` is ours."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    sha256: str
    mimetype: str
    source: str = "upload"
    sample_type: str = "document"
    num_lines: int | None = None
    deleted: bool = False


class FileList(Wire):
    """``GET /v1/files``: OpenAI's cursor page, with Mistral's ``total``."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
    total: int


class FileDeleted(Wire):
    """``DELETE /v1/files/{id}``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


# --------------------------------------------------------------------------
# OCR (Mistral's /v1/ocr)
# --------------------------------------------------------------------------


class DocumentURLChunk(Request):
    """A document as a ``data:`` URL (PDF or image); http(s) URLs are refused."""

    type: Literal["document_url"]
    document_url: str
    document_name: str | None = None


class ImageURL(Request):
    """``image_url`` as an object."""

    url: str
    detail: str | None = None


class ImageURLChunk(Request):
    """An image as a ``data:`` URL."""

    type: Literal["image_url"]
    image_url: ImageURL | str


class FileChunk(Request):
    """A file uploaded to ``/v1/files`` earlier (by this tenant)."""

    type: Literal["file"]
    file_id: str


Document = Annotated[DocumentURLChunk | ImageURLChunk | FileChunk, Field(discriminator="type")]


class OCRRequest(Request):
    """``POST /v1/ocr``: Mistral's request, plus ``languages`` (Tesseract codes)."""

    model: str | None = None
    id: str | None = None
    document: Document
    pages: Pages = None
    include_image_base64: bool | None = None
    image_limit: int | None = Field(default=None, ge=0)
    image_min_size: int | None = Field(default=None, ge=0)
    bbox_annotation_format: ResponseFormat | None = None
    document_annotation_format: ResponseFormat | None = None
    document_annotation_prompt: str | None = Field(default=None, max_length=4000)
    table_format: Literal["markdown", "html"] | None = None
    extract_header: bool | None = None
    extract_footer: bool | None = None
    include_blocks: bool | None = None
    confidence_scores_granularity: Literal["word", "page", "block"] | None = None
    languages: list[str] | None = Field(default=None, max_length=8)

    _pages = field_validator("pages", mode="before")(bounded_pages)


class OCRImage(Wire):
    """An image found on a page."""

    id: str
    top_left_x: int
    top_left_y: int
    bottom_right_x: int
    bottom_right_y: int
    image_base64: str | None = None


class OCRDimensions(Wire):
    """The page's size in pixels at ``dpi``."""

    dpi: int
    height: int
    width: int


class OCRPage(Wire):
    """One page read: Mistral's fields, plus ``confidence``, ``method`` and ``language``."""

    index: int
    markdown: str
    images: list[OCRImage] = Field(default_factory=list)
    dimensions: OCRDimensions | None
    tables: list[Any] = Field(default_factory=list)
    hyperlinks: list[str] = Field(default_factory=list)
    header: str | None = None
    footer: str | None = None
    confidence: float
    method: str
    language: str | None = None


class OCRUsage(Wire):
    """``usage_info``."""

    pages_processed: int
    doc_size_bytes: int


class OCRResponse(Wire):
    """The answer of ``POST /v1/ocr``.

    ``document_annotation`` is a JSON string (as Mistral's); the extra
    ``document_annotation_pages`` gives, for each leaf field of it (by path,
    e.g. ``seller.name``, ``line_items[0].amount``), the 0-based page its value
    was found on, or null when it was not found verbatim in the text.
    """

    pages: list[OCRPage]
    model: str
    usage_info: OCRUsage
    document_annotation: str | None = None
    document_annotation_pages: dict[str, int | None] | None = None


# --------------------------------------------------------------------------
# OCR batch jobs (POST /v1/batch/ocr)
# --------------------------------------------------------------------------

JobStatus = Literal["queued", "running", "completed", "failed", "cancelling", "cancelled"]


class OCRJobRequest(Request):
    """A batch of this tenant's files to read, with the options of ``/v1/ocr``."""

    model: str | None = None
    file_ids: list[str] = Field(min_length=1, max_length=1000)
    pages: Pages = None
    include_image_base64: bool | None = None
    document_annotation_format: ResponseFormat | None = None
    document_annotation_prompt: str | None = Field(default=None, max_length=4000)
    languages: list[str] | None = Field(default=None, max_length=8)
    metadata: dict[str, str] | None = None

    _pages = field_validator("pages", mode="before")(bounded_pages)


class RequestCounts(Wire):
    """How many of a job's files are done."""

    total: int
    completed: int
    succeeded: int
    failed: int


class OCRJob(Wire):
    """A batch job and its progress."""

    id: str
    object: Literal["ocr.job"] = "ocr.job"
    status: JobStatus
    model: str
    file_ids: list[str]
    created_at: int
    started_at: int | None = None
    completed_at: int | None = None
    request_counts: RequestCounts
    pages_processed: int
    error: str | None = None
    metadata: dict[str, str] | None = None


class OCRJobList(Wire):
    """``GET /v1/batch/ocr``."""

    object: Literal["list"] = "list"
    data: list[OCRJob]
    has_more: bool = False


class OCRJobResult(Wire):
    """The outcome for one file of a job."""

    index: int
    file_id: str
    status: Literal["pending", "succeeded", "failed"]
    response: OCRResponse | None = None
    error: dict[str, Any] | None = None


class OCRJobResults(Wire):
    """``GET /v1/batch/ocr/{id}/results``."""

    object: Literal["list"] = "list"
    job_id: str
    status: JobStatus
    data: list[OCRJobResult]
    has_more: bool = False
