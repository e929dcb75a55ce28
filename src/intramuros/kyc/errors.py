"""Errors of the KYC workload (mapped to HTTP in one place, like every other)."""

from __future__ import annotations

from intramuros.errors import ClientError, NotFound, ServerError

__all__ = ["CaseNotFound", "ImportFailed", "KycUnavailable", "ListNotFound", "MalformedList",
           "MatcherRestarted"]


class MalformedList(ClientError):
    """A list file cannot be read at all (not one usable entry, wrong format)."""

    code = "malformed_list"


class ImportFailed(ServerError):
    """A list import failed while writing; the previous version stays active."""

    code = "kyc_import_failed"


class ListNotFound(ClientError):
    """A named list is not loaded."""

    status = 404
    code = "list_not_found"


class CaseNotFound(NotFound):
    """No such case for this tenant (another tenant's case looks exactly the same)."""

    code = "case_not_found"


class KycUnavailable(ServerError):
    """The matching extra (rapidfuzz, jellyfish, anyascii, pycountry) is not installed."""

    status = 503
    code = "kyc_unavailable"


class MatcherRestarted(ServerError):
    """A matcher process died during the screening (killed, out of memory); new ones start."""

    status = 503
    code = "kyc_matcher_restarted"
