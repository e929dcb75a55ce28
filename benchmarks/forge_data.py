"""Forge fine-tuning data for the three bench suites, disjoint from their test items.

Usage::

    python benchmarks/forge_data.py --out benchmarks/forge_data --seed 0 \\
        [--train 600 --validation 60]

Writes ``<suite>.train.jsonl`` and ``<suite>.validation.jsonl`` for each bundled
suite (``invoice_fields``, ``same_person``, ``transaction_category``) in
OpenAI's fine-tuning chat format, one ``{"messages": [system, user,
assistant]}`` object a line. The system prompt is the suite's own, word for
word, so a specialist learns the task as the bench asks it; the assistant turn
is an answer the suite's scorer takes as fully correct.

Nothing is copied from the test items: the layouts, statement-line formats,
companies, people, merchants, cities, IBANs, amounts and dates come from this
file's own pools and random draws. :func:`check_leaks` proves it against the
suite files (shared 6-token and 30-character spans, the test items' entity
values, their vocabulary) and the run exits 1 if anything is shared. The same
seed writes the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intramuros.bench.suite import load_suite

SUITES = ("invoice_fields", "same_person", "transaction_category")
US = "Northwind Trading GmbH"  # the client every invoice suite prompt is written for

# Leak thresholds: a generated user message may share no run of SPAN_TOKENS
# tokens (numbers masked) and no run of SPAN_CHARS characters with a test item.
SPAN_TOKENS = 6
SPAN_CHARS = 30
MIN_WORD = 3  # shorter words (de, et, initials, BIC fragments) are not vocabulary


# --------------------------------------------------------------------------
# Text normalisation shared by the generator and the leak check
# --------------------------------------------------------------------------

_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "\u0131": "i",
                       "þ": "th", "ð": "d"})  # fmt: skip


def fold(text: str) -> str:
    """Case- and accent-free: Müller -> muller, Weiß -> weiss, Øster -> oster."""
    text = unicodedata.normalize("NFD", text.casefold().translate(_FOLD))
    return unicodedata.normalize("NFC", "".join(c for c in text
                                                if unicodedata.category(c) != "Mn"))


def words(text: str) -> list[str]:
    """The alphabetic words of a text, folded."""
    return re.findall(r"[^\W\d_]+", fold(text))


# An amount with exactly two decimals, as banks and invoices print it
# (1,234.56 / 1.234,56 / 1 234,56 / 1'234.56 / 1234.56); the value in cents.
_AMOUNT = re.compile(r"(?<![\w.,'])(?:\d{1,3}(?:[ .,'\u00a0\u202f\u2019]\d{3})+|\d+)[.,]\d{2}"
                     r"(?![\d])")  # fmt: skip


def amounts_in(text: str) -> set[int]:
    return {int(re.sub(r"\D", "", m.group(0))) for m in _AMOUNT.finditer(text)}


# --------------------------------------------------------------------------
# IBANs: ISO 13616 check digits over real national layouts
# --------------------------------------------------------------------------

# country -> BBAN layout: runs of n (digit), a (letter), k (national check digits)
BBAN = {
    "DE": "8n10n", "FR": "5n5n11n2k", "IT": "1a5n5n12n", "ES": "4n4n2k10n", "NL": "4a10n",
    "BE": "3n7n2k", "AT": "5n11n", "CH": "5n12n", "GB": "4a6n8n", "PL": "8n16n",
    "PT": "4n4n11n2n", "IE": "4a6n8n", "LU": "3n13n", "SE": "3n16n1n", "DK": "4n9n1n",
    "FI": "3n11n", "CZ": "4n6n10n",
}  # fmt: skip


def _as_digits(text: str) -> str:
    return "".join(str(int(c, 36)) for c in text)


def iban_valid(iban: str) -> bool:
    """The ISO 13616 mod-97 check (spaces ignored)."""
    s = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{8,30}", s):
        return False
    return int(_as_digits(s[4:] + s[:4])) % 97 == 1


def _es_check(digits: str) -> str:
    weights = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]
    d = 11 - sum(int(c) * w for c, w in zip(digits.zfill(10), weights, strict=True)) % 11
    return str({11: 0, 10: 1}.get(d, d))


def make_iban(rng: random.Random, country: str, bank: str = "") -> str:
    """A random IBAN of ``country`` with valid national and ISO check digits; ``bank``
    (a BIC's four letters) is the bank code where the country's BBAN starts with letters."""
    parts: list[str] = []
    for count, kind in re.findall(r"(\d+)([nak])", BBAN[country]):
        n = int(count)
        if kind == "a":
            part = bank[:n] if len(bank) >= n else "".join(
                rng.choice("ABCDEFGHIJKLMNOPRSTUVZ") for _ in range(n))
        elif kind == "n":
            part = "".join(rng.choice("0123456789") for _ in range(n))
        else:
            part = "k" * n
        parts.append(part)
    if country == "FR":  # clé RIB
        bank_no, branch, account = (int(p) for p in parts[:3])
        parts[3] = f"{97 - (89 * bank_no + 15 * branch + 3 * account) % 97:02d}"
    elif country == "ES":  # dígitos de control
        parts[2] = _es_check("00" + parts[0] + parts[1]) + _es_check(parts[3])
    elif country == "BE":  # modulo 97 of the first ten digits
        parts[2] = f"{int(parts[0] + parts[1]) % 97 or 97:02d}"
    bban = "".join(parts)
    check = 98 - int(_as_digits(bban + country + "00")) % 97
    iban = f"{country}{check:02d}{bban}"
    assert iban_valid(iban), iban
    return iban


def spaced(iban: str) -> str:
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


# --------------------------------------------------------------------------
# Money and dates as each language writes them
# --------------------------------------------------------------------------


def money(cents: int, style: str) -> str:
    """``style``: en 1,234.56 / de 1.234,56 / fr 1 234,56 / ch 1'234.56 / plain 1234.56 /
    comma 1234,56."""
    whole, frac = divmod(abs(cents), 100)
    sign = "-" if cents < 0 else ""
    if style == "plain":
        return f"{sign}{whole}.{frac:02d}"
    if style == "comma":
        return f"{sign}{whole},{frac:02d}"
    grouped = f"{whole:,}"
    sep, dec = {"en": (",", "."), "de": (".", ","), "fr": ("\u00a0", ","),
                "ch": ("'", ".")}[style]  # fmt: skip
    return f"{sign}{grouped.replace(',', sep)}{dec}{frac:02d}"


MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"],
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
           "septembre", "octobre", "novembre", "décembre"],
    "de": ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
           "September", "Oktober", "November", "Dezember"],
    "it": ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
           "settembre", "ottobre", "novembre", "dicembre"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
           "septiembre", "octubre", "noviembre", "diciembre"],
    "nl": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus",
           "september", "oktober", "november", "december"],
}  # fmt: skip


def date_text(d: dt.date, lang: str, rng: random.Random) -> str:
    """``d`` in one of the spellings ``lang`` uses (never ambiguous day/month order)."""
    m = MONTHS[lang][d.month - 1]
    options = {
        "en": [f"{m} {d.day}, {d.year}", f"{d.day} {m} {d.year}", d.isoformat(),
               f"{d.day:02d}-{m[:3]}-{d.year}", f"{d.day} {m[:3]} {d.year}"],
        "fr": [f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day} {m} {d.year}",
               f"{'1er' if d.day == 1 else d.day} {m} {d.year}",
               f"{d.day:02d}.{d.month:02d}.{d.year}"],
        "de": [f"{d.day:02d}.{d.month:02d}.{d.year}", f"{d.day}. {m} {d.year}",
               f"{d.day}.{d.month}.{d.year}"],
        "it": [f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day} {m} {d.year}",
               f"{d.day:02d}-{d.month:02d}-{d.year}"],
        "es": [f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day} de {m} de {d.year}"],
        "nl": [f"{d.day:02d}-{d.month:02d}-{d.year}", f"{d.day} {m} {d.year}"],
    }[lang]  # fmt: skip
    return rng.choice(options)


# --------------------------------------------------------------------------
# One forged example
# --------------------------------------------------------------------------


@dataclass
class Example:
    """A chat example and what the suite's scorer expects for it."""

    system: str
    user: str
    expected: Any
    answer: str
    tag: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user},
                {"role": "assistant", "content": self.answer}]  # fmt: skip


@dataclass
class Forbidden:
    """What a generator must not draw by chance: the test items' amounts (cents),
    dates and IBANs. Pools and layouts are disjoint by construction; this only
    steers random draws away from a coincidence (600 random amounts would
    otherwise hit one of a suite's by chance now and then)."""

    amounts: set[int] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    ibans: set[str] = field(default_factory=set)

    def clash(self, text: str) -> bool:
        if amounts_in(text) & self.amounts:
            return True
        compact = re.sub(r"\s", "", text).upper()
        return any(iban in compact for iban in self.ibans)


# --------------------------------------------------------------------------
# Suite 1: invoice fields
# --------------------------------------------------------------------------

