"""Cases (a screening with matches at or above the threshold) and analysts' decisions.

A case belongs to one tenant; reading or deciding another tenant's case is
indistinguishable from a missing one. Its history keeps every decision.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from intramuros.kyc.errors import CaseNotFound
from intramuros.kyc.tables import kyc_cases
from intramuros.platform.interface import UnitOfWork

Decision = Literal["true_match", "false_positive", "escalate"]
STATUS_OF: dict[str, str] = {"true_match": "confirmed", "false_positive": "cleared",
                             "escalate": "escalated"}  # fmt: skip


def new_case(tenant: str, customer_id: str | None, subject: dict[str, Any],
             matches: list[dict[str, Any]], context: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The row of a new open case (its id is ``row["id"]``), to insert with others."""
    data = {"subject": subject, "matches": matches, **context}
    return {"id": "case_" + secrets.token_hex(10), "tenant": tenant, "customer_id": customer_id,
            "created_at": time.time(), "status": "open",
            "top_score": max((m["score"] for m in matches), default=0.0),
            "data": json.dumps(data, ensure_ascii=False), "history": "[]"}  # fmt: skip


def insert_cases(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert rows made by :func:`new_case`."""
    if rows:
        conn.execute(kyc_cases.insert(), rows)


class Cases:
    """Case records of every tenant (always queried with the tenant)."""

    def __init__(self, db: UnitOfWork) -> None:
        self.db = db

    def open(self, tenant: str, customer_id: str | None, subject: dict[str, Any],
             matches: list[dict[str, Any]], context: dict[str, Any]) -> str:  # fmt: skip
        """A new open case, in a transaction of its own; returns its id."""
        row = new_case(tenant, customer_id, subject, matches, context)
        with self.db.begin() as conn:
            insert_cases(conn, [row])
        return str(row["id"])

    def list(self, tenant: str, status: str | None = None, limit: int = 100,
             before: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """The tenant's cases, newest first (summaries, without the evidence)."""
        c = kyc_cases.c
        query = sa.select(c.id, c.customer_id, c.created_at, c.status, c.top_score, c.data)
        query = query.where(c.tenant == tenant)
        if status:
            query = query.where(c.status == status)
        if before is not None:
            query = query.where(c.created_at < before)
        with self.db.begin() as conn:
            rows = conn.execute(query.order_by(c.created_at.desc()).limit(limit)).all()
        out = []
        for r in rows:
            data = json.loads(r[5])
            out.append({"id": r[0], "customer_id": r[1], "created_at": r[2], "status": r[3],
                        "top_score": r[4], "subject_name": data["subject"].get("name"),
                        "matches": len(data["matches"])})  # fmt: skip
        return out

    def get(self, tenant: str, case_id: str) -> dict[str, Any]:
        """One case with its evidence and history (CaseNotFound for another tenant's)."""
        c = kyc_cases.c
        with self.db.begin() as conn:
            query = sa.select(c.id, c.customer_id, c.created_at, c.status, c.top_score, c.data,
                              c.history, c.tenant)  # fmt: skip
            row = conn.execute(query.where((c.id == case_id) & (c.tenant == tenant))).first()
        if row is None:
            raise CaseNotFound(f"No case {case_id!r}.", param="case_id")
        return {"id": row[0], "tenant": row[7], "customer_id": row[1], "created_at": row[2],
                "status": row[3], "top_score": row[4], **json.loads(row[5]),
                "history": json.loads(row[6])}  # fmt: skip

    def decide(self, tenant: str, case_id: str, decision: Decision, note: str,
               actor: str | None) -> dict[str, Any]:  # fmt: skip
        """Record an analyst's decision; returns the updated case."""
        case = self.get(tenant, case_id)
        entry = {"decision": decision, "note": note, "by": actor, "at": time.time(),
                 "previous_status": case["status"]}  # fmt: skip
        history = [*case["history"], entry]
        c = kyc_cases.c
        with self.db.begin() as conn:
            conn.execute(kyc_cases.update().where((c.id == case_id) & (c.tenant == tenant))
                         .values(status=STATUS_OF[decision], history=json.dumps(history)))
        return self.get(tenant, case_id)

    def set_summary(self, tenant: str, case_id: str, summary: dict[str, Any]) -> dict[str, Any]:
        """Attach a (machine-drafted) summary to a case; returns the updated case."""
        c = kyc_cases.c
        with self.db.begin() as conn:
            row = conn.execute(sa.select(c.data).where((c.id == case_id) & (c.tenant == tenant))
                               ).first()  # fmt: skip
            if row is None:
                raise CaseNotFound(f"No case {case_id!r}.", param="case_id")
            data = {**json.loads(row[0]), "summary": summary}
            conn.execute(kyc_cases.update().where((c.id == case_id) & (c.tenant == tenant))
                         .values(data=json.dumps(data, ensure_ascii=False)))
        return self.get(tenant, case_id)
