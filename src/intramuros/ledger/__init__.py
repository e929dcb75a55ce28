"""The tamper-evident ledger: a hash chain of what the gateway did, with encrypted content.

Typical use::

    keys = LedgerKeys.load(key_file)          # or None: records without content
    ledger = Ledger(db, keys)
    ledger.append("model_call", tenant="acme", key_id="k1", subject="u42",
                  data={"route": "/v1/chat/completions", "model": "m", "status": 200},
                  content={"messages": [...], "answer": "..."})
    print(ledger.checkpoint().to_json())      # keep it outside the database
    assert ledger.verify().ok
"""

from intramuros.ledger.chain import GENESIS_HASH, Checkpoint, VerifyReport, canonical_json
from intramuros.ledger.crypto import (
    LedgerKeyError,
    LedgerKeyMissing,
    LedgerKeys,
    content_aad,
    generate_key_file,
    rotate,
)
from intramuros.ledger.export import export_ledger, verify_export
from intramuros.ledger.ledger import (
    Ledger,
    LedgerIntegrityError,
    LedgerScrubError,
)
from intramuros.ledger.rows import LedgerEntry
from intramuros.ledger.tables import ledger_content, ledger_migration_steps, ledger_records

__all__ = [
    "GENESIS_HASH",
    "Checkpoint",
    "Ledger",
    "LedgerEntry",
    "LedgerIntegrityError",
    "LedgerKeyError",
    "LedgerKeyMissing",
    "LedgerKeys",
    "LedgerScrubError",
    "VerifyReport",
    "canonical_json",
    "content_aad",
    "export_ledger",
    "generate_key_file",
    "ledger_content",
    "ledger_migration_steps",
    "ledger_records",
    "rotate",
    "verify_export",
]