# (name as written, country, city, street, postcode)
COMPANIES = [
    ("Brandt Feinmechanik GmbH", "DE", "Augsburg", "Haunstetter Straße 112", "86161"),
    ("Kessler & Sohn KG", "DE", "Kassel", "Wilhelmshöher Allee 58", "34119"),
    ("Rheintal Metallbau GmbH & Co. KG", "DE", "Mannheim", "Industriestraße 9", "68169"),
    ("Lindner Druckerei e.K.", "DE", "Würzburg", "Ohmstraße 21", "97076"),
    ("Sommerfeld Kältetechnik GmbH", "DE", "Rostock", "Am Kabutzenhof 3", "18057"),
    ("Menuiserie Girard SARL", "FR", "Rennes", "12 rue de Brest", "35000"),
    ("Transports Faure SAS", "FR", "Dijon", "8 boulevard de Strasbourg", "21000"),
    ("Laboratoires Vasseur SA", "FR", "Grenoble", "45 avenue Jean Jaurès", "38100"),
    ("Chaudronnerie Roux & Fils", "FR", "Reims", "3 allée des Vignes", "51100"),
    ("Ferretti Imballaggi S.r.l.", "IT", "Bergamo", "Via Borgo Palazzo 77", "24125"),
    ("Colombo Meccanica S.p.A.", "IT", "Modena", "Via Emilia Est 310", "41122"),
    ("Galli & Figli S.n.c.", "IT", "Verona", "Corso Porta Nuova 14", "37122"),
    ("Construcciones Navarro S.A.", "ES", "Zaragoza", "Calle del Coso 56", "50001"),
    ("Gráficas Serrano S.L.U.", "ES", "Bilbao", "Alameda de Urquijo 19", "48008"),
    ("De Groot Installatietechniek B.V.", "NL", "Eindhoven", "Kruisstraat 140", "5612 CN"),
    ("Bakker Drukwerk B.V.", "NL", "Groningen", "Oosterstraat 8", "9711 NN"),
    ("Janssens Bouwmaterialen NV", "BE", "Leuven", "Tiensevest 61", "3000"),
    ("Lambert Fournitures SRL", "BE", "Namur", "Rue de Fer 27", "5000"),
    ("Gruber Holzbau GmbH", "AT", "Linz", "Landstraße 85", "4020"),
    ("Steiner Glas & Rahmen OG", "AT", "Innsbruck", "Museumstraße 4", "6020"),
    ("Baumann Präzision AG", "CH", "Winterthur", "Zürcherstrasse 63", "8400"),
    ("Whitfield Packaging Ltd", "GB", "Sheffield", "18 Attercliffe Road", "S4 7WZ"),
    ("Hargreaves & Pike LLP", "GB", "Norwich", "5 Prince of Wales Road", "NR1 1BD"),
    ("Zakład Stolarski Wróbel Sp. z o.o.", "PL", "Poznań", "ul. Głogowska 102", "60-243"),
    ("Lindqvist Verktyg AB", "SE", "Uppsala", "Kungsgatan 47", "753 21"),
    ("Sørensen Maskinfabrik ApS", "DK", "Aarhus", "Søndergade 30", "8000"),
    ("Ferreira & Irmãos, Lda.", "PT", "Braga", "Avenida da Liberdade 221", "4710-251"),
    ("Gallagher Fabrication Ltd", "IE", "Galway", "Unit 4, Ballybrit Business Park", "H91 X2C8"),
    ("Reuter Immobilière S.à r.l.", "LU", "Differdange", "22 rue Emile Mark", "4620"),
    ("Virtanen Konepaja Oy", "FI", "Tampere", "Hämeenkatu 11", "33100"),
    ("Horák Stavby s.r.o.", "CZ", "Brno", "Cejl 76", "602 00"),
]  # fmt: skip
CURRENCY = {"CH": "CHF", "GB": "GBP", "PL": "PLN", "SE": "SEK", "DK": "DKK", "CZ": "CZK"}
VAT_RATES = {"DE": [19, 7], "FR": [20, 10], "IT": [22, 10], "ES": [21, 10], "NL": [21, 9],
             "BE": [21, 6], "AT": [20, 10], "CH": [8.1], "GB": [20], "PL": [23], "SE": [25],
             "DK": [25], "PT": [23], "IE": [23], "LU": [17], "FI": [25.5], "CZ": [21]}  # fmt: skip
EU = {"FR", "IT", "ES", "NL", "BE", "AT", "PL", "SE", "DK", "PT", "IE", "LU", "FI", "CZ"}
# country -> (bank, the first four letters of its BIC)
BANKS = {
    "DE": [("Commerzbank", "COBA"), ("Volksbank Mittelhessen", "GENO"),
           ("HypoVereinsbank", "HYVE")],
    "FR": [("BNP Paribas", "BNPA"), ("Crédit Lyonnais", "CRLY"), ("Crédit Agricole", "AGRI")],
    "IT": [("UniCredit", "UNCR"), ("Banco BPM", "BAPP")],
    "ES": [("CaixaBank", "CAIX"), ("BBVA", "BBVA"), ("Banco Santander", "BSCH")],
    "NL": [("ABN AMRO", "ABNA"), ("Rabobank", "RABO"), ("Triodos Bank", "TRIO")],
    "BE": [("BNP Paribas Fortis", "GEBA"), ("KBC Bank", "KRED"), ("Belfius", "GKCC")],
    "AT": [("Raiffeisen", "RZBA"), ("Erste Bank", "GIBA"), ("Oberbank", "OBKL")],
    "CH": [("UBS Switzerland", "UBSW"), ("Zürcher Kantonalbank", "ZKBK")],
    "GB": [("NatWest", "NWBK"), ("Barclays", "BARC"), ("Lloyds Bank", "LOYD")],
    "PL": [("PKO Bank Polski", "BPKO"), ("mBank", "BREX")],
    "SE": [("SEB", "ESSE"), ("Handelsbanken", "HAND")], "DK": [("Danske Bank", "DABA")],
    "PT": [("Caixa Geral de Depósitos", "CGDI"), ("Millennium bcp", "BCOM")],
    "IE": [("AIB", "AIBK"), ("Bank of Ireland", "BOFI")],
    "LU": [("Spuerkeess", "BCEE"), ("BGL BNP Paribas", "BGLL")],
    "FI": [("OP Financial Group", "OKOY")], "CZ": [("Komerční banka", "KOMB"), ("ČSOB", "CEKO")],
}  # fmt: skip
OUR_BANKS = ["Commerzbank Frankfurt", "HypoVereinsbank München", "Deutsche Kreditbank"]
CONTACTS = ["Ines Albrecht", "Guillaume Perrin", "Chiara Ferrante", "Tobias Lenz",
            "Marta Ruiz", "Joost Verbeek", "Hanne Lund", "Oliver Pratt", "Agnieszka Lis",
            "Rui Sequeira", "Elodie Carpentier", "Fionn Doyle", "Bettina Sauer"]  # fmt: skip
GOODS = {
    "en": ["Pallet racking, galvanised", "Corrugated boxes 60x40x40", "Maintenance visit",
           "Forklift hire (week)", "Label printer ribbons", "Consulting hours",
           "Stretch film rolls", "Warehouse cleaning", "Freight Rotterdam - Bremerhaven"],
    "fr": ["Cartons double cannelure", "Prestation de nettoyage", "Location chariot",
           "Étiquettes thermiques", "Heures de conseil", "Palettes Europe"],
    "de": ["Versandkartons 40x30x20", "Wartung Klimaanlage", "Gabelstapler-Miete",
           "Etikettenrollen", "Beratung (Stunden)", "Europaletten"],
    "it": ["Scatole in cartone", "Manutenzione impianto", "Noleggio muletto",
           "Etichette adesive"],
    "es": ["Cajas de cartón", "Mantenimiento preventivo", "Alquiler de carretilla"],
    "nl": ["Verzenddozen", "Onderhoud installatie", "Huur heftruck"],
}  # fmt: skip


@dataclass
class Doc:
    """Everything one invoice-like document may print."""

    name: str
    country: str
    city: str
    street: str
    postcode: str
    iban: str
    bic: str
    bank: str
    number: str
    date: dt.date
    due: dt.date
    lines: list[tuple[str, int, int]]  # description, quantity, unit price (cents)
    rate: float
    net: int
    vat: int
    total: int
    currency: str
    contact: str
    our_iban: str
    ref: str
    earlier: dt.date  # a service or invoice date before ``date`` (a distractor)

    @property
    def reverse_charge(self) -> bool:
        return self.rate == 0

    @property
    def symbol(self) -> str:
        return "€" if self.currency == "EUR" else self.currency


def _inv_number(rng: random.Random, d: dt.date) -> str:
    n = rng.randint(100, 99999)
    return rng.choice([f"{d.year}/{n:05d}", f"RG{d.year % 100}{n:05d}", f"FAC-{n:06d}",
                       f"{d.year % 100}-{n}", f"No. {n}/{d.month:02d}", f"B{n:05d}",
                       f"{d.year}{d.month:02d}{n % 1000:03d}"])  # fmt: skip


def _off(d: dt.date, forbidden: Forbidden) -> dt.date:
    """``d``, or the next day that is no test item's date."""
    while d.isoformat() in forbidden.dates:
        d += dt.timedelta(days=1)
    return d


def _draw_date(rng: random.Random, forbidden: Forbidden) -> dt.date:
    return _off(dt.date(2023, 1, 1) + dt.timedelta(days=rng.randint(0, 6 * 365)), forbidden)


def _make_doc(rng: random.Random, lang: str, forbidden: Forbidden, our: list[str],
              *, with_lines: bool) -> Doc:  # fmt: skip
    name, country, city, street, postcode = rng.choice(COMPANIES)
    d = _draw_date(rng, forbidden)
    due = _off(d + dt.timedelta(days=rng.choice([7, 10, 14, 21, 30, 45, 60])), forbidden)
    earlier = d - dt.timedelta(days=rng.randint(1, 40))
    while earlier.isoformat() in forbidden.dates:
        earlier -= dt.timedelta(days=1)
    lines: list[tuple[str, int, int]] = []
    rate: float = 0
    if with_lines:
        for desc in rng.sample(GOODS[lang], rng.randint(1, 3)):
            if rng.random() < 0.6:
                lines.append((desc, rng.randint(1, 60), rng.randint(150, 9_999)))
            else:
                lines.append((desc, rng.randint(1, 8), rng.randint(10_000, 480_000)))
        net = sum(q * p for _, q, p in lines)
        rate = rng.choice(VAT_RATES[country])
        if country in EU and rng.random() < 0.2:
            rate = 0  # reverse charge: intra-EU B2B, no VAT on the invoice
        vat = round(net * rate / 100)
    else:
        net = rng.choice([rng.randint(2_000, 99_999), rng.randint(100_000, 4_800_000)])
        vat = 0
    bank, bank_code = rng.choice(BANKS[country])
    bic = bank_code + country + rng.choice(["FF", "MM", "PP", "HH", "22", "KK", "RR", "BB"])
    if rng.random() < 0.5:
        bic += "XXX"
    return Doc(
        name=name, country=country, city=city, street=street, postcode=postcode,
        iban=make_iban(rng, country, bank_code), bic=bic, bank=bank,
        number=_inv_number(rng, d), date=d, due=due, lines=lines, rate=rate, net=net,
        vat=vat, total=net + vat, currency=CURRENCY.get(country, "EUR"),
        contact=rng.choice(CONTACTS), our_iban=rng.choice(our),
        ref=str(rng.randint(10**9, 10**10 - 1)), earlier=earlier,
    )  # fmt: skip


