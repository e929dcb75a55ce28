"""The HTML case report an analyst files: subject, matches with their evidence, decisions."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return escape(", ".join(str(v) for v in value)) or "&mdash;"
    return escape(str(value)) if value not in (None, "") else "&mdash;"


def _details(feature: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in feature.items() if k not in ("feature", "weight"))


def render_case(case: dict[str, Any]) -> str:
    """A self-contained HTML page (no scripts, no external resources)."""
    subject = case["subject"]
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in subject.items()
        if k != "identifiers"
    )
    ids = ", ".join(f"{i['type']}: {i['value']}" for i in subject.get("identifiers") or [])
    if ids:
        rows += f"<tr><th>identifiers</th><td>{escape(ids)}</td></tr>"
    matches = []
    for m in case["matches"]:
        ex = m["explanation"]
        pairs = "".join(
            f"<li>{escape(p['query'])} &harr; {escape(p['listed'])}: {p['similarity']:.2f} "
            f"({escape(p['how'])})</li>" for p in ex["name"]["pairs"]
        )
        feats = "".join(
            f"<li>{escape(f['feature'])} ({f['weight']:+.2f}): "
            f"{escape(_details(f))}"
            f"</li>" for f in ex["features"]
        ) or "<li>no secondary evidence</li>"
        unmatched = ex["name"]["unmatched_query"] + ex["name"]["unmatched_listed"]
        matches.append(
            f"<section class='match'><h3>{escape(m['name'])} &mdash; score {m['score']:.3f}</h3>"
            f"<p>List <b>{escape(m['list'])}</b>, entry {escape(m['source_id'])}, "
            f"type {escape(m['schema'])}, programmes {_cell(m['programs'])}; "
            f"dates of birth {_cell(m['birth_dates'])}; "
            f"nationalities {_cell(m['nationalities'])}.</p>"
            f"<p>Name compared: <b>{escape(ex['name']['listed'])}</b> "
            f"({escape(ex['name']['quality'])} name, method {escape(ex['name']['method'])}, "
            f"name score {ex['name']['score']:.3f}); unmatched tokens: {_cell(unmatched)}</p>"
            f"<ul>{pairs}</ul><p>Secondary evidence:</p><ul>{feats}</ul></section>"
        )
    history = "".join(
        f"<tr><td>{_when(h['at'])}</td><td>{escape(h['decision'])}</td>"
        f"<td>{_cell(h.get('by'))}</td><td>{escape(h.get('note') or '')}</td></tr>"
        for h in case["history"]
    ) or "<tr><td colspan='4'>no decision yet</td></tr>"
    lists = ", ".join(f"{escape(k)} v{v['version']} ({v['entities']} entries)"
                      for k, v in case.get("lists", {}).items())  # fmt: skip
    summary = ""
    if case.get("summary"):
        drafted = case["summary"]
        summary = ("<section><h2>Summary (machine-drafted by "
                   f"{escape(str(drafted.get('model')))}: check it against the evidence)</h2>"
                   f"<p>{escape(str(drafted.get('text')))}</p></section>")  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>KYC case {escape(case['id'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
th{{text-align:left;padding-right:1em}}section.match{{border-top:1px solid #999;margin-top:1em}}
td,th{{vertical-align:top}}</style></head><body>
<h1>KYC screening case {escape(case['id'])}</h1>
<p>Tenant {escape(case['tenant'])}; opened {_when(case['created_at'])}; status
<b>{escape(case['status'])}</b>; threshold {case.get('threshold', 0):.2f}; reason
{_cell(case.get('reason'))}.</p>
<p>Lists screened: {lists or '&mdash;'}.</p>
<h2>Subject</h2><table>{rows}</table>
{summary}
<h2>Matches ({len(case['matches'])})</h2>
{''.join(matches)}
<h2>Decisions</h2>
<table><tr><th>when</th><th>decision</th><th>by (key)</th><th>note</th></tr>{history}</table>
</body></html>
"""
