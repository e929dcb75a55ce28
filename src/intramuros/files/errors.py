"""Errors of the Files API and of the document-AI routes built on it."""

from __future__ import annotations

from intramuros.errors import ClientError, InvalidRequest, NotFound, PayloadTooLarge, ServerError


class FileNotFound(NotFound):
    """No such file for this tenant (another tenant's file answers exactly the same)."""

    code = "file_not_found"

    def __init__(self, file_id: str, *, param: str = "file_id") -> None:
        shown = file_id if len(file_id) <= 64 else file_id[:64] + "..."
        super().__init__(f"No file '{shown}'.", param=param)


class FileTooLarge(PayloadTooLarge):
    """A file over ``files_max_bytes``."""

    code = "file_too_large"


class BadUpload(InvalidRequest):
    """A multipart upload that is malformed or misses a field."""

    code = "invalid_upload"


class RemoteURLRefused(InvalidRequest):
    """A document given by http(s) URL: nothing enters over the network here."""

    code = "remote_url_refused"


class InvalidPageList(InvalidRequest):
    """``pages`` that cannot be read, or that asks for more than any document may have."""

    code = "invalid_pages"


class BadDocument(InvalidRequest):
    """A document reference we cannot use: bad data URL, bad base64, wrong media type."""

    code = "invalid_document"


class DocumentUnreadable(ClientError):
    """The reader failed on this document in a way it did not classify (logged in full)."""

    status = 422
    code = "document_unreadable"


class ExtractionFailed(ClientError):
    """The chat model's answer did not give schema-valid JSON (e.g. cut by its token budget)."""

    status = 422
    code = "extraction_failed"


class FileStoreError(ServerError):
    """A stored file is missing, altered, or does not decrypt."""

    code = "file_store_error"