def _vat_id(doc: Doc, rng: random.Random) -> str:
    """The supplier's VAT number: its country's prefix and digits."""
    prefix = {"CH": "CHE", "GR": "EL"}.get(doc.country, doc.country)
    return prefix + "".join(rng.choice("0123456789") for _ in range(rng.randint(9, 11)))


def _rate(rate: float, style: str) -> str:
    text = f"{rate:g}"
    return text.replace(".", ",") if style in ("de", "fr") else text


def _lines(doc: Doc, style: str, sep: str = " | ") -> str:
    return "\n".join(f"{desc}{sep}{q}{sep}{money(p, style)}{sep}{money(q * p, style)}"
                     for desc, q, p in doc.lines)  # fmt: skip


def en_invoice_table(doc: Doc, rng: random.Random) -> str:
    # Swiss amounts group with apostrophes: 1'234.50.
    st, cur = "ch" if doc.country == "CH" else "en", doc.currency
    label = rng.choice(["Issue date", "Date of issue", "Invoice date"])
    vat = ("VAT 0% (reverse charge, Art. 196 Directive 2006/112/EC): 0.00"
           if doc.reverse_charge else f"VAT {_rate(doc.rate, st)}%: {money(doc.vat, st)}")
    return (f"{doc.name}\n{doc.street}\n{doc.postcode} {doc.city}\n\nINVOICE\n"
            f"Invoice no.: {doc.number}\n{label}: {date_text(doc.date, 'en', rng)}\n"
            f"Customer: {US}\nCustomer PO: {rng.randint(40000, 49999)}\n\n"
            f"Item | Qty | Unit price | Line total\n{_lines(doc, st)}\n\n"
            f"Net total ({cur}): {money(doc.net, st)}\n{vat}\n"
            f"TOTAL {cur} {money(doc.total, st)}\n\nTerms: net {(doc.due - doc.date).days} days, "
            f"by {date_text(doc.due, 'en', rng)}.\nRemit to {doc.bank}, IBAN {spaced(doc.iban)}, "
            f"SWIFT/BIC {doc.bic}")  # fmt: skip


def en_invoice_compact(doc: Doc, rng: random.Random) -> str:
    st, cur = "en", doc.currency
    items = "\n".join(f"{q} x {desc} @ {money(p, st)} = {money(q * p, st)}"
                      for desc, q, p in doc.lines)  # fmt: skip
    vat = "Reverse charge: VAT to be accounted for by the customer" if doc.reverse_charge \
        else f"VAT @ {_rate(doc.rate, st)}% {money(doc.vat, st)}"
    iban = doc.iban if rng.random() < 0.5 else spaced(doc.iban)
    return (f"{doc.name} / {doc.city} / Reg. {rng.randint(1000000, 9999999)}\n"
            f"Sales invoice {doc.number} of {date_text(doc.date, st, rng)}\n"
            f"Attn: Accounts Payable, {US}\n{items}\nGoods total {money(doc.net, st)}\n{vat}\n"
            f"Balance to pay {cur} {money(doc.total, st)} before {date_text(doc.due, st, rng)}\n"
            f"Account: {iban} ({doc.bank})")  # fmt: skip


def en_reminder(doc: Doc, rng: random.Random) -> str:
    st = "en"
    return (f"PAYMENT REMINDER\n{doc.name}, {doc.city}\n\nDear Sir or Madam,\n\n"
            f"According to our records, invoice {doc.number} of {date_text(doc.date, st, rng)} "
            f"for {doc.currency} {money(doc.total, st)} is still open; it fell due on "
            f"{date_text(doc.due, st, rng)}. Kindly settle the balance to IBAN "
            f"{spaced(doc.iban)} at {doc.bank}.\n\nYours faithfully,\n{doc.contact}\n"
            f"Credit control")  # fmt: skip


def en_supplier_email(doc: Doc, rng: random.Random) -> str:
    st = rng.choice(["en", "de"])
    return (f"From: {doc.contact} ({doc.name})\nTo: {US} - accounts payable\n"
            f"Subject: Our invoice {doc.number}\n\nHi,\n\nPlease see the enclosed invoice "
            f"{doc.number}, "
            f"issued on {date_text(doc.date, 'en', rng)}. The amount to pay is "
            f"{money(doc.total, st)} {doc.currency}, VAT of {money(doc.vat, st)} included, "
            f"with the due date {date_text(doc.due, 'en', rng)}.\n\nBank: {doc.bank}\n"
            f"IBAN: {doc.iban}\nBIC: {doc.bic}\n\nThanks,\n{doc.contact}")  # fmt: skip


def en_credit_advice(doc: Doc, rng: random.Random) -> str:
    st = rng.choice(["en", "plain"])
    return (f"{rng.choice(OUR_BANKS)} - Credit notification\nAccount holder: {US}\n"
            f"Account: {spaced(doc.our_iban)}\nBooking date: {date_text(doc.date, 'en', rng)}\n"
            f"Payer: {doc.name}\nPayer IBAN: {spaced(doc.iban)}\n"
            f"Amount: +{money(doc.total, st)} {doc.currency}\n"
            f"Purpose: {doc.number}")  # fmt: skip


def en_transfer_confirmation(doc: Doc, rng: random.Random) -> str:
    st = "en"
    return (f"Transfer executed\nYour payment of {doc.currency} {money(doc.total, st)} to "
            f"{doc.name} was sent on {date_text(doc.date, st, rng)}.\n"
            f"To account: {doc.iban} ({doc.bic})\nFrom account: {US}, {doc.our_iban}\n"
            f"Payment reference: {doc.number}")  # fmt: skip


def en_remittance_email(doc: Doc, rng: random.Random) -> str:
    st = rng.choice(["en", "plain"])
    domain = re.sub(r"[^a-z]", "", fold(doc.name.split()[0]))
    return (f"From: {doc.contact} <ap@{domain}.example>\nSubject: Payment sent, ref. {doc.ref}"
            f"\n\nHello,\n\nToday, {date_text(doc.date, 'en', rng)}, we transferred "
            f"{doc.currency} {money(doc.total, st)} in settlement of your invoice {doc.number}. "
            f"The money left our account {doc.iban} held at {doc.bank}.\n\n"
            f"Best wishes,\n{doc.contact}\n{doc.name}")  # fmt: skip


def fr_facture(doc: Doc, rng: random.Random) -> str:
    st, cur = "fr", doc.symbol
    vat = ("TVA : autoliquidation (art. 283-2 du CGI)" if doc.reverse_charge
           else f"TVA {_rate(doc.rate, st)} % : {money(doc.vat, st)} {cur}")
    return (f"{doc.name}\n{doc.street} — {doc.postcode} {doc.city}\n"
            f"N° TVA intracom. : {_vat_id(doc, rng)}\n\nFACTURE {doc.number}\n"
            f"Date d'émission : {date_text(doc.date, st, rng)}\n"
            f"Date limite de paiement : {date_text(doc.due, st, rng)}\nDestinataire : {US}\n\n"
            f"Désignation | Qté | P.U. HT | Montant HT\n{_lines(doc, st)}\n\n"
            f"Montant HT : {money(doc.net, st)} {cur}\n{vat}\n"
            f"Net à payer : {money(doc.total, st)} {cur}\n\n"
            f"Coordonnées bancaires : {doc.bank} — IBAN {spaced(doc.iban)} — "
            f"BIC {doc.bic}")  # fmt: skip


def fr_email(doc: Doc, rng: random.Random) -> str:
    st, cur = "fr", doc.symbol
    return (f"Objet : notre facture {doc.number}\n\nBonjour,\n\nVeuillez trouver ci-joint la "
            f"facture {doc.number} du {date_text(doc.date, st, rng)}, d'un montant de "
            f"{money(doc.total, st)} {cur} TTC ({money(doc.net, st)} {cur} HT). Merci "
            f"d'effectuer le paiement avant le {date_text(doc.due, st, rng)} sur notre "
            f"compte : IBAN {doc.iban}, {doc.bank}.\n\nCordialement,\n{doc.contact}\n"
            f"{doc.name}")  # fmt: skip


def fr_avis_credit(doc: Doc, rng: random.Random) -> str:
    st = rng.choice(["fr", "comma"])
    return (f"AVIS D'OPÉRATION — VIREMENT REÇU\nTitulaire du compte : {US}\n"
            f"Donneur d'ordre : {doc.name}\nCompte du donneur d'ordre : {spaced(doc.iban)}\n"
            f"Date d'opération : {date_text(doc.date, 'fr', rng)}\n"
            f"Montant : {money(doc.total, st)} {doc.currency}\nLibellé : {doc.number}")  # fmt: skip


def de_rechnung(doc: Doc, rng: random.Random) -> str:
    st, cur = "de", doc.symbol
    label = rng.choice(["Rechnungsdatum", "Datum", "Belegdatum"])
    vat = ("Steuerschuldnerschaft des Leistungsempfängers (Reverse Charge)" if doc.reverse_charge
           else f"MwSt. {_rate(doc.rate, st)} %: {money(doc.vat, st)} {cur}")
    return (f"{doc.name} · {doc.street} · {doc.postcode} {doc.city}\n\n{US}\nBuchhaltung\n\n"
            f"RECHNUNG\nRechnungsnummer: {doc.number}\n{label}: {date_text(doc.date, st, rng)}\n"
            f"Leistungsdatum: {date_text(doc.earlier, st, rng)}\n"
            f"Kundennummer: {rng.randint(10000, 99999)}\n\n"
            f"Bezeichnung | Menge | Einzelpreis | Betrag\n{_lines(doc, st)}\n\n"
            f"Summe netto: {money(doc.net, st)} {cur}\n{vat}\n"
            f"Rechnungsbetrag: {money(doc.total, st)} {cur}\n\n"
            f"Zahlbar ohne Abzug bis {date_text(doc.due, st, rng)}.\n{doc.bank} · IBAN "
            f"{spaced(doc.iban)} · BIC {doc.bic}")  # fmt: skip


