"""Split a bulletin into paragraphs and sentences, so it is spoken with natural pauses.

Paragraphs are separated by blank lines. A sentence ends at ``. ! ? ; …`` followed by whitespace,
or at a line break; a full stop (only) does not end a sentence inside a number (``1.500.000``), after a
known abbreviation (``TP.``, ``ThS.``) or an initial, after a list marker (``1.``, ``II.``)
or when the next word starts in lower case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Lower-cased abbreviations whose full stop is not a sentence end (Vietnamese administrative text).
ABBREVIATIONS = frozenset({
    "tp", "tx", "tt", "q", "p", "h", "x", "tdp", "kp", "ths", "ts", "tskh", "pgs", "gs", "bs", "ks",
    "ls", "ncs", "cn", "đ/c", "đc", "ô", "b", "st", "mr", "mrs", "ms", "dr", "no", "vs", "tr",
    "sđt", "đt", "stk",
})
_PARAGRAPH_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# A candidate end: terminator run plus any closing quotes/brackets, then whitespace or the end.
_END_RE = re.compile(r"(?:\.{3}|…|[.!?;])+[\"”’')\]]*(?=\s|$)")
_ROMAN_RE = re.compile(r"[IVXLC]+")
_WORD_BEFORE_RE = re.compile(r"(\S+)$")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs of ``text``: separated by one or more blank lines, stripped, empties dropped."""
    return [p.strip() for p in _PARAGRAPH_RE.split(text.strip()) if p.strip()]


def _ends_sentence(line: str, start: int, end: int, first_of_line: bool) -> bool:
    """Whether the terminator at ``line[start:end]`` really closes a sentence."""
    mark = line[start:end]
    rest = line[end:].lstrip()
    if not rest:
        return True
    if any(c in mark for c in "!?;…") or mark.startswith("..."):
        return True  # unambiguous (a ";" clause gets its own pause too, whatever follows)
    match = _WORD_BEFORE_RE.search(line[:start])
    word = match.group(1) if match else ""
    bare = word.lstrip("(\"“'")
    if bare.lower() in ABBREVIATIONS or bare.lower().rstrip(".") in ABBREVIATIONS:
        return False
    if len(bare) == 1 and bare.isalpha() and bare.isupper():
        return False  # an initial: "Nguyễn V. A"
    if first_of_line and line[:start].strip() == word and (bare.isdigit() or _ROMAN_RE.fullmatch(bare)):
        return False  # a heading or list marker: "1. Mục đích", "II. MỤC TIÊU"
    return not rest[0].islower()


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph, in order, stripped; every line break also ends a sentence."""
    sentences: list[str] = []
    for line in paragraph.splitlines():
        line = " ".join(line.split())
        begin = 0
        for m in _END_RE.finditer(line):
            if _ends_sentence(line, m.start(), m.end(), first_of_line=begin == 0):
                piece = line[begin:m.end()].strip()
                if piece:
                    sentences.append(piece)
                begin = m.end()
        tail = line[begin:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def split_bulletin(text: str) -> list[list[str]]:
    """Paragraphs of sentences, the unit of synthesis (each sentence) and of pausing."""
    return [s for s in (split_sentences(p) for p in split_paragraphs(text)) if s]


def group_sentences(sentences: Iterable[str], max_chars: int) -> list[str]:
    """Greedily join consecutive sentences into pieces of at most ``max_chars`` (longer ones alone)."""
    groups: list[str] = []
    current = ""
    for sentence in sentences:
        candidate = f"{current} {sentence}" if current else sentence
        if current and len(candidate) > max_chars:
            groups.append(current)
            current = sentence
        else:
            current = candidate
    if current:
        groups.append(current)
    return groups
