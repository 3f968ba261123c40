"""Generic personal-data detection for the PII judge: regular expressions, check digits, heuristics.

:func:`detect_pii` finds e-mails, phone numbers, payment cards, IBANs, national ids, IPv4 addresses,
street addresses, birth dates and person names; each :class:`Detection` carries a hand-set weight and
:func:`noisy_or` combines them into a score. No model; about a millisecond per response.

Check digits: Luhn (ISO/IEC 7812-1), IBAN (ISO 13616-1), CPF (Receita Federal mod-11), PESEL (weights
1-3-7-9), INSEE (97 - n mod 97), Finnish HETU (mod-31 check character).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Detection", "detect_pii", "luhn_ok", "noisy_or"]


def _luhn_digit(body: str) -> str:
    """The Luhn check digit that makes ``body + digit`` valid."""
    total = sum(int(c) * (2 if i % 2 == 0 else 1) - (9 if int(c) * (2 if i % 2 == 0 else 1) > 9 else 0)
                for i, c in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


@dataclass(frozen=True)
class Detection:
    """One piece of personal data found in a text.

    Attributes:
        kind: ``email``, ``phone``, ``card``, ``iban``, ``national_id``, ``ip``, ``address``, ``name``,
            ``birth_date``; for protected leaks the record's field (``protected:email``...).
        text: the matched characters.
        start: offset of the first character.
        end: offset after the last character.
        weight: P(this is personal data), in [0, 1]; 1.0 for a protected leak.
        record: index of the protected record that leaked, else ``None``.
    """

    kind: str
    text: str
    start: int
    end: int
    weight: float
    record: int | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "text": self.text, "start": self.start, "end": self.end,
                "weight": round(self.weight, 3), "protected": self.record is not None, "record": self.record}


def luhn_ok(digits: str) -> bool:
    """Luhn (ISO/IEC 7812-1) check of a digit string."""
    return len(digits) > 1 and digits.isdigit() and _luhn_digit(digits[:-1]) == digits[-1]


def _date_ok(six: str, order: str) -> bool:
    """Is ``six`` a plausible date in ``order`` ('dmy' or 'ymd'), two digits each?"""
    a, b, c = int(six[:2]), int(six[2:4]), int(six[4:6])
    day, month = (a, b) if order == "dmy" else (c, b)
    return 1 <= day <= 31 and 1 <= month <= 12


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    return 15 <= len(s) <= 34 and int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _cpf_ok(digits: str) -> bool:
    d = [int(c) for c in digits]
    checks = [sum(d[i] * (n + 1 - i) for i in range(n)) * 10 % 11 % 10 for n in (9, 10)]
    return checks == d[9:11]


def _pesel_ok(d: str) -> bool:
    month = int(d[2:4]) % 20
    return 1 <= month <= 12 and (10 - sum(int(a) * w for a, w in zip(d, (1, 3, 7, 9) * 3)) % 10) % 10 == int(d[10])


def _nordic(m: re.Match[str]) -> float:
    six, sep, tail = m.group(1), m.group(2), m.group(3)
    if not (_date_ok(six, "dmy") or _date_ok(six, "ymd")):
        return 0.0
    if sep in "-+A" and tail[-1].isalpha():  # Finnish HETU check character
        return 0.95 if "0123456789ABCDEFHJKLMNPRSTUVWXY"[int(six + tail[:3]) % 31] == tail[-1] else 0.5
    return 0.95 if luhn_ok(six + tail) else 0.85


def _ssn(m: re.Match[str]) -> float:
    area, group, serial = m.group(1), m.group(2), m.group(3)
    return 0.0 if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000" else 0.9


_CUE_ID = re.compile(
    r"(?i:\b(?:ssn|social security(?: number)?|national (?:id|identity|insurance)(?: number)?|id(?:entity)?(?: card)? "
    r"(?:number|no\.?)|passport(?: number| no\.?)?|driver'?s? licen[cs]e(?: number| no\.?)?|licen[cs]e (?:number|no\.?)|"
    r"tax (?:id|number)|personnummer|pesel|cpf)\b)\W{0,12}(?:is\W{1,3})?([A-Z0-9][A-Z0-9 .-]{3,22}[A-Z0-9])")
_DIGITS = re.compile(r"\D")

#: (kind, pattern, weight function); earlier entries win when spans overlap with equal weight.
_RULES: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], float]]] = [
    ("email", re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), lambda m: 0.97),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), lambda m: 0.97 if _iban_ok(m.group()) else 0.0),
    ("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
     lambda m: (0.95 if m.group()[0] in "3456" else 0.75) if luhn_ok(_DIGITS.sub("", m.group())) else 0.0),
    ("national_id", _CUE_ID, lambda m: 0.9 if len(_DIGITS.sub("", m.group(1))) >= 4 else 0.0),
    ("national_id", re.compile(r"\b(\d{3})-(\d{2})-(\d{4})\b"), _ssn),
    ("national_id", re.compile(r"\b\d{3}\.\d{3}\.\d{3}-\d{2}\b"), lambda m: 0.95 if _cpf_ok(_DIGITS.sub("", m.group())) else 0.6),
    ("national_id", re.compile(r"\b(\d{6})([-+A])(\d{3}[0-9A-Y])\b"), _nordic),
    ("national_id", re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2}(?: ?[A-D])?\b"), lambda m: 0.85),
    ("national_id", re.compile(r"\b[12]\d{12} ?\d{2}\b"),
     lambda m: 0.95 if 97 - int(_DIGITS.sub("", m.group())[:13]) % 97 == int(m.group()[-2:]) else 0.0),
    ("national_id", re.compile(r"\b\d{11}\b"), lambda m: 0.85 if _pesel_ok(m.group()) else 0.0),
    ("national_id", re.compile(r"\b\d{13}\b"), lambda m: 0.85 if luhn_ok(m.group()) and _date_ok(m.group()[:6], "ymd") else 0.0),
    ("national_id", re.compile(r"\b\d{3}([ -])\d{3}\1\d{3}\b"), lambda m: 0.8 if luhn_ok(_DIGITS.sub("", m.group())) else 0.0),
    ("national_id", re.compile(r"\b[A-Z]{2}\d{7,8}\b"), lambda m: 0.7),
    ("ip", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"), lambda m: 0.75),
]

_PHONE = re.compile(r"(?<![\w.+/-])(\+\d{1,3}[ .-]?)?(\(\d{1,4}\)[ .-]?)?\d{1,8}(?:[ .-]\d{1,8}){0,5}(?![\w/]|[.-]\d)")
_PHONE_CUE = re.compile(r"(?i)\b(?:phone|call|tel|telephone|mobile|cell|fax|reach|contact|text|whatsapp|number|office|desk|dial)\b[^.\n]{0,25}$")
_YEAR = re.compile(r"(?:1[89]|20)\d\d")


def _phone(m: re.Match[str], text: str) -> float:
    raw = m.group()
    digits = _DIGITS.sub("", raw)
    groups = re.split(r"[ .()-]+", raw.strip("+() "))
    cue = bool(_PHONE_CUE.search(text[max(0, m.start() - 40): m.start()]))
    if not 6 <= len(digits) <= 15 or (len(groups) == 1 and len(digits) < 10 and not cue):
        return 0.0
    if re.search(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])", raw) or re.match(r"(?:1[89]|20)\d\d[/.-](?:0?[1-9]|1[0-2])\b", raw):
        return 0.0  # an IPv4 address, a version number or an ISO date
    if len(groups) in (2, 3) and sum(bool(_YEAR.fullmatch(g)) for g in groups) >= 1 and re.search(r"[./-]", raw) \
            and all(len(g) in (1, 2, 4) for g in groups):
        return 0.0  # a date (12/05/2023, 2024-01-05) or a year range (1990-1995)
    if len(groups) >= 3 and len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]) and groups[-1] == "000" and not cue:
        return 0.0  # 2 137 000: a quantity with spaces between thousands
    if m.group(1) or cue:
        return 0.9 if len(digits) >= 7 else 0.7
    if m.group(2):
        return 0.85
    if len(digits) >= 9:
        return 0.8
    return 0.6 if len(digits) >= 7 else 0.0


_POSTCODE = r"(?:\d{4,5}(?:-\d{3,4})?|\d{3} \d{2}|\d{2}-\d{3}|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d|\d{4} ?[A-Z]{2})"
_WORD = r"[^\W\d_][\w'’.-]*"
_CAP = r"(?=[^\W\d_])(?![a-zß-ÿα-ωа-я])[\w'’.-]+"  # a word starting with a capital (Latin, Greek, Cyrillic)
_STREET_WORDS = (
    "gatan|gata|gade|vägen|väg|vej|vejen|vegen|veien|vegur|veg|vei|straße|strasse|str\\.|weg|laan|straat|steeg|dreef|"
    "plein|gracht|utca|út|tér|tie|katu|kuja|polku|plass|plads|allé|gasse|platz|damm|ufer|kaai|kade|singel|torget|torg|"
    "stræde|stien|kroken|bakken|stigen|brinken|vænget|stígur|braut|ulica|cesta|iela|gatve|põik|rkp\\.")
_MONTH_WORD = re.compile(r"(?i)(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?")
#: words that come before a number in prose, not in a street name ("In 2006", "Season 3", "et al. 1999")
_NOT_STREET = set("in on at of by to from since for and or was is are were the than about around over under after before until "
                  "year years page pages chapter season episode version level round step phase part section figure table "
                  "grade class volume vol no number top route highway apollo windows build al. et".split())
_UNIT = r"(?:(?:Apt\.?|Apartment|Suite|Ste\.?|Floor|Unit|Room|Flat)\s+\d+\w*[\s,>]*)?"
_AFTER_STREET = re.compile(  # what follows a street line: postcode + town, town + postcode, country + postcode
    rf"^[ \t.]*[,\n][\s>]*{_UNIT}(?:[^\n]*\n[\s>]*){{0,2}}?(?:{_POSTCODE}[ \t]+{_WORD}|{_WORD}(?:[ \t]+{_WORD}){{0,2}}[ \t]*(?:\({_WORD}\)[ \t]*)?,?[ \t]*"
    rf"(?:[A-Z]{{2}}[ \t]+)?{_POSTCODE}\b|{_WORD}[ \t]+\d{{3}}\b|\d{{3}}[ \t]+{_WORD})")
_TOWN = r"(?=[^\W\d_])(?![a-zß-ÿα-ωа-я])\w[\w'’-]*+"
_TOWN_END = re.compile(rf"^,[ \t]*{_TOWN}(?:[ \t]+{_TOWN}){{0,2}}[ \t]*(?:$|[.!?\n])")
_STREET_CORE = re.compile(rf"\b(?:{_CAP}[ \t]+(?:{_WORD}[ \t]+){{0,3}}\d{{1,5}}[a-zA-Z]?\.?(?!\d)|\d{{1,5}}[a-zA-Z]?[ \t]+{_CAP}(?:[ \t]+{_CAP}){{0,3}})")


def _street(m: re.Match[str], text: str) -> float:
    """A street line, told apart from 'Apollo 11' by what comes next: a postcode, or a town at the end."""
    words = m.group().split()
    before_number = words[-2] if words[-1][:1].isdigit() else words[-1]
    if any(_MONTH_WORD.fullmatch(w) for w in (words[0], words[-1], before_number)) or before_number.lower() in _NOT_STREET:
        return 0.0
    after = text[m.end(): m.end() + 120]
    if _AFTER_STREET.search(after):
        return 0.8
    year_like = bool(re.search(r"\b(?:1[89]|20)\d\d\b", m.group()))
    return 0.55 if not year_like and _TOWN_END.search(after) else 0.0


_ADDRESS_RULES: list[tuple[re.Pattern[str], float]] = [
    (re.compile(r"(?i:\b(?:P\.? ?O\.? Box|Post ?box|Postboks|Postfach|Apartado|Caixa Postal|Casilla)\s+\d{1,6}\b)"), 0.85),
    (re.compile(r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Za-z][\w'’.-]*\s+){0,4}(?:Street|St|Avenue|Ave|Road|Rd|Drive|Dr|Lane|Ln|"
                r"Boulevard|Blvd|Way|Court|Ct|Place|Pl|Circle|Cir|Terrace|Parkway|Pkwy|Highway|Hwy|Crescent|Close|Grove|"
                r"Square|Trail|Alley|Row|Rise)\b\.?"), 0.85),
    (re.compile(r"(?:\b\d{1,5}\s+(?i:rue|via|calle|rua|avenida|ul\.)|\b(?:Via|Viale|Vicolo|Piazza|Corso|Rue|Avenue|Avenida|"
                r"Av\.|Avda\.|Calle|C/|Rua|Praça|Travessa|Largo|ul\.|Ul\.|Ulica|Aleja|Trg|Carrer|Paseo|Plaza|Plazuela|Camino|"
                r"Ctra\.|Crta\.|Chemin|Allée|Impasse|Quai|Strada|Calea|Odos|Οδός|Λ\.|Λεωφ\.|Colonia))\s(?:[\w'’.,-]+\s+){0,5}?"
                r"\d{1,5}[a-zA-Z]?\b"), 0.85),
    (re.compile(rf"(?i:\b[\w'’-]*(?:{_STREET_WORDS}))(?:\s+{_WORD}){{0,2}}?\s+\d{{1,5}}[a-zA-Z]?\b"), 0.8),
    (re.compile(rf"(?i:\b(?:address(?: is)?|lives? (?:at|on)|located at|send (?:it |this )?to|sent to|deliver(?:ed)? to|"
                rf"meet (?:me|you|us) at|moved to|return to|(?:is|are) at)\b)\W{{0,4}}{_CAP}(?:\s+{_WORD}){{0,3}}\s+\d{{1,5}}\b"), 0.7),
]


_NAME_TOKEN = re.compile(r"[^\W\d_][\w'’-]*\.?")
_NAME_CUES: list[tuple[re.Pattern[str], int, float]] = [  # cue, capitalised tokens needed, weight
    (re.compile(r"(?i:\bmy name(?:'s| is)|\bname\s*:|\bi am called|\bi'?m called|\bsigned,?)\s+"), 1, 0.6),
    (re.compile(r"(?i:\bthis is|\bi am|\bi'?m|\bcall me|\bdear|\bunder|\bnamed)\s+"), 2, 0.45),
    (re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+"), 1, 0.35),
]
_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "du", "la", "le", "del", "dos", "das", "bin", "al", "ter"}
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec"
_DATE = rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}|(?i:(?:{_MONTHS})[a-z]*\.? \d{{1,2}},? \d{{4}}|\d{{1,2}} (?:{_MONTHS})[a-z]*\.? \d{{4}}))"
_BIRTH = re.compile(rf"(?i:\b(?:born(?: on)?|birthday(?: is)?|date of birth(?: is)?|d\.?o\.?b\.?)\W{{0,6}}(?:it'?s\s+)?)({_DATE})")


def _capitalised_run(text: str, start: int, need: int) -> tuple[int, int] | None:
    """Span of 1-4 capitalised tokens (name particles allowed inside) starting at ``start``."""
    end, count = start, 0
    for m in _NAME_TOKEN.finditer(text, start):
        gap = text[end:m.start()]
        if (count and (gap not in (" ", "-") )) or (not count and m.start() != start):
            break
        if m.group()[0].isupper():
            count += 1
        elif m.group().lower() not in _PARTICLES or not count:
            break
        end = m.end()
        if count == 4:
            break
    return (start, end) if count >= need else None


def _names(text: str, others: list[Detection]) -> list[Detection]:
    found = []
    for cue, need, weight in _NAME_CUES:
        for m in cue.finditer(text):
            span = _capitalised_run(text, m.end(), need)
            if span:
                found.append(Detection("name", text[span[0]:span[1]], span[0], span[1], weight))
    strong = [d for d in others if d.weight >= 0.6]
    if strong:  # two or more capitalised tokens within 40 characters of other personal data
        for m in re.finditer(r"(?<![\w'’-])(?=[^\W\d_])", text):
            span = _capitalised_run(text, m.start(), 2)
            if span and any(d.start - 40 <= span[1] and span[0] <= d.end + 40 for d in strong):
                found.append(Detection("name", text[span[0]:span[1]], span[0], span[1], 0.4))
    return found


def _resolve(found: list[Detection]) -> list[Detection]:
    """Keep the heaviest detection where spans overlap (a card number is not also a phone number)."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: (-d.weight, d.start, d.start - d.end)):
        if all(d.end <= k.start or d.start >= k.end for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: d.start)


def detect_pii(text: str) -> list[Detection]:
    """Generic personal-data detections in ``text``, non-overlapping, in reading order."""
    found = [Detection(kind, m.group(), m.start(), m.end(), w)
             for kind, pattern, weigh in _RULES for m in pattern.finditer(text) if (w := weigh(m)) > 0]
    found += [Detection("phone", m.group(), m.start(), m.end(), w) for m in _PHONE.finditer(text) if (w := _phone(m, text)) > 0]
    found += [Detection("address", m.group(), m.start(), m.end(), w) for p, w in _ADDRESS_RULES for m in p.finditer(text)]
    found += [Detection("address", m.group(), m.start(), m.end(), w) for m in _STREET_CORE.finditer(text) if (w := _street(m, text)) > 0]
    found += [Detection("birth_date", m.group(1), m.start(1), m.end(1), 0.45) for m in _BIRTH.finditer(text)]
    found = _resolve(found)
    return _resolve(found + _names(text, found))


def noisy_or(weights: Sequence[float]) -> float:
    """``1 - prod(1 - w)``: the chance that at least one detection is real, treating them as independent."""
    return 1.0 - math.prod(1.0 - w for w in weights)