def de_email(doc: Doc, rng: random.Random) -> str:
    st = "de"
    return (f"Betreff: Rechnung {doc.number}\n\nSehr geehrte Damen und Herren,\n\nanbei erhalten "
            f"Sie unsere Rechnung {doc.number} vom {date_text(doc.date, st, rng)} über "
            f"{money(doc.total, st)} {doc.currency} brutto. Bitte überweisen Sie den Betrag bis "
            f"zum {date_text(doc.due, st, rng)} auf unser Konto bei der {doc.bank}:\n"
            f"IBAN {spaced(doc.iban)}\n\nMit freundlichen Grüßen\n{doc.contact}\n"
            f"{doc.name}")  # fmt: skip


def de_gutschrift(doc: Doc, rng: random.Random) -> str:
    st = "de"
    return (f"Umsatzmitteilung - Gutschrift\nKonto: {US}, {doc.our_iban}\n"
            f"Buchungstag: {date_text(doc.date, st, rng)}\nAuftraggeber: {doc.name}\n"
            f"IBAN Auftraggeber: {doc.iban}\nBetrag: +{money(doc.total, st)} {doc.currency}\n"
            f"Verwendungszweck: {doc.number}")  # fmt: skip


def de_ausfuehrung(doc: Doc, rng: random.Random) -> str:
    st = "de"
    return (f"Ausführungsbestätigung SEPA-Überweisung\nAuftraggeber: {US}\n"
            f"Empfänger: {doc.name}\nIBAN des Empfängers: {spaced(doc.iban)}\nBIC: {doc.bic}\n"
            f"Betrag: {money(doc.total, st)} {doc.currency}\n"
            f"Ausgeführt am: {date_text(doc.date, st, rng)}\n"
            f"Verwendungszweck: Rechnung {doc.number} vom "
            f"{date_text(doc.earlier, st, rng)}")  # fmt: skip


def it_fattura(doc: Doc, rng: random.Random) -> str:
    st, cur = "de", doc.symbol  # Italian amounts group like German ones: 1.234,56
    vat = ("Operazione non soggetta - inversione contabile" if doc.reverse_charge
           else f"IVA {_rate(doc.rate, 'de')}%: {cur} {money(doc.vat, st)}")
    return (f"{doc.name}\n{doc.street} - {doc.postcode} {doc.city}\n"
            f"P.IVA {_vat_id(doc, rng)}\n\nFATTURA N. {doc.number} DEL "
            f"{date_text(doc.date, 'it', rng)}\nSpett.le {US}\n\n"
            f"Descrizione | Q.tà | Prezzo | Importo\n{_lines(doc, st)}\n\n"
            f"Imponibile: {cur} {money(doc.net, st)}\n{vat}\n"
            f"Totale documento: {cur} {money(doc.total, st)}\n"
            f"Scadenza: {date_text(doc.due, 'it', rng)}\n"
            f"Modalità di pagamento: bonifico su IBAN {spaced(doc.iban)}")  # fmt: skip


def es_factura(doc: Doc, rng: random.Random) -> str:
    st, cur = "de", doc.symbol
    vat = ("Inversión del sujeto pasivo" if doc.reverse_charge
           else f"IVA ({_rate(doc.rate, 'de')} %): {money(doc.vat, st)} {cur}")
    return (f"FACTURA Nº {doc.number}\nFecha de expedición: {date_text(doc.date, 'es', rng)}\n"
            f"Emisor: {doc.name} — {doc.city}\nCliente: {US}\n\n"
            f"Concepto | Uds. | Precio | Importe\n{_lines(doc, st)}\n\n"
            f"Base imponible: {money(doc.net, st)} {cur}\n{vat}\n"
            f"Total factura: {money(doc.total, st)} {cur}\n"
            f"Forma de pago: transferencia a la cuenta {spaced(doc.iban)}\n"
            f"Vencimiento: {date_text(doc.due, 'es', rng)}")  # fmt: skip


def nl_factuur(doc: Doc, rng: random.Random) -> str:
    st, cur = "de", doc.symbol
    vat = ("Btw verlegd" if doc.reverse_charge
           else f"Btw {_rate(doc.rate, 'de')}%: {cur} {money(doc.vat, st)}")
    return (f"FACTUUR\n{doc.name}, {doc.street}, {doc.postcode} {doc.city}\n"
            f"Btw-nr. {_vat_id(doc, rng)}\n\nFactuurnummer: {doc.number}\n"
            f"Factuurdatum: {date_text(doc.date, 'nl', rng)}\n"
            f"Vervaldatum: {date_text(doc.due, 'nl', rng)}\nAan: {US}\n\n"
            f"Omschrijving | Aantal | Prijs | Bedrag\n{_lines(doc, st)}\n\n"
            f"Subtotaal excl. btw: {cur} {money(doc.net, st)}\n{vat}\n"
            f"Totaal te betalen: {cur} {money(doc.total, st)}\n"
            f"Graag overmaken op {spaced(doc.iban)} t.n.v. {doc.name}")  # fmt: skip


# layout -> (language of its goods, has line items (an invoice) or not (a payment))
LAYOUTS: dict[str, tuple[Callable[[Doc, random.Random], str], str, bool]] = {
    "invoice-table-en": (en_invoice_table, "en", True),
    "invoice-compact-en": (en_invoice_compact, "en", True),
    "reminder-en": (en_reminder, "en", True),
    "email-en": (en_supplier_email, "en", True),
    "credit-advice-en": (en_credit_advice, "en", False),
    "transfer-confirmation-en": (en_transfer_confirmation, "en", False),
    "remittance-email-en": (en_remittance_email, "en", False),
    "facture-fr": (fr_facture, "fr", True),
    "email-fr": (fr_email, "fr", True),
    "avis-credit-fr": (fr_avis_credit, "fr", False),
    "rechnung-de": (de_rechnung, "de", True),
    "email-de": (de_email, "de", True),
    "gutschrift-de": (de_gutschrift, "de", False),
    "ausfuehrung-de": (de_ausfuehrung, "de", False),
    "fattura-it": (it_fattura, "it", True),
    "factura-es": (es_factura, "es", True),
    "factuur-nl": (nl_factuur, "nl", True),
}  # fmt: skip


def invoice_examples(rng: random.Random, n: int, system: str,
                     forbidden: Forbidden) -> list[Example]:  # fmt: skip
    our = [make_iban(rng, "DE") for _ in range(3)]  # Northwind's own accounts (distractors)
    kinds = [list(LAYOUTS)[i % len(LAYOUTS)] for i in range(n)]
    rng.shuffle(kinds)
    out: list[Example] = []
    for kind in kinds:
        make, lang, with_lines = LAYOUTS[kind]
        while True:
            doc = _make_doc(rng, lang, forbidden, our, with_lines=with_lines)
            text = make(doc, rng)
            if not forbidden.clash(text) and doc.total not in forbidden.amounts:
                break
        # The fields are where the reader must find them.
        assert doc.iban in text.replace(" ", "") and doc.name in text, kind
        expected = {"iban": doc.iban, "amount": doc.total / 100, "date": doc.date.isoformat(),
                    "counterparty": doc.name}  # fmt: skip
        out.append(Example(system, text, expected, json.dumps(expected, ensure_ascii=False),
                           kind))  # fmt: skip
    return out


# --------------------------------------------------------------------------
# Suite 2: same person?
# --------------------------------------------------------------------------

# Spellings of one given name or surname (transliterations, accents): one person.
GIVEN_VARIANTS = [
    ["Vladimir", "Wladimir"], ["Mikhail", "Michail", "Mihail"],
    ["Anatoly", "Anatoliy", "Anatolij"], ["Vyacheslav", "Viatcheslav", "Wjatscheslaw"],
    ["Yaroslav", "Iaroslav", "Jaroslaw"], ["Grigory", "Grigoriy", "Grigorij"],
    ["Fyodor", "Fiodor", "Fjodor"], ["Konstantin", "Constantin"],
    ["Vasily", "Vasiliy", "Wassili"], ["Lyudmila", "Ludmila", "Ljudmila"],
    ["Yulia", "Yuliya", "Julija", "Ioulia"], ["Yekaterina", "Ekaterina", "Jekaterina"],
    ["Svetlana", "Swetlana"], ["Khalid", "Khaled", "Chalid"],
    ["Mustafa", "Moustafa", "Mostafa", "Mustapha"], ["Rashid", "Rachid", "Rasheed"],
    ["Tariq", "Tarek", "Tarik"], ["Walid", "Waleed", "Oualid"], ["Aisha", "Aïcha", "Ayesha"],
    ["Khadija", "Khadidja"], ["Panagiotis", "Panayiotis"], ["Athanasios", "Athanassios"],
    ["Vasiliki", "Vassiliki"], ["Şükrü", "Sukru", "Schükrü"], ["Ayşe", "Ayse", "Aische"],
    ["Mehmet", "Mehmed"], ["Gülşen", "Gulsen", "Guelsen"], ["Björn", "Bjorn", "Bjoern"],
    ["Jörg", "Joerg"], ["Günther", "Guenther", "Gunther"], ["Hélène", "Helene"],
    ["Jérôme", "Jerome"], ["Benoît", "Benoit"], ["Łukasz", "Lukasz"],
    ["Małgorzata", "Malgorzata"], ["Jiří", "Jiri"], ["Ángel", "Angel"], ["Inés", "Ines"],
    ["Zoltán", "Zoltan"], ["Lakshmi", "Laxmi"], ["Srinivas", "Shrinivas", "Sreenivas"],
    ["Rajesh", "Rajesch"], ["Sanjay", "Sanjai"], ["Deepak", "Dipak"],
    ["Siobhán", "Siobhan"], ["Xiaoling", "Hsiao-ling"],
]  # fmt: skip
SURNAME_VARIANTS = [
    ["Volkov", "Volkoff", "Wolkow"], ["Sokolov", "Sokoloff", "Sokolow"],
    ["Morozov", "Morosov", "Morozow"], ["Lebedev", "Lebedeff", "Lebedew"],
    ["Kozlov", "Koslow", "Kozlow"], ["Zaytsev", "Zaitsev", "Saizew"],
    ["Shevchenko", "Chevtchenko", "Schewtschenko", "Ševčenko"],
    ["Yakovlev", "Iakovlev", "Jakowlew"], ["Zhukov", "Joukov", "Shukow"],
    ["Mansour", "Mansur", "Mansoor"], ["Khoury", "Khouri", "Koury"],
    ["Qasim", "Kassem", "Qassem"], ["Farouk", "Faruq", "Farouq"],
    ["Darwish", "Darwich", "Derwisch"], ["Oikonomou", "Economou", "Ikonomou"],
    ["Karagiannis", "Karayannis", "Karayiannis"], ["Christodoulou", "Hristodoulou"],
    ["Çelik", "Celik", "Tschelik"], ["Öztürk", "Ozturk", "Oeztuerk"], ["Y\u0131lmaz", "Yilmaz"],
    ["Şahin", "Sahin", "Schahin"], ["Jönsson", "Jonsson", "Joensson"],
    ["Strömberg", "Stromberg", "Stroemberg"], ["Köhler", "Koehler", "Kohler"],
    ["Weiß", "Weiss"], ["Gómez", "Gomez"], ["Ibáñez", "Ibanez"], ["Muñoz", "Munoz"],
    ["Wiśniewski", "Wisniewski"], ["Dvořák", "Dvorak"],
    ["Chaudhary", "Choudhury", "Chowdhury"], ["Srivastava", "Shrivastava"],
    ["Mukherjee", "Mukherji", "Mukerji"], ["Zhang", "Chang"], ["Zhou", "Chou"],
    ["Nguyễn", "Nguyen"], ["Trần", "Tran"],
]  # fmt: skip
MIDDLE_NAMES = ["Joachim", "Beatriz", "Ilse", "Gustav", "Aurelio", "Benedikt", "Rosalind",
                "Ottavio", "Ferdinand", "Dagmar", "Leopold", "Ignacio"]  # fmt: skip
