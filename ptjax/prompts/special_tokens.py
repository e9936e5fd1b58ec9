"""Where a tokenizer puts its special tokens ([CLS], [SEP], <s>, </s>, ...) around one or two
segments of text, and the token type of each part, read off the tokenizer's own encoding: the
renderer (ptjax.prompts.rendering), token-level inputs (ptjax.formulations.token_inputs) and PEFT
interop (ptjax.interop.peft) place them the way the tokenizer would."""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any


@dataclasses.dataclass(frozen=True)
class Layout:
    """Special tokens around one or two segments, and the token type of every part."""

    specials: tuple[tuple[int, ...], ...]   # before, (between,) after the segments
    special_types: tuple[tuple[int, ...], ...]
    segment_types: tuple[int, ...]


_LAYOUTS: weakref.WeakKeyDictionary[Any, dict[int, Layout]] = weakref.WeakKeyDictionary()


def special_layout(tokenizer, num_segments: int) -> Layout:
    """Where the tokenizer puts its special tokens, read off its own encoding of 'a' (and 'b')."""
    cache = _LAYOUTS.setdefault(tokenizer, {})
    if num_segments not in cache:
        texts = ("a", "b")[:num_segments]
        enc = tokenizer(*texts, add_special_tokens=True, return_special_tokens_mask=True,
                        return_token_type_ids=True)
        uses_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        types = enc["token_type_ids"] if uses_types else [0] * len(enc["input_ids"])
        # Segments may touch (no specials between them), so walk by each text's own length.
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        specials, special_types, segment_types = [[]], [[]], []
        position, tokens = 0, list(zip(enc["input_ids"], enc["special_tokens_mask"], types))
        for length in lengths + [0]:
            while position < len(tokens) and tokens[position][1]:
                specials[-1].append(tokens[position][0])
                special_types[-1].append(tokens[position][2])
                position += 1
            if length:
                segment = tokens[position : position + length]
                if len(segment) != length or any(is_special for _, is_special, _ in segment):
                    raise ValueError(f"cannot read the special-token layout of {type(tokenizer).__name__}")
                segment_types.append(segment[0][2])
                specials.append([])
                special_types.append([])
                position += length
        if position != len(tokens):
            raise ValueError(f"cannot read the special-token layout of {type(tokenizer).__name__}")
        cache[num_segments] = Layout(
            tuple(map(tuple, specials)), tuple(map(tuple, special_types)), tuple(segment_types)
        )
    return cache[num_segments]
