"""Generate the bundled `intramuros bench` suites (fixed seed, reproducible).

Usage::

    python benchmarks/make_bench_suites.py [--check]

Writes three JSONL suites of narrow enterprise tasks into
``src/intramuros/bench/suites/``:

- ``invoice_fields``: extract IBAN (valid ISO 13616 checksum), total amount,
  date and counterparty from invoices, payment notices and transfer advices
  (English, French, German layouts; net/VAT/total and due dates as
  distractors) into JSON, scored field by field;
- ``transaction_category``: classify bank statement lines (card payments,
  SEPA direct debits, transfers, ATM withdrawals, as banks print them) into
  one of twelve categories;
- ``same_person``: yes/no, do two names refer to the same person
  (transliterations, initials, name order, accents, versus different people
  sharing a surname or a given name).

``--check`` regenerates in memory and fails if the committed files differ.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "intramuros" / "bench" / "suites"
SEED = 20261202
N_ITEMS = 60

# --------------------------------------------------------------------------
# IBANs (ISO 13616: mod-97 check digits over BBAN + country + "00")
# --------------------------------------------------------------------------

# country -> BBAN layout: "n" digit, "a" upper-case letter
BBAN = {
    "DE": "n" * 18, "FR": "n" * 23, "IT": "a" + "n" * 22, "ES": "n" * 20,
    "NL": "aaaa" + "n" * 10, "BE": "n" * 12, "AT": "n" * 16, "LU": "n" * 16,
    "PT": "n" * 21, "GR": "n" * 23, "IE": "aaaa" + "n" * 14,
}  # fmt: skip
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _as_digits(text: str) -> str:
    return "".join(str(int(c, 36)) for c in text)


def iban_valid(iban: str) -> bool:
    """ISO 13616 checksum check."""
    s = iban.replace(" ", "").upper()
    return len(s) > 4 and int(_as_digits(s[4:] + s[:4])) % 97 == 1


def make_iban(rng: random.Random, country: str) -> str:
    bban = "".join(rng.choice(LETTERS) if c == "a" else rng.choice("0123456789")
                   for c in BBAN[country])  # fmt: skip
    check = 98 - int(_as_digits(bban + country + "00")) % 97
    iban = f"{country}{check:02d}{bban}"
    assert iban_valid(iban), iban
    return iban


def spaced(iban: str) -> str:
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


# --------------------------------------------------------------------------
# Suite 1: invoice fields
# --------------------------------------------------------------------------

US = "Northwind Trading GmbH"
SUPPLIERS = [
    ("Müller Logistik GmbH", "DE", "Hamburg"), ("Atelier Durand SARL", "FR", "Lyon"),
    ("Rossi Forniture S.r.l.", "IT", "Milano"), ("Talleres García S.L.", "ES", "Valencia"),
    ("Van Dijk Verpakkingen B.V.", "NL", "Utrecht"), ("Brasserie Peeters NV", "BE", "Gent"),
    ("Huber Elektrotechnik GmbH", "AT", "Graz"), ("Kieffer Services S.à r.l.", "LU", "Esch"),
    ("Costa & Filhos Lda", "PT", "Porto"), ("Papadakis Trading S.A.", "GR", "Athens"),
    ("O'Brien Office Supplies Ltd", "IE", "Cork"), ("Schneider IT-Service GmbH", "DE", "Köln"),
    ("Imprimerie Lefèvre SAS", "FR", "Nantes"), ("Bianchi Trasporti S.p.A.", "IT", "Torino"),
    ("Nordlicht Reinigung KG", "DE", "Bremen"), ("Cabinet Moreau et Associés", "FR", "Lille"),
]  # fmt: skip
MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]  # fmt: skip
MONTHS_FR = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre"]  # fmt: skip
MONTHS_DE = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
             "September", "Oktober", "November", "Dezember"]  # fmt: skip

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "iban": {"type": "string"},
        "amount": {"type": "number"},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "counterparty": {"type": "string"},
    },
    "required": ["iban", "amount", "date", "counterparty"],
    "additionalProperties": False,
}
INVOICE_SYSTEM = (
    f"You read invoices and payment documents for {US}. Extract: iban (the other party's "
    "IBAN, without spaces), amount (the total amount to pay or paid, VAT included, as a "
    "number), date (the invoice date, or the payment date for a payment, as YYYY-MM-DD), "
    f"counterparty (the other company's name exactly as written; never {US}). "
    "Answer with the JSON object only."
)


def _en_amount(x: float) -> str:
    return f"{x:,.2f}"


def _eu_amount(x: float, sep: str = ".") -> str:
    return f"{x:,.2f}".replace(",", "\x00").replace(".", ",").replace("\x00", sep)


def _date(rng: random.Random) -> tuple[int, int, int]:
    return 2025 + rng.randint(0, 1), rng.randint(1, 12), rng.randint(1, 28)


def _invoice_text(rng: random.Random, kind: int, supplier: str, city: str, iban: str,
                  total: float, ymd: tuple[int, int, int]) -> str:  # fmt: skip
    y, m, d = ymd
    net = round(total / 1.2, 2)
    vat = round(total - net, 2)
    inv = f"{rng.choice(['INV', 'F', 'RE', 'FA'])}-{y}-{rng.randint(100, 9999):04d}"
    due_d = min(28, d + rng.randint(1, 20))
    bic = "".join(rng.choice(LETTERS) for _ in range(4)) + iban[:2] + "2X"
    if kind == 0:
        return (f"INVOICE {inv}\n{supplier}, {rng.randint(1, 200)} Market Street, {city}\n"
                f"Bill to: {US}, Lindenallee 4, Berlin\nInvoice date: {MONTHS_EN[m - 1]} {d}, {y}"
                f"\nDue date: {MONTHS_EN[m - 1]} {due_d}, {y}\nSubtotal: EUR {_en_amount(net)}\n"
                f"VAT 20%: EUR {_en_amount(vat)}\nTotal due: EUR {_en_amount(total)}\n"
                f"Please pay by bank transfer to IBAN {spaced(iban)} (BIC {bic}), "
                f"quoting {inv}.")  # fmt: skip
    if kind == 1:
        return (f"FACTURE N° {inv}\nÉmetteur : {supplier}, {city}\nClient : {US}\n"
                f"Date de facture : {d:02d}/{m:02d}/{y}\nÉchéance : {due_d:02d}/{m:02d}/{y}\n"
                f"Total HT : {_eu_amount(net, ' ')} €\nTVA 20 % : {_eu_amount(vat, ' ')} €\n"
                f"Total TTC : {_eu_amount(total, ' ')} €\n"
                f"Règlement par virement — IBAN : {spaced(iban)} — BIC : {bic}")  # fmt: skip
    if kind == 2:
        return (f"Rechnung Nr. {inv}\n{supplier} · {city}\nAn: {US}\n"
                f"Rechnungsdatum: {d:02d}.{m:02d}.{y}\n"
                f"Zahlbar bis: {due_d:02d}.{m:02d}.{y}\nNettobetrag: {_eu_amount(net)} EUR\n"
                f"zzgl. 20 % USt: {_eu_amount(vat)} EUR\nGesamtbetrag: {_eu_amount(total)} EUR\n"
                f"Bankverbindung: IBAN {spaced(iban)}, BIC {bic}")  # fmt: skip
    if kind == 3:
        ref = rng.randint(10**7, 10**8 - 1)
        return (f"Payment notice\nOn {d} {MONTHS_EN[m - 1]} {y} we received a transfer of "
                f"€{_en_amount(total)} from {supplier} (account {iban}), reference "
                f"{ref}, credited to the account of {US}.")  # fmt: skip
    if kind == 4:
        person = rng.choice(["Anna Keller", "Marc Dubois", "Giulia Conti", "Pieter de Vries",
                             "Sofia Almeida", "Sean Murphy"])  # fmt: skip
        return (f"Subject: invoice {inv}\n\nDear {US} team,\n\nplease find attached our "
                f"invoice {inv} dated {y}-{m:02d}-{d:02d} for a total of "
                f"{_eu_amount(total)} EUR (net {_eu_amount(net)} EUR + VAT), payable within "
                f"30 days.\nOur bank details: {supplier}, IBAN: {iban}\n\nKind regards,\n"
                f"{person}\n{supplier}")  # fmt: skip
    # SEPA credit transfer advice (we paid the supplier)
    return (f"SEPA CREDIT TRANSFER ADVICE\nOrdering party: {US}\nExecution date: "
            f"{y}-{m:02d}-{d:02d}\nBeneficiary: {supplier}\nBeneficiary IBAN: {spaced(iban)}\n"
            f"Amount: EUR {_en_amount(total)}\nRemittance information: {inv}")  # fmt: skip


def invoice_items(rng: random.Random) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for i in range(N_ITEMS):
        supplier, country, city = SUPPLIERS[i % len(SUPPLIERS)]
        iban = make_iban(rng, country)
        total = round(rng.choice([rng.uniform(20, 999), rng.uniform(1000, 48000)]), 2)
        ymd = _date(rng)
        kind = i % 6
        text = _invoice_text(rng, kind, supplier, city, iban, total, ymd)
        expected = {"iban": iban, "amount": total, "date": "{}-{:02d}-{:02d}".format(*ymd),
                    "counterparty": supplier}  # fmt: skip
        items.append({
            "id": f"invoice-{i + 1:03d}",
            "messages": [{"role": "system", "content": INVOICE_SYSTEM},
                         {"role": "user", "content": text}],
            "expected": expected,
            "scorer": "json_schema", "schema": INVOICE_SCHEMA,
            "fields": ["iban", "amount", "date", "counterparty"], "tolerance": 0.005,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "invoice_fields", "schema": INVOICE_SCHEMA}},
            "max_tokens": 160,
            "tags": [["invoice-en", "facture-fr", "rechnung-de", "payment-notice", "email",
                      "transfer-advice"][kind]],
        })  # fmt: skip
    return items


# --------------------------------------------------------------------------
# Suite 2: transaction categories
# --------------------------------------------------------------------------

MERCHANTS: dict[str, list[str]] = {
    "groceries": ["LIDL", "ALDI SUED", "CARREFOUR MARKET", "REWE", "EDEKA", "AUCHAN",
                  "INTERMARCHE", "ESSELUNGA", "MONOPRIX", "CONTINENTE", "ALBERT HEIJN"],
    "fuel": ["SHELL", "TOTALENERGIES", "ARAL", "ESSO", "BP", "ENI STATION", "Q8", "REPSOL",
             "OMV"],
    "restaurants": ["MCDONALDS", "BURGER KING", "STARBUCKS", "PIZZERIA DA MARIO",
                    "LE PETIT BISTRO", "VAPIANO", "SUSHI SHOP", "DELIVEROO", "UBER EATS"],
    "travel": ["SNCF", "DB FERNVERKEHR", "RYANAIR", "AIR FRANCE", "LUFTHANSA", "EASYJET",
               "BOOKING.COM", "TRENITALIA", "HERTZ", "IBIS HOTEL"],
    "utilities": ["EDF", "ENGIE", "E.ON ENERGIE", "VATTENFALL", "VEOLIA EAU", "ENEL ENERGIA",
                  "IBERDROLA", "STADTWERKE MUENCHEN"],
    "rent": ["SCI LES LILAS", "HAUSVERWALTUNG SCHMIDT", "FONCIA GESTION", "IMMOBILIARE ROMA"],
    "salary": ["ACME SAS", "SIEMENS AG", "NORTHWIND TRADING GMBH", "COMUNE DI MILANO"],
    "insurance": ["AXA FRANCE", "ALLIANZ VERSICHERUNG", "GENERALI", "MAIF", "HUK-COBURG",
                  "MAPFRE"],
    "telecom": ["ORANGE", "SFR", "BOUYGUES TELECOM", "FREE MOBILE", "TELEKOM DEUTSCHLAND",
                "VODAFONE", "TIM", "O2"],
    "subscriptions": ["NETFLIX.COM", "SPOTIFY", "AMAZON PRIME", "APPLE.COM/BILL",
                      "DISNEY PLUS", "MICROSOFT*365", "ADOBE *CREATIVE CLOUD"],
    "cash_withdrawal": ["BNP PARIBAS", "SPARKASSE", "INTESA SANPAOLO", "ING", "SOCIETE GENERALE",
                        "DEUTSCHE BANK"],
    "taxes": ["DGFIP IMPOT", "FINANZAMT", "AGENZIA ENTRATE F24", "URSSAF", "TAXE FONCIERE",
              "HMRC VAT"],
}  # fmt: skip
CATEGORIES = list(MERCHANTS)
CITIES = ["PARIS", "BERLIN", "MILANO", "LYON", "MUENCHEN", "MADRID", "LISBOA", "AMSTERDAM",
          "BRUXELLES", "WIEN", "HAMBURG", "TORINO"]  # fmt: skip
CATEGORY_SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": CATEGORIES}},
    "required": ["category"],
    "additionalProperties": False,
}
CATEGORY_SYSTEM = (
    "Classify one bank statement line into exactly one category: "
    "groceries (supermarkets), fuel (petrol stations), restaurants (cafés, fast food, food "
    "delivery), travel (trains, flights, hotels, car hire), utilities (electricity, gas, "
    "water), rent, salary (pay received), insurance, telecom (phone, internet), "
    "subscriptions (streaming, software), cash_withdrawal (ATM), taxes (tax office, social "
    'contributions). Answer with JSON: {"category": "..."}.'
)


def _tx_line(rng: random.Random, category: str, name: str) -> str:
    dd, mm = rng.randint(1, 28), rng.randint(1, 12)
    city = rng.choice(CITIES)
    amount = _eu_amount(rng.uniform(3, 180) if category not in ("rent", "salary", "taxes")
                        else rng.uniform(450, 3900))  # fmt: skip
    card = rng.randint(1000, 9999)
    ref = "".join(rng.choice("0123456789ABCDEF") for _ in range(10))
    card_formats: list[Callable[[], str]] = [
        lambda: f"CB {name} {dd:02d}/{mm:02d} {city} CARTE {card} -{amount}",
        lambda: f"CARD PAYMENT {name} {city} {dd:02d}.{mm:02d}.25 EUR {amount}",
        lambda: f"POS {name}*{rng.randint(100, 999)} {city} {dd:02d}{mm:02d} {amount}",
        lambda: f"KARTENZAHLUNG {name} {city} {dd:02d}.{mm:02d} -{amount} EUR",
    ]
    debit_formats: list[Callable[[], str]] = [
        lambda: f"PRLV SEPA {name} REF {ref} -{amount}",
        lambda: f"SEPA DD {name} MANDATE {ref} {amount} EUR",
        lambda: f"LASTSCHRIFT {name} KD-NR {rng.randint(10**5, 10**6)} -{amount}",
        lambda: f"ADDEBITO SDD {name} {ref} EUR -{amount}",
    ]
    if category in ("groceries", "fuel", "restaurants", "travel"):
        return rng.choice(card_formats)()
    if category in ("utilities", "insurance", "telecom", "subscriptions"):
        return rng.choice(debit_formats + card_formats[:1])()
    if category == "rent":
        word = rng.choice(["LOYER", "MIETE", "AFFITTO", "RENT"])
        return rng.choice([f"VIR SEPA EMIS {name} {word} {mm:02d}/2025 -{amount}",
                           f"DAUERAUFTRAG {name} {word} {mm:02d}.2025 -{amount} EUR",
                           f"STANDING ORDER {name} {word} {mm:02d}/25 -{amount}"])  # fmt: skip
    if category == "salary":
        word = rng.choice(["SALAIRE", "GEHALT", "STIPENDIO", "PAYROLL"])
        return rng.choice([f"VIR SEPA RECU /DE {name} /MOTIF {word} {mm:02d}/2025 +{amount}",
                           f"GUTSCHRIFT {name} {word} {mm:02d}.2025 +{amount} EUR",
                           f"BONIFICO IN ENTRATA {name} {word} +{amount}"])  # fmt: skip
    if category == "cash_withdrawal":
        return rng.choice([f"RETRAIT DAB {name} {city} {dd:02d}/{mm:02d} -{amount}",
                           f"GELDAUTOMAT {name} {city} {dd:02d}.{mm:02d} -{amount} EUR",
                           f"ATM WITHDRAWAL {name} {city} {dd:02d}/{mm:02d} {amount}",
                           f"PRELIEVO BANCOMAT {name} {city} -{amount}"])  # fmt: skip
    # taxes
    return rng.choice([f"PRLV SEPA {name} {rng.randint(10**9, 10**10)} -{amount}",
                       f"UEBERWEISUNG {name} STNR {rng.randint(10**9, 10**10)} -{amount} EUR",
                       f"VIR SEPA EMIS {name} ECHEANCE {mm:02d}/2025 -{amount}"])  # fmt: skip


def category_items(rng: random.Random) -> list[dict[str, object]]:
    cats = [CATEGORIES[i % len(CATEGORIES)] for i in range(N_ITEMS)]
    rng.shuffle(cats)
    items: list[dict[str, object]] = []
    for i, cat in enumerate(cats):
        line = _tx_line(rng, cat, rng.choice(MERCHANTS[cat]))
        items.append({
            "id": f"tx-{i + 1:03d}",
            "messages": [{"role": "system", "content": CATEGORY_SYSTEM},
                         {"role": "user", "content": line}],
            "expected": cat, "scorer": "choice", "choices": CATEGORIES, "field": "category",
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "transaction_category", "schema": CATEGORY_SCHEMA}},
            "max_tokens": 24,
        })  # fmt: skip
    return items


# --------------------------------------------------------------------------
# Suite 3: same person?
# --------------------------------------------------------------------------

# Spellings of one given name (transliterations, accents) -- one person may carry any.
GIVEN_VARIANTS = [
    ["Mohammed", "Muhammad", "Mohamed", "Mohammad"], ["Yevgeny", "Evgeniy", "Jewgeni", "Evgueni"],
    ["Aleksandr", "Alexander", "Aleksander"], ["Sergei", "Sergey", "Serguei"],
    ["Dmitri", "Dmitry", "Dmitrii"], ["Yuri", "Yury", "Iouri", "Juri"],
    ["Georgios", "Giorgos", "Yorgos"], ["Youssef", "Yousef", "Yusuf"], ["Ahmed", "Ahmad"],
    ["Hussein", "Husain", "Hussain"], ["Tatiana", "Tatyana", "Tatjana"],
    ["Natalia", "Natalya", "Natalja"], ["José", "Jose"], ["François", "Francois"],
    ["Jürgen", "Juergen", "Jurgen"], ["Søren", "Soeren", "Soren"], ["Zoë", "Zoe"],
    ["Andrei", "Andrey", "Andrej"], ["Nikolai", "Nikolay", "Nikolaj"],
]  # fmt: skip
SURNAME_VARIANTS = [
    ["Ivanov", "Ivanoff", "Iwanow"], ["Petrov", "Petroff", "Petrow"],
    ["Smirnov", "Smirnoff", "Smirnow"], ["Abdullah", "Abdallah"], ["Papadopoulos", "Papadopulos"],
    ["Müller", "Mueller", "Muller"], ["Schröder", "Schroeder"], ["García", "Garcia"],
    ["Núñez", "Nunez"], ["Al-Hassan", "Al Hassan", "Alhassan"], ["Khrushchev", "Chruschtschow"],
    ["Kuznetsov", "Kouznetsov", "Kusnezow"], ["Lefèvre", "Lefevre"], ["Øster", "Oester"],
]  # fmt: skip
OTHER_GIVEN = ["Anna", "Thomas", "Karen", "Pierre", "Lucia", "Omar", "Fatima", "Elena",
               "Marco", "Ingrid", "Hans", "Leila", "Viktor", "Chloé", "Paolo", "Mei"]  # fmt: skip
PLAIN_SURNAMES = ["Smith", "Haddad", "Rossi", "Novak", "Kowalski", "Dubois", "Jensen",
                  "Fischer", "Moreau", "Hansen", "Wagner", "Costa", "Haddad", "Nowak"]  # fmt: skip
# Feminine/masculine forms are different people (Ivan Petrov's sister is Ivana Petrova).
GENDERED = [("Ivan", "Petrov", "Ivana", "Petrova"), ("Jan", "Novák", "Jana", "Nováková"),
            ("Andrea", "Rossi", "Andreas", "Rossi"), ("Daniel", "Moreau", "Danielle", "Moreau"),
            ("Aleksandr", "Smirnov", "Aleksandra", "Smirnova"),
            ("Paulo", "Costa", "Paula", "Costa"), ("Yevgeny", "Kuznetsov", "Yevgenia",
                                                  "Kuznetsova")]  # fmt: skip
NAME_SYSTEM = (
    "Decide whether two names refer to the same person. The same person may be written "
    "with another transliteration or spelling, without accents, in another order (surname "
    "first), with initials instead of given names (an initial matches a given name with "
    "that first letter), or without a middle name. A different given name, a different "
    "surname, or the feminine/masculine form of a name is a different person. Answer yes "
    "or no."
)
NAME_SHOTS = [
    {"role": "user", "content": "Name 1: Sergei Ivanov\nName 2: Serguei Iwanow"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "Name 1: Maria Fischer\nName 2: Martin Fischer"},
    {"role": "assistant", "content": "no"},
]


def _strip_accents(name: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFD", name)
                   if unicodedata.category(c) != "Mn")  # fmt: skip


def _same(rng: random.Random, kind: int) -> tuple[str, str, str]:
    given = rng.choice(GIVEN_VARIANTS)
    surname = rng.choice(SURNAME_VARIANTS)
    g1, g2 = rng.sample(given, 2)
    s1, s2 = rng.choice(surname), rng.choice(surname)
    if kind == 0:
        return f"{g1} {s1}", f"{g2} {s2}", "transliteration"
    if kind == 1:
        return f"{g1} {s1}", f"{g1[0]}. {s2}", "initial"
    if kind == 2:
        return f"{g1} {s1}", f"{s2.upper()}, {g2}", "surname-first"
    if kind == 3:
        a = f"{rng.choice(['Marie', 'José', 'Zoë', 'Chloé', 'André'])} {s1}"
        return a, _strip_accents(a).upper(), "accents-case"
    middle = rng.choice(["Maria", "Elena", "Karl", "Luis", "Anne", "Ali"])
    return f"{g1} {middle} {s1}", f"{g2} {s2}", "middle-name"


def _different(rng: random.Random, kind: int) -> tuple[str, str, str]:
    if kind == 0:
        surname = rng.choice(rng.choice(SURNAME_VARIANTS) + PLAIN_SURNAMES)
        a, b = rng.sample(OTHER_GIVEN, 2)
        return f"{a} {surname}", f"{b} {surname}", "same-surname"
    if kind == 1:
        given = rng.choice(rng.choice(GIVEN_VARIANTS))
        s1, s2 = rng.sample(PLAIN_SURNAMES[:12], 2)
        return f"{given} {s1}", f"{given} {s2}", "same-given-name"
    if kind == 2:
        surname = rng.choice(PLAIN_SURNAMES)
        a, b = rng.sample([g for g in OTHER_GIVEN if g[0] not in "A"], 2)
        while a[0] == b[0]:
            a, b = rng.sample(OTHER_GIVEN, 2)
        return f"{a[0]}. {surname}", f"{b} {surname}", "initial-conflict"
    g1, s1, g2, s2 = rng.choice(GENDERED)
    return f"{g1} {s1}", f"{g2} {s2}", "gendered-form"


def name_items(rng: random.Random) -> list[dict[str, object]]:
    answers = ["yes"] * (N_ITEMS // 2) + ["no"] * (N_ITEMS - N_ITEMS // 2)
    rng.shuffle(answers)
    items: list[dict[str, object]] = []
    seen: set[tuple[str, str]] = set()
    n_yes = n_no = 0
    for answer in answers:
        while True:
            if answer == "yes":
                a, b, tag = _same(rng, n_yes % 5)
            else:
                a, b, tag = _different(rng, n_no % 4)
            if a != b and (a, b) not in seen:
                break
        seen.add((a, b))
        n_yes += answer == "yes"
        n_no += answer == "no"
        if rng.random() < 0.5:
            a, b = b, a
        items.append({
            "id": f"names-{len(items) + 1:03d}",
            "messages": [{"role": "system", "content": NAME_SYSTEM}, *NAME_SHOTS,
                         {"role": "user", "content": f"Name 1: {a}\nName 2: {b}"}],
            "expected": answer, "scorer": "choice", "choices": ["yes", "no"],
            "max_tokens": 8, "tags": [tag],
        })  # fmt: skip
    return items


SUITES: dict[str, Callable[[random.Random], list[dict[str, object]]]] = {
    "invoice_fields": invoice_items,
    "transaction_category": category_items,
    "same_person": name_items,
}


def render() -> dict[str, str]:
    """Suite name -> JSONL text (each suite from its own seeded generator)."""
    out: dict[str, str] = {}
    for offset, (name, make) in enumerate(SUITES.items()):
        items = make(random.Random(SEED + offset))
        assert len(items) >= 50 and len({it["id"] for it in items}) == len(items)
        out[name] = "".join(json.dumps(it, ensure_ascii=False, sort_keys=False) + "\n"
                            for it in items)  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail if the committed suites differ from a fresh generation")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, text in render().items():
        path = OUT / f"{name}.jsonl"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({text.count(chr(10))} items)")
    if stale:
        print("stale: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
