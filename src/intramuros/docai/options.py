"""What to do with a document: the checked options of one ``/v1/ocr`` request or job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from intramuros.docai import protocol as dp
from intramuros.docai.extract import annotation_schema
from intramuros.docai.pipeline import OcrEngine
from intramuros.docai.sources import ocr_engine, page_list
from intramuros.errors import InvalidRequest


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


def ocr_options(req: dp.OCRRequest | dp.OCRJobRequest, max_pages: int) -> OcrOptions:
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
        pages=page_list(req.pages, max_pages),
        include_images=bool(req.include_image_base64), image_limit=image_limit,
        image_min_size=image_min, schema=found[0] if found else None,
        schema_name=found[1] if found else "document",
        instructions=req.document_annotation_prompt, languages=req.languages,
    )  # fmt: skip