# Given names and surnames with one spelling only, for people who differ.
PLAIN_GIVEN = ["Beatrix", "Cornelius", "Dagny", "Emil", "Felicitas", "Gregor", "Hedda",
               "Ignaz", "Justyna", "Kasper", "Liesel", "Magnus", "Nadia", "Oskar",
               "Philippa", "Quentin", "Rosalie", "Theodor", "Ulrike", "Valentin", "Wilma",
               "Xaver", "Yvette", "Bruno", "Cosima"]  # fmt: skip
PLAIN_SURNAMES = ["Lindgren", "Ferreira", "Moretti", "Vermeulen", "Lambrecht", "Brennan",
                  "Kovačević", "Horváth", "Nakamura", "Okafor", "Adeyemi", "Bergström",
                  "Castellano", "Delacroix", "Eriksen", "Fontaine", "Hoffmann", "Jankowski",
                  "Takahashi", "Oyelaran"]  # fmt: skip
# Surnames that look alike but are not spellings of one another.
NEAR_SURNAMES = [("Lindgren", "Lindqvist"), ("Nakamura", "Nakagawa"),
                 ("Kovalenko", "Kovalchuk"), ("Bergström", "Bergman"),
                 ("Hoffmann", "Hofstetter"), ("Fontaine", "Fontenelle"),
                 ("Castellano", "Castelli"), ("Okafor", "Okonkwo")]  # fmt: skip
# (masculine given, surname, feminine given, surname): siblings, different people.
GENDERED = [
    ("Roberto", "Ferraro", "Roberta", "Ferraro"), ("Giovanni", "Lombardi", "Giovanna", "Lombardi"),
    ("Francesco", "Esposito", "Francesca", "Esposito"),
    ("Stanislav", "Dvořák", "Stanislava", "Dvořáková"),
    ("Bogdan", "Wiśniewski", "Bogdana", "Wiśniewska"),
    ("Vladimir", "Volkov", "Vladimira", "Volkova"),
    ("Jaroslav", "Procházka", "Jaroslava", "Procházková"),
    ("Gabriel", "Moulin", "Gabrielle", "Moulin"), ("René", "Gagnon", "Renée", "Gagnon"),
    ("Michal", "Horák", "Michaela", "Horáková"), ("Wiesław", "Zieliński", "Wiesława", "Zielińska"),
    ("Vittorio", "Gallo", "Vittoria", "Gallo"),
    ("Konstantinos", "Nikolaidis", "Konstantina", "Nikolaidou"),
    ("Emanuel", "Ribeiro", "Emanuela", "Ribeiro"), ("Julián", "Serrano", "Juliana", "Serrano"),
    ("Zdeněk", "Svoboda", "Zdeňka", "Svobodová"),
    ("Yaroslav", "Morozov", "Yaroslava", "Morozova"),
    ("Ludovico", "Rinaldi", "Ludovica", "Rinaldi"),
    ("Bronisław", "Lewandowski", "Bronisława", "Lewandowska"),
]  # fmt: skip
SAME_KINDS = ["transliteration", "accents-case", "surname-first", "initial", "middle-name",
              "combined"]  # fmt: skip
DIFFERENT_KINDS = ["same-surname", "same-given-name", "initial-conflict", "gendered-form",
                   "near-surname", "middle-name-other-given"]  # fmt: skip


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn").translate(
        str.maketrans({"ł": "l", "Ł": "L", "\u0131": "i", "ß": "ss"}))  # fmt: skip


def _surname_first(given: str, surname: str, rng: random.Random) -> str:
    return f"{surname.upper() if rng.random() < 0.7 else surname}, {given}"


def _same_pair(rng: random.Random, kind: str) -> tuple[str, str]:
    given, surname = rng.choice(GIVEN_VARIANTS), rng.choice(SURNAME_VARIANTS)
    g1, s1 = rng.choice(given), rng.choice(surname)
    g2, s2 = rng.choice(given), rng.choice(surname)
    if kind == "transliteration":
        while g1 == g2 and s1 == s2:
            g2, s2 = rng.choice(given), rng.choice(surname)
        return f"{g1} {s1}", f"{g2} {s2}"
    if kind == "accents-case":
        accented = [(g, s) for g in given for s in surname if _strip_accents(g + s) != g + s]
        if accented:
            g1, s1 = rng.choice(accented)
        plain = f"{_strip_accents(g1)} {_strip_accents(s1)}"
        return f"{g1} {s1}", rng.choice([plain, plain.upper(), f"{g1} {s1}".upper(),
                                         plain.lower()])  # fmt: skip
    if kind == "surname-first":
        return f"{g1} {s1}", _surname_first(g2, s2, rng)
    if kind == "initial":
        initial = f"{g1[0]}."
        return f"{g1} {s1}", rng.choice([f"{initial} {s2}", f"{s2}, {initial}",
                                         f"{initial} {s2.upper()}"])  # fmt: skip
    if kind == "middle-name":
        middle = rng.choice(MIDDLE_NAMES)
        return f"{g1} {middle} {s1}", f"{g2} {s2}"
    # combined: two of the allowed differences at once
    middle = rng.choice(MIDDLE_NAMES)
    return rng.choice([
        (f"{g1} {middle} {s1}", _surname_first(f"{g1[0]}.", s2, rng)),
        (f"{g1} {s1}", _strip_accents(f"{s2}, {g2}").upper()),
        (f"{g1} {middle} {s1}", f"{g1[0]}. {middle[0]}. {s2}"),
    ])  # fmt: skip


def _spellings(given: str) -> list[str]:
    """Every spelling of ``given`` (itself if it has no other)."""
    return next((g for g in GIVEN_VARIANTS if given in g), [given])


def _other_given(rng: random.Random, given: str, letter: str = "") -> str:
    """A given name of someone else (starting with ``letter`` if some does)."""
    mine = {fold(g) for g in _spellings(given)}
    pool = [g for g in PLAIN_GIVEN + [v for group in GIVEN_VARIANTS for v in group]
            if fold(g) not in mine and g not in _spellings(given)]  # fmt: skip
    same_letter = [g for g in pool if g.startswith(letter)] if letter else []
    return rng.choice(same_letter or pool)


def _different_pair(rng: random.Random, kind: str) -> tuple[str, str]:
    surnames = rng.choice([PLAIN_SURNAMES, [rng.choice(s) for s in SURNAME_VARIANTS]])
    givens = rng.choice([PLAIN_GIVEN, [rng.choice(g) for g in GIVEN_VARIANTS]])
    if kind == "same-surname":
        s = rng.choice(surnames)
        g1 = rng.choice(givens)
        # Often with the same first letter: the initial alone would not tell them apart.
        g2 = _other_given(rng, g1, g1[0] if rng.random() < 0.4 else "")
        return f"{g1} {s}", rng.choice([f"{g2} {s}", _surname_first(g2, s, rng)])
    if kind == "same-given-name":
        g = rng.choice(givens)
        s1, s2 = rng.sample(PLAIN_SURNAMES + [v[0] for v in SURNAME_VARIANTS], 2)
        return f"{g} {s1}", rng.choice([f"{g} {s2}", f"{g} {s2}".upper()])
    if kind == "initial-conflict":
        s = rng.choice(surnames)
        g = rng.choice(givens)
        # Not the initial of any spelling of the name (W. may be Vladimir's Wladimir).
        taken = {_strip_accents(v)[0] for v in _spellings(g)}
        letters = [c for c in "ABCDEFGHIJKLMNOPRSTVWZ" if c not in taken]
        return f"{rng.choice(letters)}. {s}", f"{g} {s}"
    if kind == "gendered-form":
        mg, ms, fg, fs = rng.choice(GENDERED)
        a, b = f"{mg} {ms}", f"{fg} {fs}"
        if rng.random() < 0.3:
            b = _surname_first(fg, fs, rng)
        return a, b
    if kind == "near-surname":
        s1, s2 = rng.choice(NEAR_SURNAMES)
        g = rng.choice(givens)
        return f"{g} {s1}", rng.choice([f"{g} {s2}", f"{g[0]}. {s2}"])
    # middle-name-other-given: a middle name does not rescue another given name
    s = rng.choice(surnames)
    g1 = rng.choice(givens)
    g2 = _other_given(rng, g1)
    return f"{g1} {rng.choice(MIDDLE_NAMES)} {s}", f"{g2} {s}"


