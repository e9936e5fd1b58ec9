"""Rendering a template with an example's fields into token ids, soft-token slots and the target.

    renderer = Renderer(tokenizer, "masked_lm", max_length=128)
    out = renderer("[P*3] {sub} [P*3] [MASK] .", {"sub": "Dante"})
    out.input_ids, out.soft_index, out.target_index      # see `Rendered`
    batch = collate([out, ...], pad_id=renderer.pad_id)  # padded numpy arrays
    renderer.stats.as_dict()                             # truncation counts so far

Rendering runs once per example at tokenization time; its cost is linear in the example's
length (one tokenizer call per example for all its text runs). Semantics are documented in
`ptjax.prompts.templates`.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ptjax.errors import InputError
from ptjax.prompts.special_tokens import special_layout
from ptjax.prompts.templates import Field, Mask, Sep, Soft, Template, Text, parse_template

KINDS = ("masked_lm", "encoder", "causal_lm", "seq2seq")
SEQ2SEQ_SENTINEL = "<extra_id_0>"


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One rendered example (unpadded).

    input_ids: int32 [length], special tokens included; soft slots hold a placeholder id.
    soft_index: int32 [length]; -1 where the token is real, k at the template's k-th soft token.
    token_type_ids: int32 [length]; segment ids where the tokenizer uses them (BERT), else 0.
    target_index: the [MASK] position (masked_lm, encoder), the position whose next-token
      prediction is the answer's first token (causal_lm), the sentinel's position (seq2seq);
      -1 when the template has no [MASK].
    target_length: tokens the slot stands for: positions target_index ... target_index +
      target_length - 1 predict the answer tokens (masks, or teacher-forced answer ids for causal
      LMs); 1 by default, 0 without a slot.
    num_truncated_tokens / truncated_fields: what truncation removed (0 / () when nothing).
    """

    input_ids: np.ndarray
    soft_index: np.ndarray
    token_type_ids: np.ndarray
    target_index: int
    target_length: int
    num_truncated_tokens: int = 0
    truncated_fields: tuple[str, ...] = ()

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def truncated(self) -> bool:
        return self.num_truncated_tokens > 0


