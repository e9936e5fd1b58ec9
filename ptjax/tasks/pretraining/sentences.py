"""A rule-based English sentence splitter (no model, no download).

    split_sentences('Mr. Smith paid $3.50, e.g. for tea. "Good!" he said. It rained.')
    -> ['Mr. Smith paid $3.50, e.g. for tea.', '"Good!" he said.', 'It rained.']

A boundary is terminal punctuation (. ! ? and runs of them, an ellipsis), then any closing quotes
or brackets, then whitespace, then the start of a new sentence: an uppercase letter, a digit, or
an opening quote or bracket before one. A blank line (paragraph break) is always a boundary.
A period does not end a sentence after:
  - a title or a Latin/label abbreviation ("Mr.", "Dr.", "e.g.", "i.e.", "vs.", "Fig."),
  - a single letter (an initial: "J. K. Rowling"),
  - a dotted acronym ("U.S.", "a.m."), which rarely ends a sentence in running text;
"etc.", "Inc.", "Ltd." and the like end a sentence only before a capitalized word, and "No."
never before a number ("No. 5"). Decimals ("3.14") and dotted names ("ptjax.tasks") have no
whitespace after the period, so they never split.
"""

from __future__ import annotations

import re

# Abbreviations after which a period never ends the sentence (lowercased, without the dot).
_NEVER_FINAL = frozenset("""
mr mrs ms mx dr prof sr jr st mt ft rev gen col capt lt sgt cpl gov pres sen rep hon messrs mme mlle
vs v cf e.g i.e viz al approx ca fig figs eq eqs ch sec vol vols pp pg art dept est
jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
# Abbreviations that may end a sentence: split only when a capitalized word follows.
_MAYBE_FINAL = frozenset("etc inc ltd co corp bros llc plc dept univ assn".split())
_BEFORE_NUMBER = frozenset("no nos nr vol p pp art".split())

_OPENERS = "\"'“‘([{«"
_CLOSERS = "\"'”’)]}»"
# Terminal punctuation, closing quotes/brackets, then whitespace: a candidate boundary.
_CANDIDATE = re.compile(r"(\.\.\.|…|[.!?]+)([" + re.escape(_CLOSERS) + r"]*)(\s+)")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_WORD_BEFORE = re.compile(r"(\S+)$")
_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]$")  # "U.S" / "a.m" (the final dot is the candidate)


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order; empty input gives []."""
    sentences: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for match in _CANDIDATE.finditer(paragraph):
            if _is_boundary(paragraph, match):
                sentence = paragraph[start:match.end(2)].strip()
                if sentence:
                    sentences.append(" ".join(sentence.split()))
                start = match.end()
        rest = paragraph[start:].strip()
        if rest:
            sentences.append(" ".join(rest.split()))
    return sentences


def _is_boundary(text: str, match: re.Match) -> bool:
    following = text[match.end():]
    if not following:
        return False  # the paragraph's last sentence is closed by the caller
    if not _starts_sentence(following):
        return False
    punctuation = match.group(1)
    if punctuation != ".":
        return True  # ! ? ?! and ellipses are not abbreviation dots
    word_match = _WORD_BEFORE.search(text, 0, match.start())
    if word_match is None:
        return True
    word = word_match.group(1).lstrip(_OPENERS)
    key = word.lower()
    if not word or key in _NEVER_FINAL:
        return False
    if len(word) == 1 and word.isalpha():
        return False  # an initial
    if _ACRONYM.fullmatch(word):
        return False
    next_char = following[0]
    if key in _BEFORE_NUMBER and next_char.isdigit():
        return False
    if key in _MAYBE_FINAL:
        return next_char.isupper() or next_char in _OPENERS
    return True


def _starts_sentence(following: str) -> bool:
    head = following.lstrip(_OPENERS)
    if not head:
        return False
    return head[0].isupper() or head[0].isdigit()