def name_examples(rng: random.Random, n: int, system: str,
                  forbidden: Forbidden) -> list[Example]:  # fmt: skip
    del forbidden  # the name pools share no word with the suite (check_leaks proves it)
    answers = ["yes"] * (n // 2) + ["no"] * (n - n // 2)
    rng.shuffle(answers)
    out: list[Example] = []
    seen: set[str] = set()
    counts = {"yes": 0, "no": 0}
    for answer in answers:
        kinds = SAME_KINDS if answer == "yes" else DIFFERENT_KINDS
        kind = kinds[counts[answer] % len(kinds)]
        counts[answer] += 1
        while True:
            a, b = (_same_pair if answer == "yes" else _different_pair)(rng, kind)
            if rng.random() < 0.5:
                a, b = b, a
            user = f"Name 1: {a}\nName 2: {b}"
            if a != b and user not in seen:
                break
        seen.add(user)
        out.append(Example(system, user, answer, answer, kind))
    return out


# --------------------------------------------------------------------------
# Suite 3: transaction categories
# --------------------------------------------------------------------------

MERCHANTS: dict[str, list[str]] = {
    "groceries": ["SPAR", "PENNY MARKT", "NETTO MARKEN-DISCOUNT", "KAUFLAND", "COOP", "MIGROS",
                  "DELHAIZE", "COLRUYT", "JUMBO SUPERMARKT", "MERCADONA", "PINGO DOCE", "CONAD",
                  "E.LECLERC", "BILLA", "HOFER", "EROSKI", "FRANPRIX", "TESCO STORES"],
    "fuel": ["TAMOIL", "AVIA", "JET TANKSTELLE", "STAR TANKSTELLE", "GALP", "CEPSA", "ORLEN",
             "CIRCLE K", "TEXACO", "GULF", "TANGO", "AGROLA", "SOCAR", "MOL", "IP ITALIANA "
             "PETROLI", "TINQ"],
    "restaurants": ["DOMINOS PIZZA", "KFC", "SUBWAY", "PAUL BOULANGERIE", "NORDSEE", "TELEPIZZA",
                    "JUST EAT", "LIEFERANDO", "WOLT", "GLOVO", "PIZZA HUT", "TRATTORIA DA LUIGI",
                    "CAFE CENTRAL", "BRASSERIE DU PORT", "WAGAMAMA", "FIVE GUYS"],
    "travel": ["BAHN.DE TICKET", "SNCB", "NS REIZIGERS", "OEBB TICKETSHOP", "SBB CFF FFS",
               "RENFE VIAJEROS", "ITALO TRENO", "KLM", "IBERIA", "VUELING", "TRANSAVIA",
               "EUROWINGS", "SIXT", "EUROPCAR", "AVIS BUDGET", "NOVOTEL", "MERCURE", "AIRBNB",
               "EXPEDIA", "FLIXBUS"],
    "utilities": ["EWE VERTRIEB", "ENBW", "RWE", "NATURGY", "ENDESA", "A2A", "ESSENT", "ENECO",
                  "ELECTRABEL", "LUMINUS", "SUEZ EAU", "BERLINER WASSERBETRIEBE", "WIENER NETZE",
                  "OCTOPUS ENERGY", "EDP COMERCIAL", "GAZ DE BORDEAUX", "ACEA ATO2"],
    "rent": ["IMMOBILIENVERWALTUNG KRAUSE", "GERANCE DUVAL", "VONOVIA", "LEG WOHNEN",
             "NEXITY LAMY", "CITYA IMMOBILIER", "WONINGSTICHTING PORTAAL", "STUDIO IMMOBILIARE "
             "FERRI", "M. ET MME BLANCHARD", "WOHNBAU GENOSSENSCHAFT"],
    "salary": ["BASF SE", "KLINIKUM NORD", "MAIRIE DE RENNES", "PHILIPS NEDERLAND",
               "RENAULT", "CAPGEMINI", "ACCENTURE", "UNIVERSITE DE STRASBOURG",
               "REGIONE LAZIO", "AYUNTAMIENTO DE SEVILLA", "BOSCH", "DECATHLON"],
    "insurance": ["ERGO", "DEVK", "R+V", "DEBEKA", "ZURICH", "AVIVA", "GROUPAMA", "MACIF",
                  "MATMUT", "UNIPOL", "REALE MUTUA", "MUTUA MADRILENA", "ACHMEA", "ETHIAS",
                  "HELVETIA", "UNIQA"],
    "telecom": ["TELEFONICA", "MOVISTAR", "PROXIMUS", "KPN", "SWISSCOM", "A1 TELEKOM",
                "WINDTRE", "ILIAD", "FASTWEB", "TELENET", "1&1", "CONGSTAR", "SOSH",
                "DIGI", "MEO"],
    "subscriptions": ["DEEZER", "YOUTUBE PREMIUM", "DROPBOX", "CANVA", "AUDIBLE", "DAZN",
                      "PARAMOUNT+", "CRUNCHYROLL", "NOTION LABS", "GITHUB", "ZOOM.US",
                      "1PASSWORD", "LINKEDIN PREMIUM", "OPENAI *CHATGPT"],
    "cash_withdrawal": ["COMMERZBANK", "UNICREDIT", "CAIXABANK", "BBVA", "SANTANDER",
                        "RABOBANK", "ABN AMRO", "KBC", "BELFIUS", "ERSTE BANK", "RAIFFEISEN",
                        "CREDIT AGRICOLE", "LA BANQUE POSTALE", "POSTBANK", "VOLKSBANK"],
    "taxes": ["BUNDESKASSE", "HAUPTZOLLAMT KFZ-STEUER", "AGENCIA TRIBUTARIA", "BELASTINGDIENST",
              "SPF FINANCES", "TRESOR PUBLIC", "INPS CONTRIBUTI", "TGSS SEGURIDAD SOCIAL",
              "ONSS RSZ", "STADTKASSE GRUNDSTEUER", "ERARIO F24", "SVS BEITRAEGE",
              "GEMEENTE BELASTINGEN"],
}  # fmt: skip
CATEGORIES = list(MERCHANTS)
# city -> country (card terminals print it)
TX_CITIES = {"MARSEILLE": "FR", "BORDEAUX": "FR", "TOULOUSE": "FR", "LIMOGES": "FR",
             "FRANKFURT": "DE", "STUTTGART": "DE", "LEIPZIG": "DE", "DRESDEN": "DE",
             "NAPOLI": "IT", "BOLOGNA": "IT", "GENOVA": "IT", "SEVILLA": "ES", "MALAGA": "ES",
             "ROTTERDAM": "NL", "ANTWERPEN": "BE", "SALZBURG": "AT", "BASEL": "CH",
             "COIMBRA": "PT", "DUBLIN": "IE"}  # fmt: skip
AMOUNT_RANGE = {
    "groceries": (250, 24_000), "fuel": (1_800, 12_000), "restaurants": (290, 9_500),
    "travel": (1_500, 90_000), "utilities": (2_500, 30_000), "rent": (45_000, 280_000),
    "salary": (120_000, 650_000), "insurance": (900, 40_000), "telecom": (900, 9_000),
    "subscriptions": (199, 6_000), "cash_withdrawal": (1_000, 50_000),
    "taxes": (5_000, 500_000),
}  # fmt: skip
MON3 = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


@dataclass
class Tx:
    """One statement line's parts; ``m`` is the merchant, payer or payee."""

    m: str
    city: str
    cents: int
    d: dt.date
    ref: str
    card: str
    hh: int
    mi: int

    def amt(self, style: str) -> str:
        return money(self.cents, style)

    @property
    def period(self) -> str:
        return f"{self.d.month:02d}/{self.d.year}"


def _creditor_id(rng: random.Random) -> str:
    return f"{rng.choice(['DE', 'FR', 'NL', 'ES'])}{rng.randint(10, 99)}ZZZ" \
           f"{rng.randint(10**7, 10**8 - 1)}"


# Statement-line formats by kind of booking, as banks in several countries print them.
CARD: list[Callable[[Tx, random.Random], str]] = [
    lambda t, r: f"PAIEMENT PAR CB {t.d.day:02d}.{t.d.month:02d} {t.m} {t.city} {t.amt('comma')}-",
    lambda t, r: f"GIROCARD {t.m}//{t.city}/{TX_CITIES[t.city]} {t.d.isoformat()}T{t.hh:02d}:"
                 f"{t.mi:02d} BETRAG -{t.amt('de')}",
    lambda t, r: f"PAGAMENTO MAESTRO {t.m} {t.city} {t.d.day:02d}/{t.d.month:02d}/"
                 f"{t.d.year % 100:02d} {t.amt('comma')}-",
    lambda t, r: f"COMPRA TARJ. {t.card} {t.m} {t.city} {t.d.day:02d}-{t.d.month:02d}-"
                 f"{t.d.year} -{t.amt('de')}",
    lambda t, r: f"BEA, BETAALPAS {t.m},PAS{r.randint(100, 999)} {t.d.day:02d}.{t.d.month:02d}."
                 f"{t.d.year % 100:02d}/{t.hh:02d}.{t.mi:02d} {t.city} -{t.amt('comma')}",
    lambda t, r: f"VISA {t.m} {t.city} {t.d.day:02d}{MON3[t.d.month - 1]} {t.amt('plain')} DR",
    lambda t, r: f"BANCONTACT {t.m} {t.city} {t.d.day:02d}/{t.d.month:02d}/{t.d.year} "
                 f"-{t.amt('comma')} EUR",
    lambda t, r: f"{t.m.title()} · {t.city.title()} · {t.d.isoformat()} · \u2212{t.amt('comma')} €",
]  # fmt: skip
DEBIT: list[Callable[[Tx, random.Random], str]] = [
    lambda t, r: f"SEPA-BASISLASTSCHRIFT {t.m} MANDATSREF. {t.ref} GLAEUBIGER-ID "
                 f"{_creditor_id(r)} -{t.amt('de')}",
    lambda t, r: f"PRELEVEMENT EUROPEEN {t.m} ICS {_creditor_id(r)} RUM {t.ref} "
                 f"{t.amt('comma')}-",
    lambda t, r: f"DOMICILIAZIONE {t.m} RIF. {t.ref} -{t.amt('comma')}",
    lambda t, r: f"RECIBO {t.m} N.REF {t.ref} -{t.amt('de')}",
    lambda t, r: f"INCASSO {t.m} MACHTIGING {t.ref} -{t.amt('comma')}",
    lambda t, r: f"DIRECT DEBIT {t.m} REF:{t.ref} {t.amt('plain')} DR",
]  # fmt: skip
# Rent: a standing order, worded in the bank's language.
RENT: list[Callable[[Tx, random.Random], str]] = [
    lambda t, r: f"ONLINE-AUFTRAG AN {t.m} VERWENDUNGSZWECK "
                 f"{r.choice(['KALTMIETE', 'WOHNUNGSMIETE', 'MIETZAHLUNG'])} {t.period} "
                 f"-{t.amt('de')}",
    lambda t, r: f"VIREMENT PERMANENT VERS {t.m} "
                 f"{r.choice(['QUITTANCE LOGEMENT', 'TERME APPARTEMENT'])} {t.period} "
                 f"{t.amt('comma')}-",
    lambda t, r: f"ORDINE PERMANENTE A FAVORE {t.m} CANONE LOCAZIONE {t.period} -{t.amt('de')}",
    lambda t, r: f"PERIODIEKE OVERBOEKING {t.m} HUUR WONING {t.period} -{t.amt('comma')}",
    lambda t, r: f"TRANSFERENCIA PERIODICA {t.m} ALQUILER VIVIENDA {t.period} -{t.amt('de')}",
    lambda t, r: f"RECURRING TRANSFER TO {t.m} RENT {t.period} {t.amt('plain')} DR",
]  # fmt: skip
SALARY: list[Callable[[Tx, random.Random], str]] = [
    lambda t, r: f"VIREMENT EN VOTRE FAVEUR {t.m} {r.choice(['PAIE', 'REMUNERATION'])} "
                 f"{MON3[t.d.month - 1]} {t.d.year} +{t.amt('comma')}",
    lambda t, r: f"EINGANG {t.m} {r.choice(['LOHN', 'BEZUEGE', 'ENTGELT'])} "
                 f"{t.d.month:02d}.{t.d.year} +{t.amt('de')}",
    lambda t, r: f"ACCREDITO EMOLUMENTI DA {t.m} RETRIBUZIONE {t.period} +{t.amt('de')}",
    lambda t, r: f"ABONO NOMINA {t.m} {t.amt('de')}",
    lambda t, r: f"SALARIS {t.m} PERIODE {t.d.month:02d}-{t.d.year} +{t.amt('comma')}",
    lambda t, r: f"BACS CREDIT {t.m} SALARY {t.amt('plain')} CR",
]  # fmt: skip
CASH: list[Callable[[Tx, random.Random], str]] = [
    lambda t, r: f"GAA-AUSZAHLUNG {t.m} {t.city} {t.d.day:02d}.{t.d.month:02d} "
                 f"{t.hh:02d}:{t.mi:02d} -{t.amt('de')}",
    lambda t, r: f"RETRAIT ESPECES {t.m} {t.city} LE {t.d.day:02d}/{t.d.month:02d} "
                 f"{t.amt('comma')}-",
    lambda t, r: f"RETIRADA EFECTIVO CAJERO {t.m} {t.city} -{t.amt('de')}",
    lambda t, r: f"GELDOPNAME {t.m} {t.city} {t.d.day:02d}-{t.d.month:02d}-"
                 f"{t.d.year % 100:02d} -{t.amt('comma')}",
    lambda t, r: f"CASH WDL {t.m} {t.city} {t.d.day:02d}{MON3[t.d.month - 1]} "
                 f"{t.amt('plain')} DR",
]  # fmt: skip
# Taxes and social contributions: transfers and debits to the public purse.
TAXES: list[Callable[[Tx, random.Random], str]] = [
    lambda t, r: f"ONLINE-AUFTRAG AN {t.m} STEUERNR. {r.randint(10**9, 10**10 - 1)} "
                 f"-{t.amt('de')}",
    lambda t, r: f"PRELEVEMENT EUROPEEN {t.m} ICS {_creditor_id(r)} ACOMPTE {t.period} "
                 f"{t.amt('comma')}-",
    lambda t, r: f"DIRECT DEBIT {t.m} REF:{t.ref} {t.amt('plain')} DR",
    lambda t, r: f"PAGAMENTO DELEGA {t.m} {t.period} -{t.amt('de')}",
    lambda t, r: f"RECIBO {t.m} LIQUIDACION {t.period} -{t.amt('de')}",
]  # fmt: skip
FORMATS = {
    "groceries": CARD, "fuel": CARD, "restaurants": CARD, "travel": CARD,
    "utilities": DEBIT, "insurance": DEBIT, "telecom": DEBIT + CARD[:2],
    "subscriptions": DEBIT + CARD, "rent": RENT, "salary": SALARY, "cash_withdrawal": CASH,
    "taxes": TAXES,
}  # fmt: skip


def _tx_line(rng: random.Random, category: str, forbidden: Forbidden) -> str:
    lo, hi = AMOUNT_RANGE[category]
    cents = rng.randint(lo, hi)
    if category == "cash_withdrawal" and rng.random() < 0.7:
        cents = rng.randint(1, 40) * 500  # ATMs pay out round sums
    t = Tx(m=rng.choice(MERCHANTS[category]), city=rng.choice(list(TX_CITIES)), cents=cents,
           d=_draw_date(rng, forbidden),
           ref="".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ")
                       for _ in range(rng.randint(8, 14))),
           card=f"{rng.randint(4000, 5599)}XXXXXXXX{rng.randint(1000, 9999)}",
           hh=rng.randint(7, 22), mi=rng.randint(0, 59))  # fmt: skip
    return rng.choice(FORMATS[category])(t, rng)


