"""The document-AI workload's settings: OCR limits, extraction (the Files API's are
:class:`intramuros.files.settings.FilesSettings`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DocaiSettings(BaseModel):
    """The docai workload's section of the settings (flat names: ``--docai-...`` flags,
    ``INTRAMUROS_...`` variables and TOML keys, like every setting)."""

    model_config = ConfigDict(extra="forbid")

    docai_max_pages: int = Field(
        default=1000, ge=1, description="Most pages in one document; longer ones are refused."
    )
    docai_max_pixels: int = Field(
        default=25_000_000,
        ge=1_000_000,
        description=(
            "Most pixels of one page image: an image or TIFF frame over it is refused (checked "
            "from its header, before decoding: decompression bombs); a PDF page is rendered "
            "for OCR at a lower dpi to fit (its box times /UserUnit), and refused (413) when "
            "even 30 dpi is over. Bounds the memory of one page (about 15 bytes per pixel)."
        ),
    )
    docai_max_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "Most seconds of work on one document (a /v1/ocr request or one file of an OCR "
            "job), counted while its pages are being read, not while it waits for its turn; "
            "over it the read stops with 422 document_time_limit."
        ),
    )
    docai_concurrency: int = Field(
        default=1,
        ge=1,
        description=(
            "Pages the server reads at once (CPU-bound). Waiting documents are served page "
            "by page, tenants in turn, so a long document cannot hold up the others."
        ),
    )
    docai_extract_model: str = Field(
        default="smollm2-135m-instruct",
        description="Chat model that fills document_annotation_format schemas from OCR text.",
    )
