"""The model catalogue: records, bundled models, provenance and verification."""

from intramuros.catalog.records import ModelRecord, Origin

__all__ = ["ModelRecord", "Origin"]
