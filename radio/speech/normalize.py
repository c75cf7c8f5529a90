"""Turn Vietnamese ward text into the words an announcer would say, before any TTS engine sees it.

TTS engines spell "UBND" letter by letter and read "30/9/2024" as a fraction; :func:`normalize`
rewrites such text into its spoken form. The output is one line in lower case (deterministic; the
engines do not need case). It keeps the punctuation that makes a pause (``. , ; : ! ?``; a line
break becomes ``". "`` unless the line already ends in one), and leaves everything it does not
recognise as it was: it never drops a word. Normalising already-normalised text changes nothing.

Rules, in the order they are applied:

1. Clean-up: NFC; the document terminator ``./.`` becomes ``.``; Markdown ``*`` and list bullets at
   the start of a line go; a Roman heading number at the start of a line is read (``II.`` → "hai.").
   ``v.v.``/``v.v...`` → "vân vân" (a pause is kept only before a new sentence); ``Q.``/``P.`` before a
   number or a capitalised name are "quận"/"phường" (``Q.1`` → "quận một", ``P.Tân Định``).
2. Document numbers: ``41/KH-UBND`` → "bốn mươi mốt kế hoạch ủy ban nhân dân". The number is read as a
   value, the slash is dropped and the code is expanded segment by segment; the first segment is the
   document type (``CT`` is "chỉ thị" there, "chủ tịch" elsewhere). A year inside reads "năm":
   ``100/2019/NĐ-CP`` → "một trăm năm hai nghìn không trăm mười chín nghị định chính phủ".
3. Lexicon (:mod:`radio.speech.lexicon`): the longest written form wins; all-caps forms match
   case-sensitively, so "tu bổ" is never "tỉnh ủy"; a hyphen joining an abbreviation to a word becomes
   a space (``HĐND-UBND`` → "hội đồng nhân dân ủy ban nhân dân", ``văn hóa-XH`` → "văn hóa xã hội").
   A two-letter abbreviation between all-caps words that are not abbreviations (``CÔNG TÁC TU BỔ``) is
   a heading word and stays. The stop of ``TP.``/``TM.``/``KT.`` before a name is no sentence end.
   The stop of ``KP.3`` before a number is no sentence end either.
   ``&`` → "và". Roman numerals after "quý", "khóa", "kỳ", "phần", "chương", "mục", "điều", "thế kỷ",
   "đại hội", "thứ", "hạng", "đợt", "lần", "giai đoạn", "cấp", "loại", "vùng", ... are read.
4. Telephone numbers are read digit by digit, one comma-separated group per written group
   (``0204.3854.123`` → "không hai không bốn, ba tám năm bốn, một hai ba"); an unbroken number is
   one group (no grouping is invented). Numbers of three or more digits right after "gọi", "đường dây
   nóng", "tổng đài", ... are read digit by digit, and so are 111–115 when they stand alone, come
   before "khi"/"để"/..., or share a clause with a call word ("gọi 114 khi có cháy, 113 khi ...");
   "có 115 hộ" and "Điều 113" are quantities.
5. Dates: ``25/02/2024`` → "ngày hai mươi lăm tháng hai năm hai nghìn không trăm hai mươi tư".
   "ngày" is added unless written just before (never doubled) or after "sáng/chiều/tối/đêm/hôm";
   days 1–10 take "mùng" ("ngày 2/9" → "ngày mùng hai tháng chín"); month 4 is "tư", month 1 "một".
   ``6/2024`` → "tháng sáu năm ...", ``quý 1/2024`` → "quý một năm ...". A bare ``d/m`` is a date
   after a date word ("ngày", "từ", "trước", "dịp", ...), with a leading zero, right after another
   date ("30/4 và 1/5"), or when it cannot be a small fraction (``27/7``, ``2/9``); it is a fraction
   before a noun such as "số hộ" and for halves to fifths (``2/3``), and "a trên b" after an address
   word ("nhà số 12/3"). An impossible date (``45/13``, ``31/2/2024``) is read as numbers + "trên".
6. Times: ``17h30``, ``17:30``, ``17h30p`` → "mười bảy giờ ba mươi phút"; ``19h00`` → "mười chín giờ".
   The Southern ``17g30`` and the spaced ``17 h 30`` read "mười bảy giờ ba mươi" (no "phút"). A bare
   ``9g`` is an hour only after "lúc/từ/đến/vào/...", before "sáng/chiều/tối/...", or in a range of
   times (``8g-11g``); otherwise it is grams ("5g muối").
7. "thứ 1" → "thứ nhất", "thứ 4" → "thứ tư", otherwise the number; "tháng 4" → "tháng tư";
   "ngày 5 tháng 3" → "ngày mùng năm tháng ba".
8. Units directly after a number (``5km``, ``5 km``, ``35°C``, ``37oC``, ``99%``, ``2 ha``,
   ``500.000đ``, ``60 km/h``, ``500k`` "nghìn", ``5tr`` "triệu"); a unit never touches an ordinary word.
   ``1m65`` → "một mét sáu mươi lăm"; ``Km 15 + 200`` → "ki lô mét mười lăm cộng hai trăm".
9. Fractions: a proper fraction reads "phần" (``2/3`` → "hai phần ba", ``3/4`` → "ba phần tư"),
   anything else "trên" (``24/7`` → "hai mươi tư trên bảy").
10. Plain numbers. ``.`` groups thousands and ``,`` is the decimal mark (``1.500.000`` → "một triệu
    năm trăm nghìn", ``2,5`` → "hai phẩy năm"); so does a space between groups of three digits
    (``1 000 000`` → "một triệu"; never a number starting with 0, which is a telephone number).
    A dot followed by anything but exactly three digits is no thousands separator: before a unit,
    ``%`` or "triệu/tỷ/nghìn/lần" it is an English decimal point (``2.5%`` → "hai phẩy năm phần trăm",
    ``2.5 triệu``), elsewhere a section or room number (``1.2`` → "một chấm hai", ``2.05`` → "hai chấm
    không năm": digits after the point keep their leading zeros).
    Standard Northern reading: "linh" (101 → "một trăm linh một"), "nghìn", "mốt" (21), "lăm" (15,
    25), "tư" for a final 4 after "mươi" (24 → "hai mươi tư") but "mười bốn" (14).
    **Leading zeros:** a short leading-zero number before a word, after a label ("số", "tổ", ...)
    or in a range is read as its value, as announcers do ("04 sao" → "bốn sao", "tổ 04" → "tổ
    bốn", "tháng 02" → "tháng hai"); on its own it is read digit by digit ("04" → "không bốn").
    A leading-zero number of five or more digits, or any plain number of ten or more digits, is an
    identifier and is read digit by digit.
11. A dash between two numbers, times or dates, or before "thứ/ngày/tháng", reads "đến" ("7h-11h" →
    "bảy giờ đến mười một giờ", "2-3 ngày" → "hai đến ba ngày"); a minus glued to a number reads "âm";
    every ``/x`` after an amount reads "một x" with units in full ("đồng/tháng" → "đồng một tháng",
    ``15.000đ/kg`` → "... đồng một ki lô gam", ``1,2 triệu/người/tháng`` → "... triệu một người một
    tháng"); "triệu đ" → "triệu đồng".

Readings are bracketed by control characters while the passes run, so no pass re-reads another's
output; steps 4–11 run only on clauses that contain a digit, which keeps a 1,000-word bulletin at a
few milliseconds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from radio.speech.lexicon import Lexicon, default_lexicon, is_case_sensitive

__all__ = ["normalize", "read_digits", "read_number"]

# --------------------------------------------------------------------------------------------------
# Reading numbers
# --------------------------------------------------------------------------------------------------

_DIGITS = ("không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín")
# Final digit after "mươi" (tens ≥ 2): 21 "mốt", 24 "tư", 25 "lăm".
_UNIT_AFTER_MUOI = {1: "mốt", 4: "tư", 5: "lăm"}


def _below_thousand(n: int, full: bool) -> list[str]:
    """Words for 0 < n < 1000; ``full`` reads the hundreds even when zero ("không trăm linh năm")."""
    hundreds, rest = divmod(n, 100)
    tens, units = divmod(rest, 10)
    words: list[str] = []
    if full or hundreds:
        words += [_DIGITS[hundreds], "trăm"]
    if tens == 0:
        if units:
            words += ["linh", _DIGITS[units]] if words else [_DIGITS[units]]
    elif tens == 1:
        words.append("mười")
        if units:
            words.append("lăm" if units == 5 else _DIGITS[units])
    else:
        words += [_DIGITS[tens], "mươi"]
        if units:
            words.append(_UNIT_AFTER_MUOI.get(units, _DIGITS[units]))
    return words


def _number_words(n: int, full: bool) -> list[str]:
    """Words for n > 0; groups of three digits, an all-zero group is skipped."""
    if n >= 1_000_000_000:
        high, low = divmod(n, 1_000_000_000)
        words = _number_words(high, full) + ["tỷ"]
        return words + _number_words(low, True) if low else words
    words = []
    for scale, name in ((1_000_000, "triệu"), (1_000, "nghìn"), (1, "")):
        group = (n // scale) % 1000
        if group:
            words += _below_thousand(group, full)
            if name:
                words.append(name)
            full = True  # every later group says its hundreds: 1005 → "một nghìn không trăm linh năm"
    return words


def read_number(n: int) -> str:
    """Vietnamese words for an integer: 2024 → "hai nghìn không trăm hai mươi tư"."""
    if n < 0:
        return "âm " + read_number(-n)
    return "không" if n == 0 else " ".join(_number_words(n, False))


def read_digits(digits: str) -> str:
    """Digit by digit: "113" → "một một ba" (non-digits are ignored)."""
    return " ".join(_DIGITS[int(c)] for c in digits if c.isdigit())


def _read_ordinal(n: int) -> str:
    """After "thứ": 1 → "nhất", 4 → "tư", otherwise the number."""
    return {1: "nhất", 4: "tư"}.get(n, read_number(n))


def _read_month(n: int) -> str:
    """Month names: "tư" for April, otherwise the number ("một" for January)."""
    return "tư" if n == 4 else read_number(n)


def _read_fraction_part(digits: str) -> str:
    """Digits after the decimal comma: as a number ("phẩy hai mươi lăm") unless a leading zero or long."""
    if digits.startswith("0") or len(digits) > 3:
        return read_digits(digits)
    return read_number(int(digits))


def _read_value(token: str) -> str:
    """A written number: "1.500.000", "1 500 000", "2,5", "04", "1,500,000" (English grouping),
    "0912345678", and "2.5" (an English decimal point, only passed in before a unit or "triệu")."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3}){2,}", token):
        return read_number(int(token.replace(",", "")))
    if _DOT_DECIMAL_RE.fullmatch(token):
        whole, _, frac = token.partition(".")
        return f"{read_number(int(whole))} phẩy {_read_fraction_part(frac)}"
    int_part, _, frac = token.partition(",")
    digits = int_part.replace(".", "").replace(" ", "")
    is_identifier = "." not in int_part and " " not in int_part and (
        len(digits) >= 10 or (digits[0] == "0" and len(digits) >= 5))
    if is_identifier and not frac:
        return read_digits(digits)
    words = read_number(int(digits))
    return f"{words} phẩy {_read_fraction_part(frac)}" if frac else words


