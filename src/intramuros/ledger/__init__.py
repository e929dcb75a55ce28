"""The tamper-evident ledger: a keyed hash chain of what the gateway did, with encrypted content.

Typical use::

    keys = LedgerKeys.load(key_file)          # or None: no MACs, no content
    ledger = Ledger(db, keys)
    ledger.append("model_call", tenant="acme", key_id="k1", subject="u42",
                  data={"route": "/v1/chat/completions", "model": "m", "status": 200},
                  content={"messages": [...], "answer": "..."})
    print(ledger.checkpoint().to_json())      # signed; keep it outside the database
    print(ledger.public_keys().to_json())     # for whoever checks checkpoints and exports
    report = ledger.verify()
    assert report.ok and report.authenticated

A third party checks an export with the public keys alone::

    verify_export(path, checkpoint=Checkpoint.from_json(kept), public_keys=PublicKeys.from_file(f))
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
from intramuros.ledger.errors import LedgerIntegrityError, LedgerKeyRequired, LedgerScrubError
from intramuros.ledger.export import export_ledger
from intramuros.ledger.export_verify import load_checkpoint, verify_export
from intramuros.ledger.ledger import Ledger
from intramuros.ledger.rows import LedgerEntry
from intramuros.ledger.signing import PublicKeys
from intramuros.ledger.tables import (
    TOMBSTONE_KINDS,
    chain_mac_steps,
    ledger_content,
    ledger_migration_steps,
    ledger_records,
)

__all__ = [
    "GENESIS_HASH",
    "TOMBSTONE_KINDS",
    "Checkpoint",
    "Ledger",
    "LedgerEntry",
    "LedgerIntegrityError",
    "LedgerKeyError",
    "LedgerKeyMissing",
    "LedgerKeyRequired",
    "LedgerKeys",
    "LedgerScrubError",
    "PublicKeys",
    "VerifyReport",
    "canonical_json",
    "chain_mac_steps",
    "content_aad",
    "export_ledger",
    "generate_key_file",
    "ledger_content",
    "ledger_migration_steps",
    "ledger_records",
    "load_checkpoint",
    "rotate",
    "verify_export",
]
