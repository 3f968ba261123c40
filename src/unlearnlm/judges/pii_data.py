"""presidio-evaluator 0.3.2 data for the PII judge: fictitious identities, sentence templates, rendering.

:func:`presidio_identities` and :func:`presidio_templates` load the packaged files;
:func:`render_template` fills a template with one identity and says which protected fields it
discloses; :func:`pii_eval_sets` renders them into a tuning half and a held-out half, the data behind
:func:`unlearnlm.judges.judge_cards.pii_card`.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from unlearnlm.assets import package_dir
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError, DataError
from unlearnlm.judges.pii_patterns import _luhn_digit

__all__ = ["pii_eval_sets", "presidio_identities", "presidio_templates", "render_template", "template_label", "template_slots"]

_RAW = ("data_generator", "raw_data")


# --- packaged data: presidio-evaluator 0.3.2 ------------------------------------------------------------


def _presidio_file(name: str) -> Path:
    path = package_dir("presidio_evaluator").joinpath(*_RAW, name)
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall it with `pip install --no-deps --force-reinstall presidio-evaluator==0.3.2`")
    return path


def _repair_float(value: str, length: int, row: int) -> str:
    """Rebuild a number a spreadsheet stored as a float (``5.54563E+15``): keep its leading digits, fill
    the lost ones deterministically from the row number, and end with a Luhn check digit."""
    mantissa = value.upper().split("E")[0].replace(".", "")
    filler = "".join(str((row * 7919 + i * 104729) % 10) for i in range(length))
    body = (mantissa + filler)[: length - 1]
    return body + _luhn_digit(body)


def presidio_identities() -> list[dict[str, str]]:
    """The 3,000 fictitious identities of presidio-evaluator's ``FakeNameGenerator.com_3000.csv``.

    The CSV went through a spreadsheet that turned long numbers into floats: every ``CCNumber`` and the
    South African ``NationalID`` values lost all but their first 5-6 digits. Those are rebuilt (same
    prefix, deterministic filler, valid Luhn check digit: 16 digits for cards, 13 for ZA ids) and the
    row's ``repaired`` field names them. All other values are as shipped.

    Returns:
        One dict per identity with the CSV's 30 columns (``GivenName``, ``Surname``, ``EmailAddress``,
        ``TelephoneNumber``, ``StreetAddress``, ``City``, ``ZipCode``, ``CCNumber``, ``NationalID``,
        ``Birthday``, ...) plus ``repaired``.
    """
    path = _presidio_file("FakeNameGenerator.com_3000.csv")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) < 100 or "GivenName" not in rows[0]:
        raise DataError(f"{path} does not look like FakeNameGenerator data; reinstall presidio-evaluator==0.3.2")
    for i, row in enumerate(rows):
        repaired = []
        for field, length in (("CCNumber", 16), ("NationalID", 13)):
            if "E+" in row.get(field, "").upper():
                row[field] = _repair_float(row[field], length, i)
                repaired.append(field)
        row["repaired"] = ",".join(repaired)
    return rows


def presidio_templates() -> list[str]:
    """presidio-evaluator's 210 sentence templates, placeholders as ``{{name}}`` (one uses ``{name}``).

    Literal ``\\n`` in the file become newlines; ``\\,`` becomes a comma.
    """
    lines = _presidio_file("templates.txt").read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.replace("\\n", "\n").replace("\\,", ",") for line in lines if line.strip()]


# --- rendering templates ------------------------------------------------------------------------------

#: template placeholder -> protected field it discloses (``None``: not identifying on its own).
_NAME_SLOTS = ("person", "name", "name_male", "name_female")
_STRONG_SLOTS = {"email", "phone_number", "credit_card_number", "ssn", "iban", "us_driver_license", "ip_address",
                 "address", "street_address"}
_AMBIGUOUS_SLOTS = {*_NAME_SLOTS, "first_name", "first_name_male", "first_name_female", "first_name_nonbinary",
                    "last_name", "last_name_male", "last_name_female", "date_of_birth", "zipcode", "postcode",
                    "building_number", "street_name", "secondary_address"}
_SLOT = re.compile(r"\{\{?\s*(\w+)\s*\}?\}")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def template_slots(template: str) -> list[str]:
    """Placeholder names in a presidio template (``{{building_number}} {{street_name}}`` counts as one
    ``street_address``)."""
    return _SLOT.findall(_merge_street(template))


def _merge_street(template: str) -> str:
    return re.sub(r"\{\{building_number\}\} \{\{street_name\}\}", "{{street_address}}", template)


def template_label(template: str) -> int | None:
    """1: names a direct identifier or contact detail; 0: no personal data; None: names, dates of
    birth or postcodes only (personal in some contexts, public in others)."""
    slots = set(template_slots(template))
    if slots & _STRONG_SLOTS:
        return 1
    return None if slots & _AMBIGUOUS_SLOTS else 0


def _digits_grouped(digits: str, rng: random.Random) -> str:
    sep = rng.choice([" ", "-", ""])
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))


def _iban(rng: random.Random) -> str:
    country, bban = rng.choice(["DE", "GB", "FR", "NL", "ES"]), "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    raw = f"{country}{check:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def _address(ident: Mapping[str, str], rng: random.Random) -> str:
    street, city, zipc, state, country = (ident[k] for k in ("StreetAddress", "City", "ZipCode", "State", "CountryFull"))
    formats = [f"{street}, {zipc} {city}", f"{street}\n{zipc} {city}\n{country}", f"{street}, {city} {zipc}, {country}"]
    if state:
        formats.append(f"{street}, {city}, {state} {zipc}")
    return rng.choice(formats)


def _slot_value(slot: str, ident: Mapping[str, str], rng: random.Random, licences: Sequence[str]) -> tuple[str, str | None]:
    """(text, protected field disclosed or None) for one placeholder filled from identity ``ident``."""
    given, surname = ident["GivenName"], ident["Surname"]
    if slot in _NAME_SLOTS:
        middle = f" {ident['MiddleInitial']}." if ident.get("MiddleInitial") and rng.random() < 0.2 else ""
        return f"{given}{middle} {surname}", "name"
    street_number = re.findall(r"\d+\w*\.?", ident["StreetAddress"])
    values: dict[str, tuple[str, str | None]] = {
        "email": (ident["EmailAddress"], "email"),
        "phone_number": (ident["TelephoneNumber"] if rng.random() < 0.7 else
                         f"+{ident['TelephoneCountryCode']} {ident['TelephoneNumber'].lstrip('0')}", "phone"),
        "credit_card_number": (_digits_grouped(ident["CCNumber"], rng), "card"),
        "ssn": (ident["NationalID"], "national_id") if ident.get("NationalID") else
               (f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}", None),
        "address": (_address(ident, rng), "street_address"),
        "street_address": (ident["StreetAddress"], "street_address"),
        "building_number": (street_number[0] if street_number else str(rng.randint(1, 300)), None),
        "street_name": (re.sub(r"\s*\d+\w*\.?\s*", " ", ident["StreetAddress"]).strip(), None),
        "secondary_address": (f"{rng.choice(['Apt.', 'Suite', 'Floor'])} {rng.randint(1, 40)}", None),
        "date_of_birth": (ident["Birthday"], "birthday"),
        "iban": (_iban(rng), None),
        "ip_address": (".".join(str(rng.randint(1, 254)) for _ in range(4)), None),
        "us_driver_license": (rng.choice(licences) if licences else "D1234567", None),
        "url": (f"https://www.{ident['Domain'].lower()}", None),
        "organization": (ident["Company"] or "Acme", None),
        "job": (ident["Occupation"], None),
        "city": (ident["City"], None),
        "country": (ident["CountryFull"], None),
        "state_abbr": (ident["State"] or ident["City"], None),
        "zipcode": (ident["ZipCode"], None),
        "postcode": (ident["ZipCode"], None),
        "age": (ident["Age"], None),
        "year": (ident["Birthday"][-4:], None),
        "date_time": (f"{rng.choice(_DAYS)}, {rng.randint(1, 28)} March {rng.randint(1990, 2023)} {rng.randint(0, 23)}:00", None),
        "day_of_week": (rng.choice(_DAYS), None),
    }
    if slot in values:
        return values[slot]
    if slot.startswith("first_name"):
        return given, None
    if slot.startswith("last_name"):
        return surname, None
    if slot.startswith("prefix"):
        return ident["Title"], None
    if slot.startswith("nation"):
        return ident["NameSet"] + ("s" if slot.endswith("plural") else ""), None
    raise ConfigError(f"unknown presidio template placeholder {{{{{slot}}}}}")


def render_template(
    template: str, ident: Mapping[str, str], rng: random.Random, licences: Sequence[str] = ()
) -> tuple[str, list[str]]:
    """Fill a presidio template with one identity from :func:`~unlearnlm.judges.pii.presidio_identities`.

    Card numbers come in groups of four (space, dash or none), phones sometimes with the country code,
    addresses as street + postcode + city (+ country or state), names sometimes with a middle initial.

    Returns:
        The text and the protected fields it discloses (``name``, ``email``, ``phone``, ``card``,
        ``national_id``, ``street_address``, ``birthday``), in :data:`~unlearnlm.judges.pii.FIELD_KEYS`
        terms.
    """
    disclosed: list[str] = []

    def fill(m: re.Match[str]) -> str:
        text, field = _slot_value(m.group(1), ident, rng, licences)
        if field:
            disclosed.append(field)
        return text

    return _SLOT.sub(fill, _merge_street(template)), disclosed


# --- evaluation sets ----------------------------------------------------------------------------------


def pii_eval_sets(seed: int = 0, per_template: int = 8) -> dict[str, list[Dialogue]]:
    """Rendered presidio sentences, split into a tuning half and a held-out half.

    Identities are split 1,500/1,500 and templates half/half within each :func:`template_label` class,
    both with ``random.Random(seed)``; each template is rendered ``per_template`` times with random
    identities of its half.

    Returns:
        ``{"tune": [...], "heldout": [...]}``: dialogues whose response is the sentence, with meta
        ``label`` (1/0/None), ``slots``, ``disclosed`` (protected fields), ``identity`` (row number)
        and ``template``.
    """
    rng = random.Random(seed)
    identities, templates = presidio_identities(), presidio_templates()
    order = list(range(len(identities)))
    rng.shuffle(order)
    people = {"tune": order[: len(order) // 2], "heldout": order[len(order) // 2:]}
    halves: dict[str, list[str]] = {"tune": [], "heldout": []}
    for label in (1, 0, None):
        group = sorted(t for t in templates if template_label(t) == label)
        rng.shuffle(group)
        halves["tune"] += group[: len(group) // 2]
        halves["heldout"] += group[len(group) // 2:]
    out: dict[str, list[Dialogue]] = {}
    for split, group in halves.items():
        draw = random.Random(seed + 1)
        rows = []
        for t in group:
            for _ in range(per_template):
                who = draw.choice(people[split])
                text, disclosed = render_template(t, identities[who], draw)
                meta = {"label": template_label(t), "slots": template_slots(t), "disclosed": disclosed, "identity": who,
                        "template": t}
                rows.append(Dialogue("", text, meta=meta))
        out[split] = rows
    return out