# --------------------------------------------------------------------------------------------------
# Markers: every reading is wrapped so a later pass never re-reads it, a dash between two readings
# can become "đến", and the wrapper becomes a space only where it touches a word.
# --------------------------------------------------------------------------------------------------

_OPEN, _CLOSE = "\x01", "\x02"  # rangeable readings (numbers, dates, times)
_OPEN_FIXED, _CLOSE_FIXED = "\x03", "\x04"  # phone numbers: a dash between two is not a range
_MARKERS_RE = re.compile("[\x01-\x04]")
_CONTROL_RE = re.compile("[\x01-\x05]")  # our private markers, never legitimate in input


def _wrap(words: str) -> str:
    return f"{_OPEN}{words}{_CLOSE}"


def _wrap_fixed(words: str) -> str:
    return f"{_OPEN_FIXED}{words}{_CLOSE_FIXED}"


_WORD_BEFORE_RE = re.compile(r"(\w+)[^\w\n]*$")


def _previous_word(m: re.Match[str], window: int = 40) -> str:
    """The word before the match on the same line, lower case ("" if none)."""
    before = m.string[max(0, m.start() - window):m.start()].rsplit("\n", 1)[-1]
    found = _WORD_BEFORE_RE.search(_MARKERS_RE.sub(" ", before))
    return found.group(1).lower() if found else ""


# --------------------------------------------------------------------------------------------------
# Pass 1: clean-up
# --------------------------------------------------------------------------------------------------

_TERMINATOR_RE = re.compile(r"\.(?:/\.)+")  # "./." closes an administrative document
_BULLET_RE = re.compile(r"(?m)^[ \t]*(?:[-–•+][ \t]+)+")
_ROMAN_SMALL = r"(?=[IVX])X{0,3}(?:IX|IV|V?I{0,3})"
_ROMAN = r"(?=[IVXL])(?:XL|L?X{0,3})(?:IX|IV|V?I{0,3})"
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50}
_HEADING_ROMAN_RE = re.compile(rf"(?m)^([ \t]*)({_ROMAN_SMALL})(?=[.)][ \t])")


def _roman_value(roman: str) -> int:
    total = 0
    for i, c in enumerate(roman):
        value = _ROMAN_VALUES[c]
        nxt = _ROMAN_VALUES[roman[i + 1]] if i + 1 < len(roman) else 0
        total += -value if value < nxt else value
    return total


