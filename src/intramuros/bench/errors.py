"""Errors of ``intramuros bench`` (reported by the CLI in one line, exit 1)."""

from __future__ import annotations

from intramuros.errors import IntramurosError


class BenchError(IntramurosError):
    """The bench cannot run as asked (bad suite, unknown model, unreachable server...)."""

    status = 400
    type = "invalid_request_error"
    code = "bench_error"


class SuiteError(BenchError):
    """A suite file is missing or malformed; the message names the file and line."""

    code = "bad_suite"


class ServerUnavailable(BenchError):
    """The server to benchmark cannot be reached or started."""

    code = "server_unavailable"