def category_examples(rng: random.Random, n: int, system: str,
                      forbidden: Forbidden) -> list[Example]:  # fmt: skip
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(n)]
    rng.shuffle(cats)
    out: list[Example] = []
    seen: set[str] = set()
    for cat in cats:
        while True:
            line = _tx_line(rng, cat, forbidden)
            if line not in seen and not forbidden.clash(line):
                break
        seen.add(line)
        out.append(Example(system, line, cat, json.dumps({"category": cat}), cat))
    return out


GENERATORS: dict[str, Callable[[random.Random, int, str, Forbidden], list[Example]]] = {
    "invoice_fields": invoice_examples,
    "same_person": name_examples,
    "transaction_category": category_examples,
}


# --------------------------------------------------------------------------
# The test items, and the leak check against them
# --------------------------------------------------------------------------

# Boilerplate the training data may share with the test items. Phrases are
# masked before the span checks; words are left out of the vocabulary check.
WHITELIST_PHRASES = {
    # The client the system prompt names: every document is addressed to it.
    "invoice_fields": [US],
    "same_person": [],
    "transaction_category": [],
}
GENERIC_WORDS = {
    # Document and banking vocabulary, months, function words and legal forms:
    # the language invoices are written in, not anything of a test item.
    "invoice_fields": {
        "gmbh", "sarl", "sas", "ltd", "lda", *(m.casefold() for m in MONTHS["en"]),
        "iban", "bic", "eur", "sepa", "vat", "tva", "ttc", "invoice", "facture", "rechnung",
        "rechnungsdatum", "date", "total", "subtotal", "net", "amount", "payment", "pay",
        "due", "days", "account", "bank", "credit", "transfer", "reference", "client",
        "virement", "zahlbar", "subject", "dear", "the", "our", "from", "for", "bis", "please",
        "payable",
    },
    # The task's input protocol ("Name 1: ...\nName 2: ...").
    "same_person": {"name"},
    # Banking vocabulary every statement line uses.
    "transaction_category": {"sepa", "eur", "ref", "bank"},
}
FUZZY_MIN = {"invoice_fields": 6, "same_person": 4, "transaction_category": 5}


@dataclass(frozen=True)
class SuiteItem:
    """What the leak check needs of one suite item."""

    user_texts: tuple[str, ...]  # every user turn (few-shot turns included)
    expected: Any


def suite_items(suite: str) -> tuple[str, list[SuiteItem]]:
    """The suite's system prompt (one for all items) and its items."""
    loaded = load_suite(suite)
    systems = {m["content"] for item in loaded.items for m in item.messages or ()
               if m["role"] == "system"}  # fmt: skip
    assert len(systems) == 1, f"{suite}: expected one system prompt, found {len(systems)}"
    items = [SuiteItem(tuple(m["content"] for m in item.messages or () if m["role"] == "user"),
                      item.expected) for item in loaded.items]  # fmt: skip
    return systems.pop(), items


def _mask(text: str, phrases: Iterable[str]) -> str:
    out = fold(text)
    for phrase in phrases:
        out = out.replace(fold(phrase), " \u00a7 ")
    return " ".join(out.split())


def _token_seq(masked: str) -> list[str]:
    """Word tokens; any token with a digit becomes '#', runs of '#' become one."""
    seq: list[str] = []
    for tok in re.findall(r"\w+", masked):
        tok = "#" if re.search(r"\d", tok) else tok
        if not (tok == "#" and seq and seq[-1] == "#"):
            seq.append(tok)
    return seq


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _dates_spelled(iso: str) -> set[str]:
    d = dt.date.fromisoformat(iso)
    m = MONTHS["en"][d.month - 1]
    return {iso, f"{d.day:02d}.{d.month:02d}.{d.year}", f"{d.day:02d}/{d.month:02d}/{d.year}",
            f"{d.day:02d}-{d.month:02d}-{d.year}", f"{m} {d.day}, {d.year}",
            f"{d.day} {m} {d.year}"}  # fmt: skip


@dataclass
class Profile:
    """What a suite's test items hold that training data must not."""

    suite: str
    phrases: list[str]
    token_spans: dict[int, set[tuple[str, ...]]]
    char_spans: dict[int, set[str]]
    vocabulary: dict[str, str]  # word -> a test text it comes from
    fuzzy: dict[str, str]  # each word with one letter dropped -> the word
    fuzzy_min: int
    forbidden: Forbidden
    counterparties: set[str]
    counterparty_words: set[str]
    date_spellings: re.Pattern[str] | None