# "v.v." / "v.v..." (et cetera): its stops belong to the abbreviation; a pause is kept only where a
# new sentence follows.
_VV_RE = re.compile(r"(?<![\w.])[vV]\.[ \t]?v\.?(?:\.\.|…)?(?![\w])(?P<next>[ \t]*(?:\n|(?=[A-ZĐÀ-Ỹ])))?")
# "Q.1", "Q. Bình Thạnh", "P.5", "P.Tân Định": district (quận) and ward (phường) before a number or a
# capitalised name.
_DISTRICT_WARD_RE = re.compile(r"(?<![\w.])(?P<k>[QPqp])\.[ \t]?(?=\d|(?P<cap>[^\W\d_]))")
_DISTRICT_WARD = {"q": "quận", "p": "phường"}


def _district_ward(m: re.Match[str]) -> str:
    letter = m.group("k")
    if m.group("cap") is not None:
        if not m.group("cap").isupper():
            return m.group(0)  # "p. sau": no name follows
        words = m.string[max(0, m.start() - 40):m.start()].split()[-2:]
        if len(words) == 2 and all(w.isalpha() and w.istitle() and len(w) > 1 for w in words):
            return m.group(0)  # "Nguyễn Văn P. Sau đó": an initial in a person's name
    return _DISTRICT_WARD[letter.lower()] + " "


def _clean_up(text: str) -> str:
    text = _CONTROL_RE.sub("", unicodedata.normalize("NFC", text))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u00a0", " ").replace("\u202f", " ").replace("\u2009", " ")
    text = _TERMINATOR_RE.sub(".", text).replace("*", "")
    text = _BULLET_RE.sub("", text)
    if "v." in text or "V." in text:
        text = _VV_RE.sub(lambda m: "vân vân" + (". " if m.group("next") else ""), text)
    if "." in text:
        text = _DISTRICT_WARD_RE.sub(_district_ward, text)
    return _HEADING_ROMAN_RE.sub(lambda m: m.group(1) + _wrap(read_number(_roman_value(m.group(2)))), text)


# --------------------------------------------------------------------------------------------------
# Pass 2: document numbers ("41/KH-UBND", "44-KH/TU", "100/2019/NĐ-CP")
# --------------------------------------------------------------------------------------------------

# Document types: how the first code segment reads.
_DOC_TYPES = {
    "KH": "kế hoạch", "QĐ": "quyết định", "CT": "chỉ thị", "NQ": "nghị quyết", "NĐ": "nghị định",
    "TT": "thông tư", "TTLT": "thông tư liên tịch", "TB": "thông báo", "BC": "báo cáo", "CV": "công văn",
    "TTr": "tờ trình", "HD": "hướng dẫn", "KL": "kết luận", "GM": "giấy mời", "QC": "quy chế",
    "QyĐ": "quy định", "CTr": "chương trình", "ĐA": "đề án", "PA": "phương án", "BB": "biên bản",
    "HĐ": "hợp đồng", "GCN": "giấy chứng nhận", "L": "luật", "VBHN": "văn bản hợp nhất",
}
# Issuers: how later segments read, before the lexicon (BTC is "bộ tài chính" here).
_ISSUERS = {
    "BTC": "bộ tài chính", "BNV": "bộ nội vụ", "BYT": "bộ y tế", "BCA": "bộ công an",
    "BGDĐT": "bộ giáo dục và đào tạo", "BTTTT": "bộ thông tin và truyền thông",
    "BLĐTBXH": "bộ lao động thương binh và xã hội", "BTNMT": "bộ tài nguyên và môi trường",
    "BXD": "bộ xây dựng", "BNNPTNT": "bộ nông nghiệp và phát triển nông thôn", "BQP": "bộ quốc phòng",
    "BVHTTDL": "bộ văn hóa thể thao và du lịch", "BTP": "bộ tư pháp", "BKHĐT": "bộ kế hoạch và đầu tư",
    "BCT": "bộ công thương", "UBTVQH": "ủy ban thường vụ quốc hội",
}
_DOC_RE = re.compile(
    r"(?<![\w/.,])(?P<num>\d+)(?:/(?P<year>\d{4}))?(?:[ \t]?/[ \t]?|-[ \t]?)"
    r"(?P<code>[A-ZĐ]{2}[A-Za-zĐđ0-9&]*(?:[-/][A-ZĐ][A-Za-zĐđ0-9&]*)*)(?![\w])"
)
_CODE_SEGMENT_RE = re.compile(r"([^\d]+)(\d*)")


def _doc_segment(segment: str, first: bool, lexicon: _LexiconMatcher) -> str:
    """One code segment: document type first, then issuers and the lexicon; unknown stays."""
    parts = _CODE_SEGMENT_RE.fullmatch(segment)
    letters, digits = (parts.group(1), parts.group(2)) if parts else (segment, "")
    lookups: tuple[Callable[[str], str | None], ...] = (
        (_DOC_TYPES.get, lexicon.lookup, _ISSUERS.get)
        if first
        else (_ISSUERS.get, lexicon.lookup, _DOC_TYPES.get)
    )
    words = next((found for lookup in lookups if (found := lookup(letters))), letters)
    if letters == "QH" and digits:
        words = "quốc hội khóa"  # "QH15": the 15th National Assembly
    return f"{words} {read_number(int(digits))}" if digits else words


def _doc_numbers(text: str, lexicon: _LexiconMatcher) -> str:
    def replace(m: re.Match[str]) -> str:
        words = _read_value(m.group("num"))
        if m.group("year"):
            words += " năm " + read_number(int(m.group("year")))
        segments = re.split(r"[-/]", m.group("code"))
        words += " " + " ".join(_doc_segment(s, i == 0, lexicon) for i, s in enumerate(segments))
        return _wrap_fixed(words)

    return _DOC_RE.sub(replace, text)


# --------------------------------------------------------------------------------------------------
# Pass 3: lexicon
# --------------------------------------------------------------------------------------------------

# Abbreviations whose full stop is part of the abbreviation when a name follows ("TP. Bắc Giang").
_DOTTED_ABBREVIATIONS = frozenset({"TP", "TX", "TM", "KT", "KP", "TDP", "KDC"})
_ALL_CAPS_WORD_RE = re.compile(r"[^\W\d_]{2,}")
_WORD_PUNCTUATION = ".,;:!?…\"'“”‘’()[]*-"
_EXPANSION = "\x05"  # brackets a lexicon expansion until its hyphens are resolved
_EXPANSION_HYPHEN_RE = re.compile("-\x05|\x05-")
_KEY_TAIL = r"(?![\w])(?P<dot>\.(?=[ \t]?[^\W\d_]|\d))?"  # "TP. Huế", "KP.3"


def _alternation(keys: list[str], flags: int) -> re.Pattern[str] | None:
    """Longest key first. No leading assertion, so the engine can skip ahead on the first letter."""
    if not keys:
        return None
    ordered = sorted(keys, key=lambda w: (-len(w), w))
    return re.compile(rf"(?P<key>{'|'.join(re.escape(k) for k in ordered)}){_KEY_TAIL}", flags)


