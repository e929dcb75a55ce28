"""Helpers shared by the tests: the error envelope every refusal must have, the CLI runners.

``check_error`` is the one check of OpenAI's error body (status, content type,
exactly ``message``/``type``/``param``/``code``, no traceback or server path
in the message). ``run_cli`` runs ``python -m intramuros.cli`` as an operator
would (a process group of its own, ended whole); ``cli`` is the same for a
command that must succeed; ``invoke`` runs a command in this process (no
interpreter start-up) through click's runner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests import procs

ANY: Any = object()  # "do not check this field"

# What an error message must never show: a traceback, a source line, a server path.
LEAKS = ("Traceback", 'File "', '.py", line', "/work", "site-packages", "/usr/lib", "/tmp/")


def check_error(
    r: httpx.Response,
    status: int | None = None,
    code: Any = ANY,
    *,
    param: Any = ANY,
    type_: Any = ANY,
    contains: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Assert ``r`` is an OpenAI error object (with this status and fields); return it.

    ``status`` None checks the envelope only; ``code``, ``param`` and ``type_``
    are checked when given (``param=None`` asserts a null ``param``).
    """
    if status is not None:
        assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    for leak in LEAKS:
        assert leak not in err["message"], f"{leak!r} leaked in {err['message']!r}"
    if param is not ANY:
        assert err["param"] == param, err
    if code is not ANY:
        assert err["code"] == code, err
    if type_ is not ANY:
        assert err["type"] == type_, err
    for text in contains:
        assert text in err["message"], err
    return err


def run_cli(
    *args: str,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    clean_env: bool = False,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m intramuros.cli ARGS [--data-dir DATA_DIR]``; its result, whatever it is.

    ``env`` is added to this process's environment; with ``clean_env`` no
    ``INTRAMUROS_*`` variable leaks in from the caller and no terminal size is
    imposed (output is what a pipe or a log file receives). The command runs
    in a process group of its own, ended whole when it returns or times out.
    """
    base = os.environ
    if clean_env:
        base = {k: v for k, v in os.environ.items()  # type: ignore[assignment]
                if not k.startswith("INTRAMUROS_") and k not in ("COLUMNS", "LINES")}  # fmt: skip
    cmd = [sys.executable, "-m", "intramuros.cli", *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    proc = procs.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                       text=True, env={**base, **(env or {})})  # fmt: skip
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.end(proc, timeout=5)
        proc.communicate()
        raise
    finally:
        procs.end(proc, timeout=5)  # anything the command left in its group
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> str:  # fmt: skip
    """Run an `intramuros` command against ``data_dir``; its stdout (fails the test on error)."""
    r = run_cli(*args, data_dir=data_dir, env=env, timeout=timeout)
    assert r.returncode == 0, f"intramuros {' '.join(args)}: {r.stderr}"
    return r.stdout


def invoke(*args: str, catch_exceptions: bool = False, input: str | None = None,
           env: dict[str, str] | None = None) -> Any:  # fmt: skip
    """Run an `intramuros` command in this process (click's runner); the click ``Result``."""
    from click.testing import CliRunner

    from intramuros.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=catch_exceptions, input=input,
                              env=env)  # fmt: skip


def quick_cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """:func:`cli` in this process (no interpreter to start): its stdout, failing on error."""
    r = invoke(*args, "--data-dir", str(data_dir), env=env, catch_exceptions=True)
    assert r.exit_code == 0, f"intramuros {' '.join(args)}: {r.output} {r.exception!r}"
    return str(r.stdout)