@dataclasses.dataclass
class TruncationStats:
    """Running counts over rendered examples, for a pipeline to report."""

    examples: int = 0
    truncated_examples: int = 0
    truncated_tokens: int = 0

    def add(self, rendered: Rendered) -> None:
        self.examples += 1
        self.truncated_examples += int(rendered.truncated)
        self.truncated_tokens += rendered.num_truncated_tokens

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Renderer:
    """Renders templates for one tokenizer, backbone kind and maximum length.

    tokenizer: a fast Hugging Face tokenizer (offsets are needed).
    kind: "masked_lm" | "encoder" | "causal_lm" | "seq2seq" (Backbone.kind).
    max_length: the longest rendered sequence, special tokens and answer ids included.
    stats: TruncationStats over every example rendered by this renderer.
    """

    def __init__(self, tokenizer, kind: str, max_length: int):
        if kind not in KINDS:
            raise InputError(f"unknown backbone kind {kind!r} (known: {', '.join(KINDS)})")
        if not getattr(tokenizer, "is_fast", False):
            raise InputError(f"{type(tokenizer).__name__}: a fast tokenizer is needed (token offsets)")
        self.tokenizer, self.kind, self.max_length = tokenizer, kind, int(max_length)
        candidates = (tokenizer.unk_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
        self.placeholder_id = next((i for i in candidates if i is not None), 0)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.placeholder_id
        self.stats = TruncationStats()
        self._checked: set[Template] = set()

    # ----------------------------------------------------------------------------------------

    def __call__(
        self,
        template: str | Template,
        fields: Mapping[str, Any],
        *,
        answer_ids: Sequence[int] | None = None,
        truncate: Sequence[str] | None = None,
    ) -> Rendered:
        """Render one example.

        answer_ids: the answer's token ids, for multi-token answers: masked LMs get one [MASK]
          per id; causal LMs get the ids appended after the slot (teacher forcing); not used
          for seq2seq (the answer is the decoder target).
        truncate: field names that may be shortened, overriding the template's `truncate` marks.
        """
        template = parse_template(template)
        slot_id = self._check(template)
        layout = special_layout(self.tokenizer, template.num_segments)
        segments, occurrences = _split(template, fields)

        runs = [item for segment in segments for item in segment if item[0] == "run"]
        encoded = self.tokenizer([text for _, text, _ in runs], add_special_tokens=False,
                                 return_offsets_mapping=True, split_special_tokens=True) if runs else None
        # Per run: (token ids, the field occurrence each token comes from or -1), in order.
        run_tokens = [
            (list(ids), _owners(text, spans, offsets))
            for (_, text, spans), ids, offsets in zip(runs, encoded["input_ids"], encoded["offset_mapping"])
        ] if runs else []

        answer = [int(i) for i in answer_ids] if answer_ids is not None else None
        num_slot_tokens = self._slot_length(template, answer)
        total = (sum(len(s) for s in layout.specials) + sum(len(ids) for ids, _ in run_tokens)
                 + template.num_soft_tokens + num_slot_tokens)
        removed = self._truncate(template, occurrences, run_tokens, total - self.max_length, truncate)

        ids, types, soft = [], [], []
        if template.soft_prefix_first:  # the opening soft tokens go before the leading specials
            while segments[0] and segments[0][0][0] == "soft":
                _, first, count = segments[0].pop(0)
                ids += [self.placeholder_id] * count
                soft += range(first, first + count)
                types += [layout.segment_types[0]] * count
        ids += layout.specials[0]
        types += layout.special_types[0]
        soft += [-1] * len(layout.specials[0])
        target_index = -1
        run_iter = iter(run_tokens)
        for number, segment in enumerate(segments):
            segment_type = layout.segment_types[number]
            for item in segment:
                if item[0] == "run":
                    run_ids, _ = next(run_iter)
                    ids += run_ids
                    soft += [-1] * len(run_ids)
                    types += [segment_type] * len(run_ids)
                elif item[0] == "soft":
                    _, first, count = item
                    ids += [self.placeholder_id] * count
                    soft += range(first, first + count)
                    types += [segment_type] * count
                else:  # the slot
                    target_index, slot = self._slot(ids, slot_id, answer, template)
                    ids += slot
                    soft += [-1] * len(slot)
                    types += [segment_type] * len(slot)
            ids += layout.specials[number + 1]
            soft += [-1] * len(layout.specials[number + 1])
            types += layout.special_types[number + 1]

        rendered = Rendered(
            input_ids=np.asarray(ids, np.int32), soft_index=np.asarray(soft, np.int32),
            token_type_ids=np.asarray(types, np.int32), target_index=target_index,
            target_length=0 if target_index < 0 else max(1, num_slot_tokens),
            num_truncated_tokens=sum(removed.values()),
            truncated_fields=tuple(dict.fromkeys(occurrences[o][0] for o, r in removed.items() if r)),
        )
        self.stats.add(rendered)
        return rendered

    # ----------------------------------------------------------------------------------------

    def _check(self, template: Template) -> int | None:
        """Kind-specific template checks (once per template); returns the slot token id."""
        slot_id = None
        if template.has_target:
            if self.kind in ("masked_lm", "encoder"):
                slot_id = self.tokenizer.mask_token_id
                if slot_id is None:
                    raise InputError(f"{template.describe()}: [MASK] but the tokenizer has no mask token")
            elif self.kind == "seq2seq":
                slot_id = self.tokenizer.convert_tokens_to_ids(SEQ2SEQ_SENTINEL)
                if slot_id is None or slot_id == self.tokenizer.unk_token_id:
                    raise InputError(
                        f"{template.describe()}: the tokenizer has no {SEQ2SEQ_SENTINEL} sentinel for [MASK]"
                    )
        if template not in self._checked:
            if self.kind == "causal_lm" and template.text_after_target:
                raise InputError(
                    f"{template.describe()}: something follows [MASK]; a causal LM predicts the answer as "
                    "the next token, so the slot must end the template (Template.until_target() cuts it)"
                )
            self._checked.add(template)
        return slot_id

    def _slot_length(self, template: Template, answer: list[int] | None) -> int:
        if not template.has_target:
            return 0
        if self.kind == "causal_lm":
            return len(answer) if answer is not None else 0
        if self.kind == "seq2seq":
            return 1
        if answer is not None and not answer:
            raise InputError(f"{template.describe()}: empty answer_ids")
        return len(answer) if answer is not None else 1

    def _slot(self, ids: list[int], slot_id: int | None, answer: list[int] | None, template: Template):
        """(target_index, the slot's token ids) given the ids rendered so far."""
        if self.kind == "causal_lm":
            if not ids:
                raise InputError(f"{template.describe()}: nothing before [MASK] to predict the answer from")
            return len(ids) - 1, list(answer or [])
        count = len(answer) if answer is not None and self.kind != "seq2seq" else 1
        return len(ids), [slot_id] * count

    def _truncate(self, template, occurrences, run_tokens, excess, names) -> dict[int, int]:
        """Drop `excess` tokens from the ends of the allowed field occurrences, longest first."""
        if excess <= 0:
            return {}
        if names is not None:
            unknown = set(names) - set(template.field_names)
            if unknown:
                raise InputError(f"{template.describe()}: cannot truncate unknown field(s) {sorted(unknown)}")
            allowed = [o for o, (name, _) in enumerate(occurrences) if name in names]
        else:
            marked = [o for o, (_, truncatable) in enumerate(occurrences) if truncatable]
            allowed = marked or list(range(len(occurrences)))
        lengths = {o: 0 for o in allowed}
        for _, owners in run_tokens:
            for owner in owners:
                if owner in lengths:
                    lengths[owner] += 1
        if sum(lengths.values()) < excess:
            raise InputError(
                f"{template.describe()}: needs {excess} fewer tokens to fit max_length "
                f"{self.max_length}, but the truncatable fields hold only {sum(lengths.values())} "
                "(soft tokens, text, slot and special tokens are never cut): raise max_length or "
                "shorten the template"
            )
        removed = _longest_first(lengths, excess)
        left = dict(removed)
        for ids, owners in run_tokens:
            keep = [True] * len(ids)
            for position in range(len(ids) - 1, -1, -1):
                owner = owners[position]
                if left.get(owner, 0) > 0:
                    keep[position] = False
                    left[owner] -= 1
            if not all(keep):
                ids[:] = [i for i, k in zip(ids, keep) if k]
                owners[:] = [o for o, k in zip(owners, keep) if k]
        return removed


def render(
    template: str | Template,
    fields: Mapping[str, Any],
    tokenizer,
    kind: str,
    max_length: int,
    *,
    answer_ids: Sequence[int] | None = None,
    truncate: Sequence[str] | None = None,
) -> Rendered:
    """Render one example; see `Renderer.__call__`. A pipeline keeps one `Renderer` for its stats."""
    return Renderer(tokenizer, kind, max_length)(template, fields, answer_ids=answer_ids, truncate=truncate)


def collate(
    rendered: Sequence[Rendered], *, length: int | None = None, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """Right-pad rendered examples to [batch, length] numpy arrays.

    Returns input_ids (pad_id), attention_mask (1 real / 0 pad), soft_index (-1 on padding),
    token_type_ids (0) of shape [batch, length], and target_index, target_length of shape [batch].
    length: default the longest example; shorter than an example is an error.
    """
    longest = max((r.length for r in rendered), default=0)
    length = longest if length is None else int(length)
    if longest > length:
        raise ValueError(f"an example has {longest} tokens, more than the batch length {length}")
    batch = len(rendered)
    out = {
        "input_ids": np.full((batch, length), pad_id, np.int32),
        "attention_mask": np.zeros((batch, length), np.int32),
        "soft_index": np.full((batch, length), -1, np.int32),
        "token_type_ids": np.zeros((batch, length), np.int32),
    }
    for row, item in enumerate(rendered):
        out["input_ids"][row, : item.length] = item.input_ids
        out["attention_mask"][row, : item.length] = 1
        out["soft_index"][row, : item.length] = item.soft_index
        out["token_type_ids"][row, : item.length] = item.token_type_ids
    out["target_index"] = np.asarray([r.target_index for r in rendered], np.int32).reshape(batch)
    out["target_length"] = np.asarray([r.target_length for r in rendered], np.int32).reshape(batch)
    return out


# --------------------------------------------------------------------------------------------


def _split(template: Template, fields: Mapping[str, Any]):
    """Segments of items ("run", text, spans) | ("soft", first, count) | ("slot",), and the field
    occurrences as (name, truncatable); spans are (start, end, occurrence) within a run."""
    if not isinstance(fields, Mapping):
        raise InputError(
            f"{template.describe()}: fields must be a mapping of name -> text, got {type(fields).__name__}"
        )
    segments: list[list[tuple]] = [[]]
    occurrences: list[tuple[str, bool]] = []
    text: list[str] = []
    spans: list[tuple[int, int, int]] = []
    size = 0

    def end_run():
        nonlocal size
        run = "".join(text).rstrip()
        cut = 0 if segments[-1] else len(run) - len(run.lstrip())  # a segment starts like a new text
        run = run[cut:]
        if run:
            kept = [(s - cut, min(e - cut, len(run)), o) for s, e, o in spans if cut <= s < cut + len(run)]
            segments[-1].append(("run", run, kept))
        text.clear()
        spans.clear()
        size = 0

    for piece in template.pieces:
        if isinstance(piece, Text):
            text.append(piece.text)
            size += len(piece.text)
        elif isinstance(piece, Field):
            value = fields.get(piece.name)
            if value is None:
                have = ", ".join(sorted(map(str, fields)))
                raise InputError(
                    f"{template.describe()}: field {piece.name!r} missing from the example (has: {have})"
                )
            value = piece.apply(str(value))
            occurrences.append((piece.name, piece.truncatable))
            if value:
                spans.append((size, size + len(value), len(occurrences) - 1))
                text.append(value)
                size += len(value)
        else:
            end_run()
            if isinstance(piece, Soft):
                segments[-1].append(("soft", piece.first_index, piece.count))
            elif isinstance(piece, Mask):
                segments[-1].append(("slot",))
            elif isinstance(piece, Sep):
                segments.append([])
    end_run()
    return segments, occurrences


def _owners(text: str, spans: list[tuple[int, int, int]], offsets) -> list[int]:
    """The field occurrence (or -1 for template text) each token of a run comes from: the one
    holding the token's first non-space character."""
    starts = [s for s, _, _ in spans]
    owners = []
    for start, end in offsets:
        position = start
        while position < end and text[position].isspace():
            position += 1
        position = min(position, len(text) - 1)
        k = bisect.bisect_right(starts, position) - 1
        owners.append(spans[k][2] if k >= 0 and position < spans[k][1] else -1)
    return owners


def _longest_first(lengths: dict[int, int], excess: int) -> dict[int, int]:
    """Tokens to remove per item so that `excess` go in total, always from the longest item
    (ties: earlier items keep more). lengths: item -> length; sum(lengths) >= excess."""
    low, high = 0, max(lengths.values())
    while low < high:  # the largest level t with sum(max(0, l - t)) >= excess
        mid = (low + high + 1) // 2
        if sum(max(0, n - mid) for n in lengths.values()) >= excess:
            low = mid
        else:
            high = mid - 1
    removed = {o: max(0, n - low) for o, n in lengths.items()}
    surplus = sum(removed.values()) - excess
    for o in lengths:  # give one token back to the first `surplus` items cut down to the level
        if surplus == 0:
            break
        if removed[o] > 0:
            removed[o] -= 1
            surplus -= 1
    return removed
