"""Prompt templates: a small language mixing text, example fields, soft tokens and the answer slot.

Grammar (whitespace is significant; everything not listed is literal text):

    {name}            an example field (name: letters, digits, _), e.g. {sub}, {premise}
    {name|mod|mod}    a field with modifiers, applied left to right after stripping the value
                      of surrounding whitespace:
                        rstrip_punct  drop trailing punctuation . , ; : ! ? (and whitespace)
                        lower_first   lowercase the first character
                        upper_first   uppercase the first character
                        lower         lowercase everything
                        truncate      this field may be shortened (see Truncation)
    [P]  [P*3]        one / three soft tokens (trainable vectors); numbered 0, 1, 2, ... in order
                      of appearance across the whole template
    [MASK]            the answer slot (at most one)
    [SEP]             segment separator for pair inputs (at most one): the tokenizer's own pair
                      layout, e.g. [CLS] a [SEP] b [SEP] with token_type_ids 0/1 for BERT,
                      <s> a </s></s> b </s> for RoBERTa, a </s> b </s> for T5
    {{  }}  [[        literal '{', '}', '['   (a lone ']' is literal too)

Anchor words (P-tuning's "?" in "{premise} [P*3] {hypothesis} ? [P*3] [MASK]") are plain text:
they stay real tokens. Examples:

    "[P*3] {sub} [P*3] [MASK]"                          LAMA, masked LM (3, sub, 3, obj)
    "[P*3] {sub} [P*3] [MASK]"  with kind causal_lm     LAMA, causal LM (3, sub, 3) then obj
    "{passage} Question: {question|rstrip_punct}? Answer: [MASK]."
    "{premise} [SEP] {hypothesis} [P*4] [MASK]"         pair input with soft tokens

Text between structural tokens ([P], [MASK], [SEP]) forms a run, tokenized as one string, so
"capital of {c}" with c = "France" gives exactly the ids of "capital of France" (byte-level BPE
'Ġ' and sentencepiece '▁' included). Whitespace right before a structural token or at the end
of a segment is dropped (the structural token absorbs it, as RoBERTa's <mask> does); whitespace
after one is kept, so "[P] {sub}" renders the subject as " Paris" (Ġ-prefixed in GPT-2) and
"[P]{sub}" as "Paris". Each segment starts like a new text: whitespace at its start (after
[SEP], at the template's start) is dropped, as tokenizers encode pairs. The same rules decide
`target_follows_space`, which verbalizers use to tokenize answer words.

Rendering (`render` / `Renderer`) per backbone kind:
  masked_lm, encoder: [MASK] becomes the tokenizer's mask token(s); target_index is its position.
  causal_lm: the slot must end the template (`Template.until_target()` drops what follows);
    target_index is the last token before the slot, whose next-token prediction is the answer.
    Answer ids given to render are appended there (teacher forcing for multi-token scoring).
  seq2seq: [MASK] becomes the first sentinel (<extra_id_0>); target_index is its position; the
    answer is the decoder's business (see verbalizers).
Soft tokens get a placeholder id (unk, else pad, else eos) that insertion overwrites.
By default every token of the template follows the tokenizer's leading special tokens
([CLS] [P*3] ... for BERT). `Template.with_soft_prefix_first()` moves the soft tokens that open
the template before them ([P*3] [CLS] ...): where Hugging Face PEFT puts its virtual tokens and
where Lester et al. prepend the prompt (see `ptjax.interop`).

Truncation: when the rendered sequence exceeds max_length, fields are shortened from their end,
longest first, among the fields marked `truncate` (all fields if none is marked, or the names
passed to render). Soft tokens, text, the slot and special tokens are never cut. Every
truncation is counted (`Rendered.num_truncated_tokens`, `TruncationStats`).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from ptjax.errors import InputError

FIELD_MODIFIERS = ("rstrip_punct", "lower_first", "upper_first", "lower", "truncate")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SOFT = re.compile(r"P(?:\*(\d+))?\Z")
_TRAILING_PUNCT = ".,;:!? \t\n\r"


@dataclasses.dataclass(frozen=True)
class Text:
    text: str


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    modifiers: tuple[str, ...] = ()

    @property
    def truncatable(self) -> bool:
        return "truncate" in self.modifiers

    def apply(self, value: str) -> str:
        value = value.strip()
        for modifier in self.modifiers:
            if modifier == "rstrip_punct":
                value = value.rstrip(_TRAILING_PUNCT)
            elif modifier == "lower_first":
                value = value[:1].lower() + value[1:]
            elif modifier == "upper_first":
                value = value[:1].upper() + value[1:]
            elif modifier == "lower":
                value = value.lower()
        return value


@dataclasses.dataclass(frozen=True)
class Soft:
    count: int
    first_index: int  # soft index of the first of these tokens within the template


@dataclasses.dataclass(frozen=True)
class Mask:
    position: int  # character offset in the template source


@dataclasses.dataclass(frozen=True)
class Sep:
    position: int


Piece = Text | Field | Soft | Mask | Sep


@dataclasses.dataclass(frozen=True)
class Template:
    """A parsed template. Build with `parse_template`; render with `render` or a `Renderer`."""

    source: str
    pieces: tuple[Piece, ...]
    origin: str | None = None  # where the template came from, for error messages
    # The leading soft tokens render before the tokenizer's leading special tokens.
    soft_prefix_first: bool = False

    def describe(self) -> str:
        where = f"{self.origin}: " if self.origin else ""
        return f"{where}template {self.source!r}"

    @property
    def field_names(self) -> tuple[str, ...]:
        """Distinct field names in order of first appearance."""
        return tuple(dict.fromkeys(p.name for p in self.pieces if isinstance(p, Field)))

    @property
    def num_soft_tokens(self) -> int:
        return sum(p.count for p in self.pieces if isinstance(p, Soft))

    @property
    def has_target(self) -> bool:
        return any(isinstance(p, Mask) for p in self.pieces)

    @property
    def num_segments(self) -> int:
        return 1 + sum(isinstance(p, Sep) for p in self.pieces)

    @property
    def target_follows_space(self) -> bool:
        """True when whitespace precedes [MASK] inside its segment: the answer is a new word."""
        before, content = None, False
        for piece in self.pieces:
            if isinstance(piece, Mask):
                return content and isinstance(before, Text) and before.text[-1:].isspace()
            blank = isinstance(piece, Text) and piece.text.isspace()
            content = False if isinstance(piece, Sep) else content or not blank
            before = piece
        return False

    @property
    def text_after_target(self) -> bool:
        """True when anything but whitespace follows [MASK]."""
        seen = False
        for piece in self.pieces:
            if seen and not (isinstance(piece, Text) and not piece.text.strip()):
                return True
            seen = seen or isinstance(piece, Mask)
        return False

    def until_target(self) -> Template:
        """The template cut right after [MASK] (for causal LMs, whose answer ends the input)."""
        for i, piece in enumerate(self.pieces):
            if isinstance(piece, Mask):
                cut = piece.position + len("[MASK]")
                return Template(self.source[:cut], self.pieces[: i + 1], self.origin, self.soft_prefix_first)
        raise InputError(f"{self.describe()}: has no [MASK] to cut at")

    @property
    def leading_soft_tokens(self) -> int:
        """Soft tokens before any text, field, slot or separator (leading whitespace ignored)."""
        count = 0
        for piece in self.pieces:
            if isinstance(piece, Soft):
                count += piece.count
            elif not (isinstance(piece, Text) and not piece.text.strip()):
                break
        return count

    def with_soft_prefix_first(self) -> Template:
        """This template with its leading soft tokens placed before the special tokens."""
        if not self.leading_soft_tokens:
            raise InputError(f"{self.describe()}: placing the soft prefix first needs a template that starts "
                             "with [P] tokens")
        return dataclasses.replace(self, soft_prefix_first=True)


def parse_template(source: str | Template, origin: str | None = None) -> Template:
    """Parse `source` (grammar in the module docstring). Raises InputError naming the position.

    origin: where the template came from (e.g. "configs/rte.py: task.template"), for messages.
    """
    if isinstance(source, Template):
        return source
    return _parse_cached(source, origin)


@functools.lru_cache(maxsize=1024)
def _parse_cached(source: str, origin: str | None) -> Template:
    if not isinstance(source, str):
        where = f"{origin}: " if origin else ""
        raise InputError(f"{where}a template must be a string, got {type(source).__name__}")
    where = f"{origin}: " if origin else ""

    def fail(position: int, problem: str):
        raise InputError(f"{where}template {source!r}, position {position}: {problem}")

    pieces: list[Piece] = []
    text: list[str] = []
    soft_count = 0
    seen_mask = seen_sep = False

    def flush():
        if text:
            pieces.append(Text("".join(text)))
            text.clear()

    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char in "{[" and source[i + 1 : i + 2] == char:
            text.append(char)
            i += 2
        elif char == "}":
            if source[i + 1 : i + 2] != "}":
                fail(i, "single '}' (write '}}' for a literal brace)")
            text.append("}")
            i += 2
        elif char == "{":
            end = source.find("}", i + 1)
            if end < 0:
                fail(i, "'{' without a closing '}' (write '{{' for a literal brace)")
            name, *modifiers = [part.strip() for part in source[i + 1 : end].split("|")]
            if not _FIELD_NAME.match(name):
                fail(i, f"invalid field name {name!r} (letters, digits and _)")
            for modifier in modifiers:
                if modifier not in FIELD_MODIFIERS:
                    fail(i, f"unknown field modifier {modifier!r} (known: {', '.join(FIELD_MODIFIERS)})")
            flush()
            pieces.append(Field(name, tuple(modifiers)))
            i = end + 1
        elif char == "[":
            end = source.find("]", i + 1)
            if end < 0:
                fail(i, "'[' without a closing ']' (write '[[' for a literal bracket)")
            body = source[i + 1 : end]
            soft = _SOFT.match(body)
            flush()
            if soft:
                count = int(soft.group(1) or 1)
                if count < 1:
                    fail(i, "a soft-token count must be at least 1")
                pieces.append(Soft(count, soft_count))
                soft_count += count
            elif body == "MASK":
                if seen_mask:
                    fail(i, "a second [MASK] (a template has one answer slot)")
                seen_mask = True
                pieces.append(Mask(i))
            elif body == "SEP":
                if seen_sep:
                    fail(i, "a second [SEP] (at most two segments)")
                seen_sep = True
                pieces.append(Sep(i))
            else:
                fail(i, f"unknown [{body}] (known: [P], [P*n], [MASK], [SEP]; write '[[' for a literal '[')")
            i = end + 1
        else:
            text.append(char)
            i += 1
    flush()
    return Template(source, tuple(pieces), origin)