class _LexiconMatcher:
    """Compiled matchers for one lexicon version: case-insensitive keys first, then all-caps keys."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.exact = entries
        self.folded = {w.casefold(): s for w, s in entries.items() if not is_case_sensitive(w)}
        self._sensitive = _alternation([w for w in entries if is_case_sensitive(w)], 0)
        self._insensitive = _alternation([w for w in entries if not is_case_sensitive(w)], re.IGNORECASE)

    def lookup(self, written: str) -> str | None:
        return self.exact.get(written) or self.folded.get(written.casefold())

    def _in_heading(self, m: re.Match[str]) -> bool:
        """A short all-caps key whose neighbours are all-caps words that are not abbreviations."""
        before = m.string[max(0, m.start() - 40):m.start()].rstrip(" \t").rsplit(None, 1)
        after = m.string[m.end():m.end() + 40].lstrip(" \t").split(None, 1)
        neighbours = [w.strip(_WORD_PUNCTUATION) for w in (before[-1:] + after[:1])]
        neighbours = [w for w in neighbours if w]
        return bool(neighbours) and all(
            _ALL_CAPS_WORD_RE.fullmatch(w) is not None and w.isupper() and w not in self.exact
            for w in neighbours
        )

    def _replace(self, m: re.Match[str]) -> str:
        key = m.group("key")
        if m.start() > 0 and (m.string[m.start() - 1].isalnum() or m.string[m.start() - 1] == "_"):
            return m.group(0)  # inside a longer word
        if m.re is self._insensitive and self._sensitive is not None:
            longer = self._sensitive.match(m.string, m.start())
            if longer is not None and longer.end("key") > m.end("key"):
                return m.group(0)  # "TP.HCM" beats "Tp": leave it to the all-caps pass
        if m.re is self._sensitive and len(key) <= 2 and not m.group("dot") and self._in_heading(m):
            return m.group(0)
        dot = m.group("dot") or ""
        if dot and key.upper() in _DOTTED_ABBREVIATIONS:
            dot = " "  # "TP. Bắc Giang": the stop belongs to the abbreviation, not a sentence end
        return f"{_EXPANSION}{self.lookup(key) or key}{_EXPANSION}{dot}"

    def expand(self, text: str) -> str:
        for pattern in (self._insensitive, self._sensitive):
            if pattern is not None:
                text = pattern.sub(self._replace, text)
        if _EXPANSION not in text:
            return text
        return _EXPANSION_HYPHEN_RE.sub(_resolve_hyphen, text).replace(_EXPANSION, "")


def _resolve_hyphen(m: re.Match[str]) -> str:
    """A hyphen joining an expansion to a word is spoken as a pause-less space ("HĐND-UBND")."""
    text = m.string
    if m.group(0)[0] == "-":
        joined = m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] == _EXPANSION)
    else:
        joined = m.end() < len(text) and (text[m.end()].isalnum() or text[m.end()] == _EXPANSION)
    return f" {_EXPANSION}" if joined else m.group(0)


_MATCHERS: dict[str, _LexiconMatcher] = {}


def _matcher_for(lexicon: Lexicon) -> _LexiconMatcher:
    """Compile once per lexicon content (keyed by its version hash)."""
    version = lexicon.version
    matcher = _MATCHERS.get(version)
    if matcher is None:
        if len(_MATCHERS) > 16:
            _MATCHERS.clear()
        matcher = _MATCHERS[version] = _LexiconMatcher(lexicon.entries)
    return matcher


_AMPERSAND_RE = re.compile(r"[ \t]*&[ \t]*")

# --------------------------------------------------------------------------------------------------
# Pass 4: telephone numbers
# --------------------------------------------------------------------------------------------------

_PHONE_RE = re.compile(  # never the tail of a space-grouped number ("1 000 000 000")
    r"(?<![\w.,+])(?<!\d[ ])(?P<cc>\+84[ .-]?)?(?P<body>(?(cc)|0)\d{1,3}(?:[ .-]?\d{2,4}){1,4})(?![\w]|[.,]\d)"
)
_AREA_CODE_PHONE_RE = re.compile(r"\((?P<area>0\d{2,3})\)[ .-]?(?P<rest>\d{3,4}[ .-]?\d{3,4})(?![\w]|[.,]\d)")
_SERVICE_RE = re.compile(r"(?<![\w.,])(?P<body>1[89]00[ .-]?\d{3,6})(?![\w]|[.,]\d)")
_GROUP_SPLIT_RE = re.compile(r"[ .-]")
_PHONE_CUES = (
    r"gọi(?:[ \t]+điện)?|điện[ \t]+thoại|đường[ \t]+dây[ \t]+nóng|tổng[ \t]+đài|hotline|liên[ \t]+hệ"
    r"|sđt|số[ \t]+máy|khẩn[ \t]+cấp|báo[ \t]+cháy|cấp[ \t]+cứu|zalo"
)
_CUE_NUMBER = r"\d{3,12}(?!\d|[.,]\d|[ \t]*%)"
_CUED_RE = re.compile(
    rf"(?i:\b(?:{_PHONE_CUES}))(?:[ \t]*:)?(?:[ \t]+(?i:ngay|số|qua|tới|đến|theo|cho))*[ \t]*:?[ \t]*"
    rf"(?P<nums>{_CUE_NUMBER}(?:[ \t]*(?:,|/|-|(?i:hoặc|và))[ \t]*{_CUE_NUMBER})*)"
)
_EMERGENCY_RE = re.compile(r"(?<![\w.,/])11[1-5](?![\w]|[.,/]\d|[ \t]*%|[ ]\d{3}(?!\d))")
_NOT_EMERGENCY_BEFORE = frozenset({
    "điều", "khoản", "năm", "tổ", "nhà", "phòng", "có", "đạt", "gồm", "là", "được", "với", "khoảng",
})
# An emergency number followed by one of these is still the emergency number ("gọi 114 khi có cháy").
_EMERGENCY_NEXT = frozenset({"khi", "để", "hoặc", "và", "nếu", "ngay", "miễn", "trong"})
_EMERGENCY_CONTEXT_RE = re.compile(
    rf"\b(?:{_PHONE_CUES}|cứu[ \t]+hỏa|cứu[ \t]+nạn|công[ \t]+an|cảnh[ \t]+sát)\b", re.IGNORECASE
)


def _read_phone_groups(body: str) -> str:
    return ", ".join(read_digits(g) for g in _GROUP_SPLIT_RE.split(body) if g)


def _phones(text: str) -> str:
    def national(m: re.Match[str]) -> str:
        body = m.group("body")
        digit_count = sum(c.isdigit() for c in body)
        if not (9 <= digit_count <= 11 if not m.group("cc") else 8 <= digit_count <= 10):
            return m.group(0)
        prefix = "cộng tám bốn, " if m.group("cc") else ""
        return _wrap_fixed(prefix + _read_phone_groups(body))

    def cued(m: re.Match[str]) -> str:
        nums = re.sub(r"\d+", lambda d: _wrap_fixed(read_digits(d.group(0))), m.group("nums"))
        return m.string[m.start():m.start("nums")] + nums

    def emergency(m: re.Match[str]) -> str:
        """111–115 alone, before "khi"/"để"/..., or anywhere in a clause about calling, are hotlines."""
        if _previous_word(m) in _NOT_EMERGENCY_BEFORE:
            return m.group(0)
        following = _NEXT_WORD_RE.match(m.string, m.end())
        is_hotline = (
            following is None
            or following.group(1).lower() in _EMERGENCY_NEXT
            or _EMERGENCY_CONTEXT_RE.search(m.string, 0, m.start()) is not None
        )
        return _wrap_fixed(read_digits(m.group(0))) if is_hotline else m.group(0)

    text = _AREA_CODE_PHONE_RE.sub(
        lambda m: "(" + _wrap_fixed(_read_phone_groups(m.group("area"))) + ") "
        + _wrap_fixed(_read_phone_groups(m.group("rest"))), text)
    text = _PHONE_RE.sub(national, text)
    text = _SERVICE_RE.sub(lambda m: _wrap_fixed(_read_phone_groups(m.group("body"))), text)
    text = _CUED_RE.sub(cued, text)
    return _EMERGENCY_RE.sub(emergency, text)


# --------------------------------------------------------------------------------------------------
# Pass 5: dates
# --------------------------------------------------------------------------------------------------

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Patterns start at the digits (fast scanning); a "ngày"/"mùng" written before is looked up separately.
_DAY_RANGE = r"(?<![\w/.,])(?P<d>\d{1,2})(?:[ \t]*[-–][ \t]*(?P<d2>\d{1,2}))?"
_FULL_DATE_RE = re.compile(rf"{_DAY_RANGE}(?P<sep>[/.-])(?P<m>\d{{1,2}})(?P=sep)(?P<y>\d{{4}})(?!\d|[/.,]\d)")
_DAY_MONTH_RE = re.compile(rf"{_DAY_RANGE}/(?P<m>\d{{1,2}})(?!\d|[/.,]\d|[hH]\b)")
_MONTH_YEAR_RE = re.compile(r"(?<![\w/.,])(?P<m>\d{1,2})/(?P<y>\d{4})(?!\d|[/.,]\d)")
_DATE_PREFIX_RE = re.compile(r"(?:\b(?P<ngay>ngày)[ \t]+)?(?:\b(?P<mung>mùng|mồng)[ \t]+)?$", re.IGNORECASE)
_MONTH_PREFIX_RE = re.compile(r"\b(?P<word>tháng|quý)[ \t]+$", re.IGNORECASE)
# Words after which a bare day/month ("trước 30/9") is a date rather than a fraction.
_DATE_CUES = frozenset({
    "ngày", "mùng", "mồng", "từ", "đến", "tới", "trước", "sau", "hôm", "dịp", "lễ", "tết", "khánh",
    "hạn", "hết", "vào", "sáng", "chiều", "tối", "đêm", "trưa", "nay", "qua", "mai",
})


# After these a date needs no "ngày": "đêm 6/9" → "đêm mùng sáu tháng chín".
_NO_NGAY_AFTER = frozenset({"sáng", "trưa", "chiều", "tối", "đêm", "hôm"})
# Words before "a/b" that make it an address or a ratio rather than a date ("nhà số 12/3", "đạt 9/10").
_ADDRESS_WORDS = frozenset({"số", "nhà", "ngõ", "ngách", "hẻm", "kiệt", "lô", "phòng", "đường", "khu"})
_NOT_DATE_BEFORE = _ADDRESS_WORDS | {"tổ", "đạt", "được", "chiếm", "lệ", "khoảng", "gần", "hơn", "trên"}
# Words after "a/b" that make it a fraction ("2/3 số hộ", "9/10 chỉ tiêu").
_FRACTION_NOUNS = frozenset({
    "số", "tổng", "diện", "dân", "chỉ", "tiêu", "hộ", "xã", "phường", "thôn", "tổ", "đơn", "người",
    "phiếu", "thành", "lượng", "khối", "trường", "cơ", "kế", "nhiệm", "công", "ý",
})
# Right after a date: "ngày 30/4 và 1/5", "30/4 - 1/5".
_AFTER_DATE_RE = re.compile(r"tháng [^\x01\x02]*\x02[ \t]*(?:,|và|hoặc|đến|tới|[-–])?[ \t]*$")
_NEXT_WORD_RE = re.compile(r"[ \t]+(\w+)")
_HOLIDAY_CONTEXT_RE = re.compile(r"\b(?:kỷ niệm|lễ|quốc tế|chào mừng|nghỉ|ngày)\b", re.IGNORECASE)


def _is_day_month(m: re.Match[str]) -> bool:
    """Whether a bare "d/m" is a date: after a date word, with a leading zero, next to another date,
    or otherwise unless it reads as a fraction (a proper fraction of small parts, or before a noun
    like "số hộ") or an address ("nhà số 12/3")."""
    day, month = m.group("d"), m.group("m")
    previous = _previous_word(m)
    if previous in _DATE_CUES or day[0] == "0" or month[0] == "0" or m.group("d2"):
        return True
    if _AFTER_DATE_RE.search(m.string, max(0, m.start() - 80), m.start()):
        return True
    if previous in _NOT_DATE_BEFORE or (day, month) == ("24", "7"):  # "phục vụ 24/7"
        return False
    following = _NEXT_WORD_RE.match(m.string, m.end())
    if following and following.group(1).lower() in _FRACTION_NOUNS:
        return False
    if _HOLIDAY_CONTEXT_RE.search(m.string, max(0, m.start() - 60), m.start()):
        return True  # "Quốc tế Lao động 1/5"
    return int(day) >= int(month) or int(month) > 5


def _valid_date(day: int, month: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]


def _day_words(day: int) -> str:
    return ("mùng " if day <= 10 else "") + read_number(day)


def _date_words(m: re.Match[str], year: int | None) -> str | None:
    """The spoken date for a day(-range)/month(/year) match, or None if it is not a valid date.

    "ngày" is added unless the writer put it (or "mùng") just before; "mùng" likewise.
    """
    day, month = int(m.group("d")), int(m.group("m"))
    day2 = int(m.group("d2")) if m.group("d2") else None
    if not _valid_date(day, month) or (day2 is not None and not (_valid_date(day2, month) and day2 > day)):
        return None
    prefix = _DATE_PREFIX_RE.search(m.string, max(0, m.start() - 16), m.start())
    has_ngay = bool(prefix and prefix.group("ngay"))
    has_mung = bool(prefix and prefix.group("mung"))
    words = read_number(day) if has_mung else _day_words(day)
    if not (has_ngay or has_mung or _previous_word(m) in _NO_NGAY_AFTER):
        words = "ngày " + words
    if day2 is not None:
        words += f" đến {_day_words(day2)}"
    words += f" tháng {_read_month(month)}"
    if year is not None:
        words += f" năm {read_number(year)}"
    return words


def _dates(text: str) -> str:
    def full(m: re.Match[str]) -> str:
        words = _date_words(m, int(m.group("y")))
        return _wrap(words) if words else m.group(0)

    def month_year(m: re.Match[str]) -> str:
        number, year = int(m.group("m")), int(m.group("y"))
        prefix = _MONTH_PREFIX_RE.search(m.string, max(0, m.start() - 8), m.start())
        word = prefix.group("word").lower() if prefix else ""
        if word == "quý":
            return _wrap(f"{read_number(number)} năm {read_number(year)}") if 1 <= number <= 4 else m.group(0)
        if 1 <= number <= 12:
            words = f"{_read_month(number)} năm {read_number(year)}"
            return _wrap(words if word else f"tháng {words}")
        return m.group(0)

    if "/" not in text and "." not in text and "-" not in text:
        return text
    text = _FULL_DATE_RE.sub(full, text)
    if "/" not in text:
        return text
    text = _MONTH_YEAR_RE.sub(month_year, text)
    # A manual loop rather than sub(): whether "1/5" is a date depends on the date just rewritten
    # before it ("ngày 30/4 và 1/5").
    pos = 0
    while (m := _DAY_MONTH_RE.search(text, pos)) is not None:
        words = _date_words(m, None) if _is_day_month(m) else None
        if words is None:
            pos = m.end()
            continue
        reading = _wrap(words)
        text = text[:m.start()] + reading + text[m.end():]
        pos = m.start() + len(reading)
    return text


# --------------------------------------------------------------------------------------------------
# Pass 6: times
# --------------------------------------------------------------------------------------------------

_TIME_RE = re.compile(
    r"(?<![\w/.,:])(?P<h>\d{1,2})(?:(?P<sp>[ \t]?)(?P<sep>[hHg])(?:(?P<sp2>[ \t]?)(?P<min>\d{2})(?P<p>p)?)?"
    r"|:(?P<min2>\d{2}))(?![\w]|[:.,]\d)"
)
# A bare "9g" is nine o'clock (Southern style), not nine grams, after these words or before a part of
# the day or another time ("8g-11g").
_HOUR_G_BEFORE = frozenset({"lúc", "từ", "đến", "tới", "vào", "trước", "sau", "giờ", "hết", "đúng"})
_HOUR_G_AFTER_RE = re.compile(
    r"[ \t]*(?:(?i:sáng|trưa|chiều|tối|đêm|khuya|ngày|hôm|hằng|hàng|mỗi)\b|[-–][ \t]*\d{1,2}[ \t]?[gh](?!\w))"
)

# ... or right after another time in a range or a list ("8g-11g", "7g, 9g và 11g").
_HOUR_G_RANGE_BEFORE_RE = re.compile(r"\d[ \t]?[gh](?:\d{2}p?)?[ \t]*(?:[-–,]|và|hoặc|hay|đến|tới)[ \t]*$")


def _times(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        minutes_text = m.group("min") or m.group("min2")
        sep = m.group("sep")
        if sep == "g" and not minutes_text and not (
            _previous_word(m) in _HOUR_G_BEFORE
            or _HOUR_G_AFTER_RE.match(m.string, m.end())
            or _HOUR_G_RANGE_BEFORE_RE.search(m.string, max(0, m.start() - 20), m.start())
        ):
            return m.group(0)  # "5g" is five grams, not five o'clock
        hour, minutes = int(m.group("h")), int(minutes_text or 0)
        if hour > 24 or minutes > 59:
            return m.group(0)
        words = f"{read_number(hour)} giờ"
        if not minutes:
            return _wrap(words)
        # "17h30", "17:30", "17h30p" say "phút"; the Southern "17g30" and the spaced "17 h 30" do not.
        says_minutes = bool(m.group("p")) or (sep != "g" and not m.group("sp") and not m.group("sp2"))
        return _wrap(f"{words} {read_number(minutes)}" + (" phút" if says_minutes else ""))

    return _TIME_RE.sub(replace, text)


# --------------------------------------------------------------------------------------------------
# Pass 7: ordinals, month names, "ngày N tháng", Roman numerals after a cue word
# --------------------------------------------------------------------------------------------------

_AFTER_NUMBER = r"(?!\d|[/.,:]\d|[hH]\d|[hH]\b)"
_ORDINAL_RE = re.compile(rf"\b(?P<w>(?i:thứ))[ \t]+(?P<n>\d{{1,3}}){_AFTER_NUMBER}")
_MONTH_RE = re.compile(rf"\b(?P<w>(?i:tháng))[ \t]+(?P<n>\d{{1,2}}){_AFTER_NUMBER}")
_DAY_BEFORE_MONTH_RE = re.compile(r"\b(?P<w>(?i:ngày))[ \t]+(?P<n>\d{1,2})(?=[ \t]+(?i:tháng)\b)")
# Roman numerals after a cue word ("khóa XV", "quý IV/2024"); the pattern starts at the numeral
# so the engine can skip ahead, and the cue is checked in the callback.
_ROMAN_CANDIDATE_RE = re.compile(r"[IVXL]+(?:/(?P<y>\d{4}))?(?![\w])")
_ROMAN_FULL_RE = re.compile(_ROMAN)
_ROMAN_CUE_RE = re.compile(
    r"\b(?P<w>quý|khóa|khoá|kỳ|kì|phần|chương|mục|điều|tiết|thế[ \t]+kỷ|thế[ \t]+kỉ|đại[ \t]+hội|thứ"
    r"|hạng|đợt|lần|giai[ \t]+đoạn|cấp|loại|bậc|tập|vòng|khu[ \t]+vực|vùng)[ \t]+$",
    re.IGNORECASE,
)


def _ordinals(text: str) -> str:
    def ordinal(m: re.Match[str]) -> str:
        return f"{m.group('w')} {_wrap(_read_ordinal(int(m.group('n'))))}"

    def month(m: re.Match[str]) -> str:
        n = int(m.group("n"))
        return f"{m.group('w')} {_wrap(_read_month(n))}" if 1 <= n <= 12 else m.group(0)

    def day(m: re.Match[str]) -> str:
        n = int(m.group("n"))
        return f"{m.group('w')} {_wrap(_day_words(n))}" if 1 <= n <= 31 else m.group(0)

    text = _ORDINAL_RE.sub(ordinal, text)
    text = _MONTH_RE.sub(month, text)
    return _DAY_BEFORE_MONTH_RE.sub(day, text)


def _romans(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        roman = m.group(0).split("/")[0]
        start = m.start()
        if (start > 0 and m.string[start - 1].isalnum()) or not _ROMAN_FULL_RE.fullmatch(roman):
            return m.group(0)
        cue = _ROMAN_CUE_RE.search(m.string, max(0, start - 12), start)
        if cue is None:
            return m.group(0)
        value = _roman_value(roman)
        words = _read_ordinal(value) if cue.group("w").lower() == "thứ" else read_number(value)
        if m.group("y"):
            words += f" năm {read_number(int(m.group('y')))}"
        return _wrap(words)

    return _ROMAN_CANDIDATE_RE.sub(replace, text)


# --------------------------------------------------------------------------------------------------
# Passes 8–10: numbers with units, fractions, plain numbers; then ranges and rates
# --------------------------------------------------------------------------------------------------

# Thousands grouped by spaces ("1 000 000", "12 345"): one number, never starting with 0 (a phone).
_SPACED_VALUE = r"[1-9]\d{0,2}(?:[ ]\d{3})+(?:,\d+)?(?!\d|[.,]\d)"
# An English decimal point ("2.5", "99.5", "2.05"): a dot followed by anything but exactly 3 digits.
_DOT_DECIMAL = r"\d+\.(?!\d{3}(?!\d))\d+(?!\d|[.,]\d)"
_DOT_DECIMAL_RE = re.compile(_DOT_DECIMAL)
_VALUE = _SPACED_VALUE + "|" + r"\d{1,3}(?:,\d{3}){2,}(?!\d)|\d{1,3}(?:\.\d{3})+(?:,\d+)?(?!\d|\.\d)|\d+(?:,\d+)?(?!\d|\.\d)"
_UNITS = {
    "km/h": "ki lô mét trên giờ", "m/s": "mét trên giây", "km²": "ki lô mét vuông",
    "km2": "ki lô mét vuông", "m²": "mét vuông", "m2": "mét vuông", "m³": "mét khối", "m3": "mét khối",
    "km": "ki lô mét", "cm": "xen ti mét", "mm": "mi li mét", "m": "mét", "ha": "héc ta",
    "kg": "ki lô gam", "mg": "mi li gam", "g": "gam", "ml": "mi li lít", "l": "lít",
    "°C": "độ xê", "ºC": "độ xê", "oC": "độ xê", "độ C": "độ xê", "°": "độ", "%": "phần trăm",
    "‰": "phần nghìn", "kWh": "ki lô oát giờ", "kW": "ki lô oát", "MW": "mê ga oát",
    "đ": "đồng", "VNĐ": "đồng", "VND": "đồng", "USD": "đô la mỹ", "G": "gờ", "k": "nghìn", "K": "nghìn",
    "tr": "triệu",
}
_GLUED_ONLY_UNITS = frozenset({"G", "k", "K"})  # "5G", "500k"; "5 k" is no unit
_UNIT_ALTERNATION = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))
_UNIT_RE = re.compile(rf"(?<![\w.,])(?P<num>{_VALUE}|{_DOT_DECIMAL})(?P<space>[ \t]?)(?P<unit>{_UNIT_ALTERNATION})(?![\w])")
_FRACTION_RE = re.compile(
    r"(?<![\w/.,])(?P<a>\d+)/(?P<b>\d+)(?P<more>(?:/\d+)*)(?P<h>[hH](?![\w]))?(?!\d|[/.,]\d)"
)
_NUMBER_RE = re.compile(rf"(?<!\d)(?:{_VALUE}|\d+(?:\.\d+)+(?!\d))")
# "1m65": a height in metres and centimetres.
_HEIGHT_RE = re.compile(r"(?<![\w.,])(?P<a>\d)m(?P<b>\d{1,2})(?![\w]|[.,]\d)")
# "30 triệu đ": the currency after a spelled-out multiplier.
_MONEY_WORD_DONG_RE = re.compile(
    rf"(?<={_CLOSE})(?P<w>[ \t]+(?i:triệu|tỷ|tỉ|nghìn|ngàn|trăm))[ \t]*(?:đ|VNĐ|VND|vnđ)(?![\w])"
)
_CHAINAGE_RE = re.compile(r"(?<![\w])(?:Km|KM|km)[ \t]?(?P<a>\d+)(?:[ \t]*\+[ \t]*(?P<b>\d+))?(?![\w]|[.,]\d)")
# A minus sign glued to a number, after a space or bracket: "-5°C" → "âm năm độ xê".
_NEGATIVE_RE = re.compile(r"(?:(?<=[ \t(])|^)[-−](?=\x01)")
# A dash after a reading and before another reading or "thứ/ngày/tháng" ("thứ 2 - thứ 6") is "đến".
_RANGE_RE = re.compile(rf"{_CLOSE}[ \t]*[-–—][ \t]*(?={_OPEN}|(?i:thứ|ngày|tháng)\b)")
# "đồng/tháng", "15.000đ/kg", "1,2 triệu/người/tháng", "2 lần/tuần": every "/x" after a number (and up to
# two words) reads "một x", with units spoken in full.
_RATE_SEGMENTS = {
    "tháng": "tháng", "năm": "năm", "ngày": "ngày", "tuần": "tuần", "quý": "quý", "giờ": "giờ",
    "phút": "phút", "người": "người", "hộ": "hộ", "khẩu": "khẩu", "lượt": "lượt", "suất": "suất",
    "con": "con", "lần": "lần", "cái": "cái", "chiếc": "chiếc", "xe": "xe", "tấn": "tấn", "thùng": "thùng",
    "bao": "bao", "bộ": "bộ", "ca": "ca", "buổi": "buổi", "kỳ": "kỳ", "đợt": "đợt", "em": "em",
    "cháu": "cháu", "trẻ": "trẻ", "hồ sơ": "hồ sơ", "học sinh": "học sinh", "sào": "sào", "mẫu": "mẫu",
    "cây": "cây", "phòng": "phòng", "đêm": "đêm", "vé": "vé", "trang": "trang", "căn": "căn", "lô": "lô",
    "lớp": "lớp", "gói": "gói", "liều": "liều", "lít": "lít", "h": "giờ", "kWh": "ki lô oát giờ",
    **{u: _UNITS[u] for u in ("kg", "g", "ha", "km", "m", "m2", "m²", "m3", "m³", "l", "ml")},
}
_RATE_SEGMENT_ALTERNATION = "|".join(re.escape(u) for u in sorted(_RATE_SEGMENTS, key=len, reverse=True))
_RATE_RE = re.compile(
    rf"(?P<head>{_CLOSE}(?:[ \t]+[^\W\d_]+){{0,2}}|\bđồng)"
    rf"(?P<segs>(?:/(?:{_RATE_SEGMENT_ALTERNATION})(?![\w]))+)"
)


def _rates(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        segments = m.group("segs").split("/")[1:]
        return m.group("head") + "".join(f" một {_RATE_SEGMENTS[s]}" for s in segments)

    return _RATE_RE.sub(replace, text) if "/" in text else text


def _units(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group("unit") in _GLUED_ONLY_UNITS and m.group("space"):
            return m.group(0)  # only "5G", glued, is the network generation
        return _wrap(f"{_read_value(m.group('num'))} {_UNITS[m.group('unit')]}")

    text = _HEIGHT_RE.sub(lambda m: _wrap(f"{read_number(int(m.group('a')))} mét "
                                          f"{read_number(int(m.group('b')))}"), text)
    return _UNIT_RE.sub(replace, text)


def _chainage(text: str) -> str:
    """"Km 15 + 200" (a road chainage) → "ki lô mét mười lăm cộng hai trăm"."""
    def replace(m: re.Match[str]) -> str:
        words = f"ki lô mét {read_number(int(m.group('a')))}"
        if m.group("b"):
            words += f" cộng {read_number(int(m.group('b')))}"
        return _wrap(words)

    return _CHAINAGE_RE.sub(replace, text)


def _fractions(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        a, b = int(m.group("a")), int(m.group("b"))
        if m.group("more"):  # "31/2/2024" is no date: numbers joined by "trên"
            numbers = [a, b] + [int(n) for n in m.group("more").split("/")[1:]]
            words = " trên ".join(read_number(n) for n in numbers)
        elif 0 < a < b <= 100 and not m.group("h") and _previous_word(m) not in _ADDRESS_WORDS:
            words = f"{read_number(a)} phần {'tư' if b == 4 else read_number(b)}"
        else:
            words = f"{read_number(a)} trên {read_number(b)}"
        return _wrap(words + (" giờ" if m.group("h") else ""))

    return _FRACTION_RE.sub(replace, text)


# Labels after which a short leading-zero number is a value: "tổ 04" → "tổ bốn".
_NUMBER_LABELS = frozenset({
    "số", "tổ", "thôn", "xóm", "khu", "lớp", "phòng", "điều", "khoản", "mục", "lần", "đợt", "kỳ",
    "quý", "tuần", "cấp", "hạng", "loại", "phần", "chương", "ngày", "tháng", "năm", "tầng", "nhà",
})


_MULTIPLIER_AHEAD_RE = re.compile(r"[ \t]*(?i:triệu|tỷ|tỉ|nghìn|ngàn|lần)\b")
_RANGE_AHEAD_RE = re.compile(r"[ \t]*[-–][ \t]*\d")


def _leading_zero_is_value(m: re.Match[str]) -> bool:
    """"04 sao", "tổ 04": a value; "04" on its own: digit by digit ("không bốn")."""
    following = _NEXT_WORD_RE.match(m.string, m.end())
    if following is not None and not following.group(1).isdigit():
        return True
    return _RANGE_AHEAD_RE.match(m.string, m.end()) is not None or _previous_word(m) in _NUMBER_LABELS


def _plain_numbers(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        token = m.group(0)
        if len(token) > 1 and token[0] == "0" and token.isdigit() and not _leading_zero_is_value(m):
            return _wrap(read_digits(token))
        if re.fullmatch(_VALUE, token):
            return _wrap(_read_value(token))
        if _DOT_DECIMAL_RE.fullmatch(token) and _MULTIPLIER_AHEAD_RE.match(m.string, m.end()):
            return _wrap(_read_value(token))  # "2.5 triệu": an English decimal point
        first, *rest = token.split(".")
        return _wrap(" chấm ".join([read_number(int(first))] + [_read_fraction_part(part) for part in rest]))

    return _NUMBER_RE.sub(replace, text)


# --------------------------------------------------------------------------------------------------
# Final layout
# --------------------------------------------------------------------------------------------------

_MARKER_RUN_RE = re.compile("[\x01-\x04]+")
_PAUSE_MARKS = frozenset(".,;:!?…")


def _unmark(m: re.Match[str]) -> str:
    """A marker run becomes a space where a reading touches a word or another reading, else nothing."""
    run, text = m.group(0), m.string
    opens = "\x01" in run or "\x03" in run
    closes = "\x02" in run or "\x04" in run
    word_before = m.start() > 0 and text[m.start() - 1].isalnum()
    word_after = m.end() < len(text) and text[m.end()].isalnum()
    if (opens and closes) or (opens and word_before) or (closes and word_after):
        return " "  # "QH15" → "qh mười lăm"; two readings side by side stay apart
    return ""


def _layout(text: str) -> str:
    """Drop markers, turn line breaks into pauses, collapse spaces, lower-case."""
    text = _MARKER_RUN_RE.sub(_unmark, text)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    lines = [line for line in lines if line]
    out = []
    for i, line in enumerate(lines):
        if i < len(lines) - 1 and line[-1] not in _PAUSE_MARKS:
            line += "."  # a line break is a sentence pause
        out.append(line)
    return " ".join(out).lower()


# Numbers are read clause by clause (every rule's context lies within a clause), and clauses without a
# digit skip those passes: most of a bulletin is words.
_CLAUSE_SPLIT_RE = re.compile(r"(\n|[.;!?][ \t]+)")
_DIGIT_RE = re.compile(r"\d")
# A number right after a label ("tổ 5", "quận 8", "số 12", "mã 123") is read alone: the space-grouped
# thousands rule must not join it with the next number ("Tổ 5 100% hộ" is not 5,100 %).
_LABELLED_RE = re.compile(
    r"(?<![\w])(?P<label>(?:số|tổ|quận|phường|phố|khu|khu phố|ấp|thôn|xóm|bản|phòng|lô|thửa|tờ|mã|nhà|hẻm|ngõ|"
    r"ngách|kiệt|tầng|căn|đường|xã|huyện|kỳ|khóa|khoá|đợt|lần|tuyến|quầy|bàn|cổng|lớp|cụm|tiểu khu|hồ sơ))"
    r"(?P<space>[ ]+)(?P<n>[1-9]\d{0,3})(?= \d{3}(?!\d))", re.IGNORECASE)


def _labelled(clause: str) -> str:
    return _LABELLED_RE.sub(lambda m: f"{m['label']}{m['space']}{_wrap(read_number(int(m['n'])))}", clause)


_NUMBER_PASSES: tuple[Callable[[str], str], ...] = (
    _phones, _dates, _times, _ordinals, _labelled, _units, _chainage, _fractions, _plain_numbers,
    lambda t: _RANGE_RE.sub(f"{_CLOSE} đến ", t),
    lambda t: _NEGATIVE_RE.sub("âm ", t),
    lambda t: _MONEY_WORD_DONG_RE.sub(r"\g<w> đồng", t),  # "30 triệu đ"
    _rates,
)


def _read_numbers(clause: str) -> str:
    for step in _NUMBER_PASSES:
        clause = step(clause)
    return clause


def normalize(text: str, lexicon: Lexicon | None = None) -> str:
    """Return the spoken form of ``text`` (see the module docstring for the rules).

    ``lexicon`` defaults to :func:`radio.speech.lexicon.default_lexicon`.
    """
    matcher = _matcher_for(default_lexicon() if lexicon is None else lexicon)
    text = _clean_up(text)
    if _DIGIT_RE.search(text):
        text = _doc_numbers(text, matcher)
    text = matcher.expand(text)
    if "&" in text:
        text = _AMPERSAND_RE.sub(" và ", text)
    text = _romans(text)
    parts = _CLAUSE_SPLIT_RE.split(text)
    text = "".join(_read_numbers(p) if i % 2 == 0 and _DIGIT_RE.search(p) else p for i, p in enumerate(parts))
    return _layout(text)