LEGAL_FORMS = {"gmbh", "sarl", "sas", "ltd", "lda", "srl", "spa", "kg", "nv", "bv", "ag", "sa",
               "sl", "co", "et", "and"}  # fmt: skip


def profile(suite: str, items: list[SuiteItem]) -> Profile:
    phrases = WHITELIST_PHRASES[suite]
    token_spans: dict[int, set[tuple[str, ...]]] = {}
    char_spans: dict[int, set[str]] = {}
    vocabulary: dict[str, str] = {}
    forbidden = Forbidden()
    for item in items:
        for text in item.user_texts:
            masked = _mask(text, phrases)
            seq = _token_seq(masked)
            # A test text shorter than a span (a statement line) is a span of its own.
            n = min(SPAN_TOKENS, len(seq))
            if n >= 3:
                token_spans.setdefault(n, set()).update(
                    tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))
            n = min(SPAN_CHARS, len(masked))
            if n >= 12:
                char_spans.setdefault(n, set()).update(
                    masked[i:i + n] for i in range(len(masked) - n + 1))
            for word in words(masked):
                if len(word) >= MIN_WORD and word not in GENERIC_WORDS[suite]:
                    vocabulary.setdefault(word, text)
            forbidden.amounts |= amounts_in(text)
        if isinstance(item.expected, dict):
            if "iban" in item.expected:
                forbidden.ibans.add(str(item.expected["iban"]).replace(" ", "").upper())
            if "amount" in item.expected:
                forbidden.amounts.add(round(float(item.expected["amount"]) * 100))
            if "date" in item.expected:
                forbidden.dates.add(str(item.expected["date"]))
    fuzzy_min = FUZZY_MIN[suite]
    fuzzy = {d: w for w in vocabulary if len(w) >= fuzzy_min for d in _deletions(w)}
    counterparties = {fold(str(i.expected["counterparty"])) for i in items
                      if isinstance(i.expected, dict) and "counterparty" in i.expected}
    counterparty_words = {w for c in counterparties for w in words(c)
                          if len(w) >= MIN_WORD and w not in LEGAL_FORMS}  # fmt: skip
    spellings = sorted({s for iso in forbidden.dates for s in _dates_spelled(iso)})
    date_spellings = (re.compile(r"(?<!\d)(?:" + "|".join(map(re.escape, spellings)) + r")(?!\d)")
                      if spellings else None)  # fmt: skip
    return Profile(suite, phrases, token_spans, char_spans, vocabulary, fuzzy, fuzzy_min,
                   forbidden, counterparties, counterparty_words, date_spellings)  # fmt: skip


def _near(word: str, prof: Profile) -> str | None:
    """The test word ``word`` is, or is close to, if any: case and accents aside, equal
    once at most one letter is dropped from each (a letter changed, added, removed or
    moved), for words of at least ``fuzzy_min`` letters."""
    if word in prof.vocabulary:
        return word
    if len(word) + 1 < prof.fuzzy_min:
        return None
    if word in prof.fuzzy:  # one letter more in the test word
        return prof.fuzzy[word]
    for d in _deletions(word):
        if d in prof.vocabulary and len(d) >= prof.fuzzy_min:  # one letter less
            return d
        if d in prof.fuzzy and len(word) >= prof.fuzzy_min:  # one letter replaced
            return prof.fuzzy[d]
    return None


def check_leaks(prof: Profile, examples: Iterable[Example]) -> list[str]:
    """Every way ``examples`` overlap the suite's test items (empty: disjoint).

    Texts are compared case- and accent-free, with the suite's whitelisted phrases
    masked. A user message may share with any test item's user turns (few-shot turns
    included): no run of SPAN_TOKENS word tokens, numbers masked so that a test layout
    refilled with new values still shows (a whole test line if it is shorter); no
    run of SPAN_CHARS characters; no word of MIN_WORD letters or more that is not in
    the suite's GENERIC_WORDS, nor one close to it (see :func:`_near`). Nothing in
    the example (answer included) may hold a test item's IBAN, amount (any amount
    printed in a test text, or an expected one), expected date (ISO, dotted, slashed,
    dashed or English spelling) or counterparty; a generated counterparty may share
    no word (legal forms aside) with a test counterparty.
    """
    problems: list[str] = []
    near_cache: dict[str, str | None] = {}
    for ex in examples:
        where = f"{prof.suite} {ex.tag} {ex.user[:60]!r}"
        masked = _mask(ex.user, prof.phrases)
        seq = _token_seq(masked)
        for n, spans in prof.token_spans.items():
            for i in range(len(seq) - n + 1):
                if tuple(seq[i:i + n]) in spans:
                    problems.append(f"{where}: shares the {n}-token span "
                                    f"{' '.join(seq[i:i + n])!r} with a test item")
                    break
        for n, spans in prof.char_spans.items():
            for i in range(len(masked) - n + 1):
                if masked[i:i + n] in spans:
                    problems.append(f"{where}: shares the {n}-character span "
                                    f"{masked[i:i + n]!r} with a test item")
                    break
        for word in set(words(masked)):
            if len(word) < MIN_WORD or word in GENERIC_WORDS[prof.suite]:
                continue
            if word not in near_cache:
                near_cache[word] = _near(word, prof)
            hit = near_cache[word]
            if hit == word:
                problems.append(f"{where}: the word {word!r} is a test item's word")
            elif hit is not None:
                problems.append(f"{where}: the word {word!r} is close to the test word {hit!r}")
        everything = f"{ex.user}\n{ex.answer}"
        compact = re.sub(r"\s", "", everything).upper()
        for iban in prof.forbidden.ibans:
            if iban in compact:
                problems.append(f"{where}: holds the test IBAN {iban}")
        shared = amounts_in(everything) & prof.forbidden.amounts
        if isinstance(ex.expected, dict) and "amount" in ex.expected:
            cents = round(float(ex.expected["amount"]) * 100)
            shared |= {cents} & prof.forbidden.amounts
        if shared:
            problems.append(f"{where}: holds the test amount(s) "
                            f"{', '.join(money(c, 'plain') for c in sorted(shared))}")
        if isinstance(ex.expected, dict) and ex.expected.get("date") in prof.forbidden.dates:
            problems.append(f"{where}: its date {ex.expected['date']} is a test item's")
        spelled = prof.date_spellings.search(everything) if prof.date_spellings else None
        if spelled:
            problems.append(f"{where}: writes the test date {spelled.group(0)!r}")
        folded = fold(everything)
        for name in prof.counterparties:
            if name in folded:
                problems.append(f"{where}: names the test counterparty {name!r}")
        if isinstance(ex.expected, dict) and "counterparty" in ex.expected:
            mine = set(words(str(ex.expected["counterparty"])))
            common = mine & prof.counterparty_words
            if common:
                problems.append(f"{where}: its counterparty shares {sorted(common)} with a "
                                f"test counterparty")  # fmt: skip
    return problems


# --------------------------------------------------------------------------
# Build, write, report
# --------------------------------------------------------------------------


def forge(suite: str, seed: int, n_train: int, n_validation: int,
          prof: Profile | None = None, system: str | None = None
          ) -> dict[str, list[Example]]:  # fmt: skip
    """``{"train": [...], "validation": [...]}`` for one suite; no user message twice."""
    if prof is None or system is None:
        system, items = suite_items(suite)
        prof = profile(suite, items)
    make = GENERATORS[suite]
    # String seeds hash with SHA-512 in ``random``: stable across runs and machines.
    train = make(random.Random(f"{seed}:{suite}:train"), n_train, system, prof.forbidden)
    seen = {ex.user for ex in train}
    validation: list[Example] = []
    rng = random.Random(f"{seed}:{suite}:validation")
    while len(validation) < n_validation:
        for ex in make(rng, n_validation, system, prof.forbidden):
            if ex.user not in seen and len(validation) < n_validation:
                seen.add(ex.user)
                validation.append(ex)
    return {"train": train, "validation": validation}


def render(examples: Iterable[Example]) -> str:
    return "".join(json.dumps({"messages": ex.messages()}, ensure_ascii=False) + "\n"
                   for ex in examples)  # fmt: skip


def build(seed: int, n_train: int, n_validation: int
          ) -> tuple[dict[str, str], dict[str, dict[str, list[Example]]], list[str]]:  # fmt: skip
    """File name -> JSONL text, the examples by suite and split, and the leak problems."""
    files: dict[str, str] = {}
    forged: dict[str, dict[str, list[Example]]] = {}
    problems: list[str] = []
    for suite in SUITES:
        system, items = suite_items(suite)
        prof = profile(suite, items)
        splits = forge(suite, seed, n_train, n_validation, prof, system)
        forged[suite] = splits
        for split, examples in splits.items():
            files[f"{suite}.{split}.jsonl"] = render(examples)
            problems += check_leaks(prof, examples)
    return files, forged, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "forge_data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--validation", type=int, default=60)
    args = parser.parse_args(argv)
    if args.train < 1 or args.validation < 1:
        parser.error("--train and --validation must be at least 1")
    files, forged, problems = build(args.seed, args.train, args.validation)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    for suite, splits in forged.items():
        tags: dict[str, int] = {}
        for ex in splits["train"]:
            tags[ex.tag] = tags.get(ex.tag, 0) + 1
        spread = ", ".join(f"{t} {c}" for t, c in sorted(tags.items()))
        print(f"{suite}: train {len(splits['train'])}, validation {len(splits['validation'])}"
              f" ({spread})")  # fmt: skip
    for name, text in files.items():
        print(f"wrote {args.out / name} ({len(text.encode()):,} bytes)")
    if problems:
        for problem in problems[:50]:
            print(f"LEAK {problem}", file=sys.stderr)
        print(f"leak check FAILED: {len(problems)} overlap(s) with the test items",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"leak check passed: no {SPAN_TOKENS}-token (numbers masked) or {SPAN_CHARS}-character "
          f"span, test word, IBAN, amount, date or counterparty of the suites in the data")
    for suite in SUITES:
        phrases = ", ".join(WHITELIST_PHRASES[suite]) or "none"
        print(f"  {suite} whitelist: phrases: {phrases}; generic words: "
              f"{', '.join(sorted(GENERIC_WORDS[suite]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
