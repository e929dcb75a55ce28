"""Stopping a document read: a cancel flag and a work-time budget, checked by the reader.

A read runs in worker threads, where nothing from the event loop can stop
it. So the reader calls :meth:`ReadControl.check` between pages and between
the steps of a page (render, deskew, OCR, orientation check, layout; the
Tesseract process is polled); ``check`` raises the reason the read must stop:

* the flag was set from the event loop (:meth:`ReadControl.cancel`): the
  client of a synchronous request disconnected, the batch job was
  cancelled, or the server is shutting down; or
* the document has used up its work time (``docai_max_seconds``).

Work time is the time spent reading this document's pages (inside
:meth:`ReadControl.working`), not the time spent waiting for a turn while
other tenants' pages are read: the limit is a property of the document, the
same on an idle server and a busy one. One step (a RapidOCR pass) cannot be
interrupted, so a read stops at most one step after the flag or the budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from intramuros.docai.errors import DocumentTimeLimit
from intramuros.errors import IntramurosError


class ReadControl:
    """The cancel flag and the work-time budget of one document read (thread-safe)."""

    def __init__(self, filename: str = "document", max_seconds: float | None = None) -> None:
        self.filename = filename
        self.max_seconds = max_seconds
        self._flag = threading.Event()
        self._reason: IntramurosError | None = None
        self._lock = threading.Lock()
        self._spent = 0.0
        self._since: float | None = None

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._flag.is_set()

    def cancel(self, reason: IntramurosError) -> None:
        """Stop the read at its next check with ``reason`` (the first reason given wins)."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
        self._flag.set()

    def spent(self) -> float:
        """Seconds of work so far (including the step running now)."""
        with self._lock:
            running = time.monotonic() - self._since if self._since is not None else 0.0
            return self._spent + running

    def check(self) -> None:
        """Raise the reason to stop, if there is one; else return at once."""
        if self._flag.is_set():
            assert self._reason is not None
            raise self._reason
        if self.max_seconds is not None and self.spent() > self.max_seconds:
            raise DocumentTimeLimit(
                self.filename,
                f"reading it took more than {self.max_seconds:g} s of work, the limit per "
                "document (--docai-max-seconds); send fewer pages at once (pages=...)",
            )

    @contextmanager
    def working(self) -> Iterator[None]:
        """Count the time inside as this document's work (one step at a time)."""
        with self._lock:
            self._since = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                if self._since is not None:
                    self._spent += time.monotonic() - self._since
                self._since = None
