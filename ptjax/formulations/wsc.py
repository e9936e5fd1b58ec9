"""WSC as PET and P-tuning solve it: the LM names the pronoun's referent instead of answering
yes/no.

An example is (text, pronoun, candidate noun phrase, is the candidate the referent?). The text
is shown with the pronoun marked (*they*), the pattern ends in a slot for the referent, and the
candidate (span1_text) fills the slot token by token (`ptjax.heads.referent`):

  training    the candidate's likelihood on the examples where it is the referent (FewGLUE's 32
              training examples are all such; wrong candidates of full-data WSC are skipped)
  prediction  "True" when the LM's own fill of the slot names the candidate: its top tokens,
              decoded, and the candidate agree after lowercasing and dropping punctuation and
              articles (one word list contains the other, PET's relaxed comparison)

This fits the choice machinery (one candidate per example, scored as `MultipleChoice` scores
options) and needs an LM head: masked LMs, causal LMs and T5 read it; encoders without an LM
head, and linear heads (fine-tuning, P-tuning v2 by default), keep the yes/no formulation of
`ptjax.formulations.patterns` ("does *they* refer to ...?"). head.type='verbalizer' asks for
yes/no on an LM too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from ptjax.formulations.choice import MultipleChoice
from ptjax.heads.referent import ReferentHead
from ptjax.methods.methods import method_template
from ptjax.tasks.base import Example

# The referent slot ends the pattern, so causal LMs write the referent next.
MANUAL = '{text|truncate} In the passage above, the pronoun "{span2_text}" refers to [MASK].'
PTUNING = '{text|truncate} [P*3] "{span2_text}" [P*3] refers to [MASK].'
TASKS = ("wsc",)
_DETERMINERS = {"the", "a", "an", "his", "her", "their", "its", "my", "our", "your", "this", "that", "these",
                "those"}
_ARTICLES = {"the", "a", "an"}


def mark_pronoun(text: str, index: int, pronoun: str) -> str:
    """The text with the pronoun at word `index` wrapped in asterisks ("*they*,"). When the index
    points elsewhere (one SuperGLUE val line does), the nearest word that is the pronoun is
    marked; when there is none, the text is returned unchanged."""
    words = text.split(" ")
    size = len(pronoun.split())

    def matches(k: int) -> bool:
        return " ".join(words[k:k + size]).lower().startswith(pronoun.lower()) and \
            not re.match(r"\w", " ".join(words[k:k + size])[len(pronoun):])

    candidates = sorted((k for k in range(len(words)) if matches(k)), key=lambda k: abs(k - index))
    if not candidates:
        return text
    k = candidates[0]
    span = " ".join(words[k:k + size])
    marked = "*" + span[:len(pronoun)] + "*" + span[len(pronoun):]
    return " ".join(words[:k] + [marked] + words[k + size:])


def marked_fields(example: Example) -> dict:
    """WSC fields with the pronoun marked in the text (every WSC pattern uses them)."""
    fields = dict(example.fields)
    index = example.meta.get("span2_index")
    if index is not None:
        fields["text"] = mark_pronoun(fields["text"], index, fields["span2_text"])
    return fields


def as_slot_filler(phrase: str) -> str:
    """The candidate as it reads after "refers to": a leading determiner lowercased ("The
    demonstrators" -> "the demonstrators"), names kept ("Mr. Moncrieff")."""
    phrase = " ".join(phrase.split())
    first, _, rest = phrase.partition(" ")
    if first.lower() in _DETERMINERS:
        return (first.lower() + " " + rest).strip()
    return phrase


def _words(text: str) -> list[str]:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return [w for w in words if w not in _ARTICLES]


def same_referent(fill: str, candidate: str) -> bool:
    """PET's relaxed comparison: after lowercasing and dropping punctuation and articles, every
    word of one is among the words of the other (and neither is empty)."""
    a, b = _words(fill), _words(candidate)
    return bool(a) and bool(b) and (set(a) <= set(b) or set(b) <= set(a))


@dataclasses.dataclass
class ReferentFormulation(MultipleChoice):
    """MultipleChoice with one option, the candidate, and the referent head."""

    def __post_init__(self):
        super().__post_init__()
        if self.scoring != "lm":
            raise ValueError("the referent formulation scores the candidate with the LM")
        self.head = ReferentHead()

    def decode(self, examples, features, predictions) -> list[str]:
        tokenizer = self.renderer.tokenizer
        answers = []
        for example, prediction in zip(examples, predictions):
            fill = [int(t) for t, m in zip(prediction["fill"], prediction["fill_mask"]) if m]
            text = tokenizer.decode(fill, skip_special_tokens=True)
            answers.append("True" if same_referent(text, example.fields["span1_text"]) else "False")
        return answers

    def scores(self, examples, features, predictions) -> list[dict]:
        """{"referent": the words the model wrote at the pronoun, "log_likelihood": their mean
        token log-probability}."""
        tokenizer = self.renderer.tokenizer
        return [{"referent": tokenizer.decode([int(t) for t, m in zip(p["fill"], p["fill_mask"]) if m],
                                              skip_special_tokens=True),
                 "log_likelihood": float(p["score"])} for p in predictions]

    def describe(self) -> dict:
        return {"formulation": "referent", "template": self.template.source, "scoring": "lm"}


def handles(config, spec, head_kind: str) -> bool:
    """WSC on an LM head: head.type 'choice', or 'auto' where the yes/no pattern would use the
    verbalizer (an explicit head.type='verbalizer' keeps yes/no)."""
    if spec.name not in TASKS:
        return False
    return config.head.type == "choice" or (config.head.type == "auto" and head_kind in ("verbalizer", "choice"))


def build_formulation(config, spec, backbone, renderer, fields: Mapping | None = None):
    """(ReferentFormulation, template) for WSC; config.prompt.template overrides the pattern
    (it needs a [MASK] slot, which the candidate fills)."""
    template = method_template(config, MANUAL, PTUNING, f"task {spec.name} (referent)")
    decoder_start = getattr(backbone.config, "decoder_start_token_id", 0) or 0
    formulation = ReferentFormulation(
        template=template, renderer=renderer, options_fn=lambda e: [as_slot_filler(e.fields["span1_text"])],
        label_fn=lambda e: int(e.label == "True"), num_options=1, scoring="lm",
        answer_fn=lambda e, i: "True", fields_fn=marked_fields, decoder_start_id=decoder_start,
    )
    return formulation, template
