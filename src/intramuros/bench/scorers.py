"""Scorers: how one model answer is compared with a suite item's expected value.

Every scorer returns a :class:`Score` between 0 and 1 with a short ``detail``
saying why (kept in the JSON report next to the answer, so a low score can be
read, not just counted). Scorers never raise on a bad *answer*: a model that
returns garbage scores 0. Bad *options* (a broken regex, an invalid schema)
are found when the suite is loaded, by :func:`check_options`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

SCORERS = ("exact", "contains", "regex", "json_schema", "numeric", "choice")


@dataclass(frozen=True)
class Score:
    """One item's score (0..1) and a human-readable reason."""

    value: float
    detail: str


class ScorerOptionError(ValueError):
    """A scorer option in a suite is unusable (names the option)."""


def _squash(text: str) -> str:
    return " ".join(text.split())


def normalise(text: str, *, case: bool = False, accents: bool = False) -> str:
    """Collapse whitespace; fold case unless ``case``; keep accents unless ``accents``."""
    out = _squash(unicodedata.normalize("NFC", text))
    if not case:
        out = out.casefold()
    if accents:
        out = "".join(c for c in unicodedata.normalize("NFD", out)
                      if unicodedata.category(c) != "Mn")  # fmt: skip
    return out


def _strip_punct(text: str) -> str:
    return re.sub(r"^[\W_]+|[\W_]+$", "", text)


# --------------------------------------------------------------------------
# exact, contains, regex
# --------------------------------------------------------------------------


