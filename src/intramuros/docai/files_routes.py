"""Routes of the files family: OpenAI's (and Mistral's) Files API, tenant-scoped.

Thin: the docai service does the work. The multipart body is parsed here (not
by FastAPI's form parameters) so that every malformed upload gets an answer
naming what is wrong, in the API's error shape.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from intramuros.docai import protocol as dp
from intramuros.docai.service import DocaiService
from intramuros.files.errors import BadUpload
from intramuros.gate.auth import principal
from intramuros.gate.tenants import Principal

router = APIRouter(prefix="/v1")
Caller = Depends(principal)

# Fields OpenAI's and Mistral's clients may send besides file and purpose. Mistral's
# expiry and visibility are accepted, not applied (visibility is always the tenant).
_EXPIRY_FIELDS = ("expires_after[anchor]", "expires_after[seconds]")
_OPTIONAL_FIELDS = {*_EXPIRY_FIELDS, "expiry", "visibility"}
# OpenAI's bounds for expires_after.seconds: one hour to thirty days.
EXPIRY_RANGE = (3600, 2_592_000)
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "purpose"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "purpose": {"type": "string", "enum": list(dp.PURPOSES)},
                "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                "expires_after[seconds]": {"type": "integer", "minimum": EXPIRY_RANGE[0],
                                           "maximum": EXPIRY_RANGE[1]},
            },
        }}},
    }
}  # fmt: skip


def _expiry(form: Any) -> int | None:
    """``expires_after`` from the form (OpenAI's anchor and seconds), checked."""
    anchor, seconds = (form.get(name) for name in _EXPIRY_FIELDS)
    if anchor is None and seconds is None:
        return None
    if seconds is None:
        raise BadUpload("expires_after needs 'seconds'.", param="expires_after[seconds]")
    if anchor is not None and anchor != "created_at":
        raise BadUpload("expires_after's anchor must be 'created_at'.",
                        param="expires_after[anchor]")  # fmt: skip
    low, high = EXPIRY_RANGE
    text = seconds.strip() if isinstance(seconds, str) else ""
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise BadUpload(f"expires_after's seconds must be a whole number from {low} to {high}.",
                        param="expires_after[seconds]")  # fmt: skip
    return int(text)


def _service(request: Request) -> DocaiService:
    service: DocaiService = request.app.state.workloads["docai"]
    return service


@router.post("/files", response_model=dp.FileObject, openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, who: Principal = Caller) -> dp.FileObject:
    """Upload a file (multipart: ``file``, ``purpose``); stored encrypted, sha256 recorded."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise BadUpload("POST /v1/files takes a multipart/form-data body with the fields "
                        "'file' and 'purpose'.")  # fmt: skip
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # starlette's HTTPException or the parser's own errors
        detail = getattr(exc, "detail", None) or type(exc).__name__
        raise BadUpload(f"The multipart/form-data body could not be parsed: {detail}.") from None
    try:
        for key in form:
            if key not in ("file", "purpose") and key not in _OPTIONAL_FIELDS:
                raise BadUpload(f"Unrecognized form field: '{key[:64]}'.", param=key[:64])
        upload, purpose = form.get("file"), form.get("purpose")
        if upload is None:
            raise BadUpload("Missing required parameter: 'file'.", param="file")
        if not isinstance(upload, UploadFile):
            raise BadUpload("'file' must be a file part (with a filename), not a text field.",
                            param="file")  # fmt: skip
        if purpose is None:
            raise BadUpload("Missing required parameter: 'purpose'.", param="purpose")
        if not isinstance(purpose, str):
            raise BadUpload("'purpose' must be a text field.", param="purpose")
        expires_after = _expiry(form)
        service = _service(request)
        data = await upload.read(service.files_config.files_max_bytes + 1)
        return await service.upload(who, filename=upload.filename,
                                    content_type=upload.content_type, data=data,
                                    purpose=purpose.strip(),
                                    expires_after=expires_after)  # fmt: skip
    finally:
        await form.close()


@router.get("/files", response_model=dp.FileList)
async def list_files(
    request: Request,
    purpose: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=10000, ge=1, le=10000),
    after: str | None = Query(default=None, max_length=64),
    order: Literal["asc", "desc"] = Query(default="desc"),
    page: int | None = Query(default=None, ge=0, le=1_000_000),
    page_size: int | None = Query(default=None, ge=1, le=10000),
    who: Principal = Caller,
) -> dp.FileList:
    """The tenant's files: OpenAI's cursor (``after``, ``limit``) or Mistral's pages."""
    offset = 0
    if page_size is not None:
        limit, offset = page_size, (page or 0) * page_size
    return await _service(request).list_files(who, purpose=purpose, limit=limit, after=after,
                                              order=order, offset=offset)  # fmt: skip


@router.get("/files/{file_id}", response_model=dp.FileObject)
async def retrieve_file(file_id: str, request: Request, who: Principal = Caller) -> dp.FileObject:
    """One file's metadata."""
    return await _service(request).get_file(who, file_id)


@router.get("/files/{file_id}/content", response_class=Response)
async def file_content(file_id: str, request: Request, who: Principal = Caller) -> Response:
    """A file's bytes, as uploaded (served as an attachment, never rendered)."""
    record, data = await _service(request).file_content(who, file_id)
    # A stored name may hold anything a client sent: only printable ASCII goes in raw.
    ascii_name = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in record.filename)
    utf8_name = quote(record.filename.encode("utf-8", "replace"))
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{utf8_name}"
    return Response(content=data, media_type="application/octet-stream", headers={
        "Content-Disposition": disposition, "X-Content-Type-Options": "nosniff",
    })  # fmt: skip


@router.delete("/files/{file_id}", response_model=dp.FileDeleted)
async def delete_file(file_id: str, request: Request, who: Principal = Caller) -> dp.FileDeleted:
    """Delete a file: ``{"id", "object": "file", "deleted": true}``."""
    return await _service(request).delete_file(who, file_id)
