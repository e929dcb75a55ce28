"""The errors of reading a document: each names the document and the reason.

All are :class:`~intramuros.errors.ClientError` (the document, not the
server, is at fault) with a stable ``code`` and ``param="document"``, except
:class:`OcrUnavailable`, a server-side problem (an extra or a Debian package
is missing), and the two ways a read is stopped from outside
(:class:`ReadCancelled`, :class:`ServerStopping`). Callers (the OCR route,
the batch runner) match on the class or the code, never on the message.
Refusals for a limit name the limit and the setting that raises it.
"""

from __future__ import annotations

from intramuros.errors import ClientError, ServerError


class DocumentError(ClientError):
    """A document we cannot read. ``filename`` and ``reason`` are kept apart for reports."""

    code = "invalid_document"

    def __init__(self, filename: str, reason: str, *, param: str = "document") -> None:
        super().__init__(f"Cannot read '{filename}': {reason}", param=param)
        self.filename = filename
        self.reason = reason


class InvalidDocument(DocumentError):
    """Corrupted or truncated bytes, or not what its name says (``x.pdf`` that is no PDF)."""

    code = "invalid_document"


class DocumentEncrypted(DocumentError):
    """A password-protected PDF (we take no passwords: the caller must decrypt it)."""

    code = "document_encrypted"


class DocumentEmpty(DocumentError):
    """No pages (a zero-page PDF) or no bytes at all."""

    code = "document_empty"


class TooManyPages(DocumentError):
    """More pages than ``max_pages`` allows."""

    status = 413
    code = "too_many_pages"


class ImageTooLarge(DocumentError):
    """An image (or a page rendered for OCR) over the pixel limit: a decompression bomb."""

    status = 413
    code = "image_too_large"


class PageTooLarge(ImageTooLarge):
    """A PDF page whose box (times ``/UserUnit``) is over the pixel limit even at the lowest dpi."""

    code = "page_too_large"


class DocumentTimeLimit(DocumentError):
    """Reading the document took more work time than the per-document limit allows."""

    status = 422
    code = "document_time_limit"


class UnsupportedDocument(DocumentError):
    """Bytes that are neither a PDF nor an image format we read."""

    status = 415
    code = "unsupported_document"


class InvalidPages(DocumentError):
    """A requested page index that the document does not have."""

    code = "invalid_pages"

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(filename, reason, param="pages")


class InvalidOcrOption(DocumentError):
    """An unknown OCR engine or language code."""

    code = "invalid_ocr_option"


class ReadCancelled(ClientError):
    """The read was stopped because nobody wants its answer: the client left, the job was cancelled.

    Nobody receives this error; its status (499, nginx's "client closed
    request") is what the request log and the ledger record.
    """

    status = 499
    code = "request_cancelled"


class ServerStopping(ServerError):
    """The read was stopped because the server is shutting down."""

    status = 503
    code = "server_shutting_down"


class OcrUnavailable(ServerError):
    """The OCR engine asked for is not installed here (pip extra or Debian package)."""

    status = 503
    code = "ocr_unavailable"
