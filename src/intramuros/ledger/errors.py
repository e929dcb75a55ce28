"""The ledger's errors (the key errors live with the keys, in ``crypto``)."""

from __future__ import annotations

from intramuros.errors import ServerError
from intramuros.ledger.crypto import LedgerKeyMissing


class LedgerIntegrityError(ServerError):
    """Stored data does not authenticate: content that is not its record's, or a forged head.

    Raised by operations that would otherwise vouch for tampered data (reading
    content, signing a checkpoint or an export); ``intramuros ledger verify``
    names the first bad record.
    """

    code = "ledger_integrity_error"


class LedgerKeyRequired(LedgerKeyMissing):
    """The ledger's records are MAC'd with the ledger key, but no key is loaded to append.

    Appending without it would add records that anyone able to write the
    database could have written; verification would (rightly) reject them.
    """

    code = "ledger_key_required"


class LedgerScrubError(ServerError):
    """Content was erased and the erasure recorded, but the database file was not scrubbed.

    Until a later ``VACUUM`` succeeds, the erased ciphertext may linger in free
    pages (or SQLite's write-ahead log). ``erased`` is the number of content
    rows the erasure deleted.
    """

    code = "ledger_scrub_error"

    def __init__(self, message: str, *, erased: int) -> None:
        super().__init__(message)
        self.erased = erased