def score_exact(answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """Equal to the expected string; ``normalize`` (default true) squashes
    whitespace and case, ``case_sensitive`` keeps case, ``strip_punctuation``
    ignores leading/trailing punctuation (``"Yes."`` == ``"yes"``)."""
    a, e = answer, str(expected)
    if options.get("normalize", True):
        case = bool(options.get("case_sensitive", False))
        a, e = normalise(a, case=case), normalise(e, case=case)
    else:
        a = a.strip()
    if options.get("strip_punctuation", False):
        a, e = _strip_punct(a), _strip_punct(e)
    return Score(1.0, "equal") if a == e else Score(0.0, f"expected {e!r}, got {a!r}")


def score_contains(answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """The expected string (or every one of a list of them) occurs in the answer
    (case-insensitive unless ``case_sensitive``); a list scores the fraction found."""
    wanted = expected if isinstance(expected, list) else [expected]
    case = bool(options.get("case_sensitive", False))
    hay = normalise(answer, case=case)
    found = [w for w in wanted if normalise(str(w), case=case) in hay]
    missing = [w for w in wanted if w not in found]
    value = len(found) / len(wanted)
    return Score(value, "all found" if not missing else f"missing {missing!r}")


def score_regex(answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """The answer matches the pattern in ``expected`` (``re.search``; ``fullmatch``
    option anchors it; ``ignore_case`` option)."""
    flags = re.IGNORECASE if options.get("ignore_case", False) else 0
    pattern = re.compile(str(expected), flags)
    text = answer.strip()
    hit = pattern.fullmatch(text) if options.get("fullmatch", False) else pattern.search(text)
    return Score(1.0, "matches") if hit else Score(0.0, f"no match for /{expected}/")


# --------------------------------------------------------------------------
# numeric
# --------------------------------------------------------------------------

# A number as people write it: sign, thousands separators (, . space ' ), decimals.
_MINUS, _RSQUO = "\u2212", "\u2019"
_NUMBER = re.compile(rf"[-+{_MINUS}]?\d[\d\s.,'{_RSQUO}]*\d|[-+{_MINUS}]?\d")


def parse_number(text: str) -> float | None:
    """The first number in ``text``: handles 1,234.56 / 1.234,56 / 1 234,56 / 12,5."""
    m = _NUMBER.search(text)
    if not m:
        return None
    raw = m.group(0).replace(_MINUS, "-")
    raw = re.sub(rf"[\s'{_RSQUO}]", "", raw)
    last_dot, last_comma = raw.rfind("."), raw.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        # The later separator is the decimal one.
        dec = "." if last_dot > last_comma else ","
        thousands = "," if dec == "." else "."
        raw = raw.replace(thousands, "").replace(dec, ".")
    elif last_comma >= 0:
        parts = raw.split(",")
        # 1,234 and 1,234,567 are thousands; 12,5 and 1234,56 are decimals.
        if len(parts) > 2 or (len(parts[-1]) == 3 and len(parts[0].lstrip("+-")) <= 3):
            raw = raw.replace(",", "")
        else:
            raw = raw.replace(",", ".")
    elif raw.count(".") > 1:
        raw = raw.replace(".", "")
    try:
        return float(raw)
    except ValueError:
        return None


def score_numeric(answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """The first number in the answer is within ``tolerance`` (absolute, default 0)
    or ``relative_tolerance`` of the expected number."""
    got = parse_number(answer)
    if got is None:
        return Score(0.0, "no number in the answer")
    want = float(expected)
    tol = float(options.get("tolerance", 0.0))
    rel = float(options.get("relative_tolerance", 0.0))
    ok = math.isclose(got, want, rel_tol=rel, abs_tol=tol) or got == want
    return Score(1.0, f"{got:g}") if ok else Score(0.0, f"expected {want:g}, got {got:g}")


# --------------------------------------------------------------------------
# choice
# --------------------------------------------------------------------------


def map_choice(answer: str, choices: list[str]) -> str | None:
    """Which of ``choices`` the answer names: an exact (normalised) match, else
    the choice mentioned first as a whole word (longest wins at one position)."""
    text = normalise(answer, accents=True)
    keyed = {normalise(c, accents=True): c for c in choices}
    bare = _strip_punct(text)
    if bare in keyed:
        return keyed[bare]
    best: tuple[int, int, str] | None = None
    for key, choice in keyed.items():
        pattern = r"(?<![\w])" + re.escape(key).replace("_", "[_ ]") + r"(?![\w])"
        m = re.search(pattern, text)
        if m and (best is None or (m.start(), -len(key)) < (best[0], best[1])):
            best = (m.start(), -len(key), choice)
    return best[2] if best else None


def _json_field(answer: str, field: str) -> str | None:
    try:
        data = json.loads(answer)
    except ValueError:
        return None
    value = data.get(field) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def score_choice(answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """The answer maps to one of ``choices`` (see :func:`map_choice`), correct if
    that is the expected one. With ``field``, the answer is JSON and the choice
    is read from that field (e.g. ``{"category": "fuel"}``)."""
    choices = [str(c) for c in options["choices"]]
    text = answer
    if options.get("field"):
        value = _json_field(answer, str(options["field"]))
        if value is None:
            return Score(0.0, f"no string field {options['field']!r} in a JSON answer")
        text = value
    picked = map_choice(text, choices)
    if picked is None:
        return Score(0.0, "names none of the choices")
    if normalise(picked) == normalise(str(expected)):
        return Score(1.0, picked)
    return Score(0.0, f"expected {expected!r}, got {picked!r}")


# --------------------------------------------------------------------------
# json_schema
# --------------------------------------------------------------------------


def extract_json(answer: str) -> Any:
    """The JSON value in the answer: the whole text, else the first ``{...}`` or
    fenced block in it. Raises ``ValueError`` if there is none."""
    text = answer.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [text] + ([fenced.group(1)] if fenced else [])
    start = text.find("{")
    if start >= 0:
        candidates.append(text[start:text.rfind("}") + 1])
    for cand in candidates:
        try:
            return json.loads(cand)
        except ValueError:
            continue
    raise ValueError("no JSON value in the answer")


def _squash_all(text: str) -> str:
    return re.sub(r"\s+", "", text).casefold()


def _field_equal(got: Any, want: Any, tolerance: float) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float):
        number = got if isinstance(got, int | float) else parse_number(str(got))
        return number is not None and abs(float(number) - float(want)) <= tolerance
    if isinstance(want, str):
        # Whitespace-free, case-folded: "DE89 3704 ..." == "de893704...".
        return isinstance(got, str) and _squash_all(got) == _squash_all(want)
    return bool(got == want)


def score_json_schema(answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """Valid JSON validating against ``schema``. If ``fields`` (a list of keys)
    is given, the score is the fraction of those keys whose value equals
    ``expected[key]`` (strings compared without whitespace and case, numbers
    within ``tolerance``, default 0.005); else 1 for any valid document."""
    try:
        data = extract_json(answer)
    except ValueError:
        return Score(0.0, "not JSON")
    try:
        jsonschema.validate(data, options["schema"])
    except jsonschema.ValidationError as exc:
        return Score(0.0, f"schema violation: {exc.message[:200]}")
    fields = options.get("fields")
    if not fields:
        return Score(1.0, "valid")
    if not isinstance(data, dict) or not isinstance(expected, dict):
        return Score(0.0, "fields need a JSON object")
    tol = float(options.get("tolerance", 0.005))
    wrong = [f for f in fields if not _field_equal(data.get(f), expected.get(f), tol)]
    value = (len(fields) - len(wrong)) / len(fields)
    return Score(value, "all fields correct" if not wrong else f"wrong: {', '.join(wrong)}")


# --------------------------------------------------------------------------
# dispatch and option checks
# --------------------------------------------------------------------------

_FUNCS: dict[str, Callable[[str, Any, dict[str, Any]], Score]] = {
    "exact": score_exact,
    "contains": score_contains,
    "regex": score_regex,
    "json_schema": score_json_schema,
    "numeric": score_numeric,
    "choice": score_choice,
}

# Options each scorer understands (anything else is a typo worth refusing).
OPTIONS: dict[str, frozenset[str]] = {
    "exact": frozenset({"normalize", "case_sensitive", "strip_punctuation"}),
    "contains": frozenset({"case_sensitive"}),
    "regex": frozenset({"fullmatch", "ignore_case"}),
    "json_schema": frozenset({"schema", "fields", "tolerance"}),
    "numeric": frozenset({"tolerance", "relative_tolerance"}),
    "choice": frozenset({"choices", "field"}),
}


def score(scorer: str, answer: str, expected: Any, options: dict[str, Any]) -> Score:
    """Score ``answer`` with the named scorer (options already checked)."""
    return _FUNCS[scorer](answer, expected, options)


def _number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScorerOptionError(f"{name} must be a non-negative number")


def check_options(scorer: str, expected: Any, options: dict[str, Any]) -> None:
    """Refuse options (and expected values) the scorer cannot use; message names them."""
    if scorer not in _FUNCS:
        raise ScorerOptionError(f"unknown scorer {scorer!r} (one of {', '.join(SCORERS)})")
    if scorer in ("exact", "contains", "regex", "choice"):
        ok = isinstance(expected, str) or (
            scorer == "contains" and isinstance(expected, list) and expected
            and all(isinstance(x, str) for x in expected))  # fmt: skip
        if not ok:
            raise ScorerOptionError(f"expected must be a string for scorer {scorer}")
    if scorer == "regex":
        try:
            re.compile(str(expected))
        except re.error as exc:
            raise ScorerOptionError(f"expected is not a valid regex: {exc}") from None
    if scorer == "numeric":
        if isinstance(expected, bool) or not isinstance(expected, int | float):
            raise ScorerOptionError("expected must be a number for scorer numeric")
        for name in ("tolerance", "relative_tolerance"):
            if name in options:
                _number(options[name], name)
    if scorer == "choice":
        choices = options.get("choices")
        if (not isinstance(choices, list) or len(choices) < 2
                or not all(isinstance(c, str) and c.strip() for c in choices)):  # fmt: skip
            raise ScorerOptionError("choices must be a list of at least two non-empty strings")
        if normalise(str(expected)) not in {normalise(c) for c in choices}:
            raise ScorerOptionError(f"expected {expected!r} is not one of the choices")
        if "field" in options and not isinstance(options["field"], str):
            raise ScorerOptionError("field must be a string")
    if scorer == "json_schema":
        schema = options.get("schema")
        if not isinstance(schema, dict):
            raise ScorerOptionError("schema must be a JSON schema object")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ScorerOptionError(f"schema is not a valid JSON schema: {exc.message}") from None
        fields = options.get("fields")
        if fields is not None:
            if (not isinstance(fields, list) or not fields
                    or not all(isinstance(f, str) for f in fields)):  # fmt: skip
                raise ScorerOptionError("fields must be a non-empty list of strings")
            if not isinstance(expected, dict) or any(f not in expected for f in fields):
                raise ScorerOptionError("expected must be an object holding every field")
        if "tolerance" in options:
            _number(options["tolerance"], "tolerance")
