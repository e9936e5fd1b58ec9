"""PPT (pre-trained prompt tuning): the pre-training formats as trainable tasks, and every
downstream task cast into its format.

The paper groups classification tasks into formats, each with a self-supervised pre-training
task whose pattern-verbalizer pair the downstream tasks of the format reuse:

    format     pre-training task                 downstream tasks
    nsp        ppt_nsp (next sentence, 3-way)    sentence pairs: BoolQ, RTE, CB, MNLI
    nss        ppt_nss (next sentence of 6)      multiple choice: COPA, RACE
    sentiment  ppt_sentiment (pseudo-labels)     single text: SST-2, SST-5, Yahoo Answers
    unified    ppt_unified_mc (2-16 options)     every task, cast as multiple choice

`config.prompt.pattern` picks how a task is read:
    "task"     the task's own manual pattern (ptjax.formulations.patterns), as for any method
    "format"   its format's pre-training pattern and verbalizer, e.g. "s1 <X>. s2" with no/yes
    "hybrid"   its format with the paper's hard prompt words ("Question: s1? <X>. s2",
               "We ask q? A. .. The answer is <X>.", "s. It was <X>.")
    "unified"  unified multiple choice: "q? A. no B. yes. Answer is <X>." with the letters as words
and `config.prompt.init="pretrained"` starts the soft prompt from a pre-trained one
(ptjax.prompts.pretrained). The paper's variants then differ in two knobs only:

    Vanilla PT   init random       pattern format     Hybrid PT    init random      pattern hybrid
    PPT          init pretrained   pattern format     Hybrid PPT   init pretrained  pattern hybrid
    Unified PPT  init pretrained (from ppt_unified_mc)  pattern unified

Backbone kinds: the answer slot is the mask (masked LMs), the sentinel the T5 decoder answers
after, or the next token (causal LMs). A causal LM needs the slot at the end, so the sentence-pair
patterns, whose slot sits between the two sentences, put it after the second one there.

The pre-training tasks themselves always go through here: unified multiple choice has 2 to 16
options per example, so its verbalizer ranges over the letters A-P and each example masks the
letters it does not have (feature `label_mask`, honoured by the verbalizer head). Label words that
are not single tokens of the tokenizer are scored as candidates instead (multiple choice over the
words, the same mask as option_mask).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ptjax.errors import InputError
from ptjax.formulations.choice import MultipleChoice, WordChoice
from ptjax.formulations.classification import VerbalizerClassification
from ptjax.prompts.templates import parse_template
from ptjax.prompts.verbalizers import build_verbalizer
from ptjax.tasks.base import Example, TaskSpec
from ptjax.tasks.pretraining import (
    LETTERS,
    NextSentencePairs,
    PseudoLabelledSentences,
    SentenceSelection,
    UnifiedChoice,
)

log = logging.getLogger(__name__)

PATTERNS = ("task", "format", "hybrid", "unified")
PRETRAINING_TASKS = {"nsp": "ppt_nsp", "nss": "ppt_nss", "sentiment": "ppt_sentiment", "unified": "ppt_unified_mc"}

NSP_WORDS = dict(NextSentencePairs.verbalizer)          # "0" no, "1" maybe, "2" yes
SENTIMENT_WORDS = dict(PseudoLabelledSentences.verbalizer)  # "0" terrible .. "4" great
# Sentence-pair patterns per backbone kind: (slot between the sentences, slot at the end).
NSP_PATTERNS = {
    "format": (NextSentencePairs.pattern, "{s1} {s2} [MASK]."),
    "hybrid": ("Question: {s1|rstrip_punct}? [MASK]. {s2}", "{s2} Question: {s1|rstrip_punct}? [MASK]."),
}
SENTIMENT_PATTERNS = {"format": PseudoLabelledSentences.pattern, "hybrid": "{sentence} It was [MASK]."}
UNIFIED_PATTERN = UnifiedChoice.pattern
YAHOO_WORDS = ("society", "science", "health", "education", "computers", "sports", "business",
               "entertainment", "family", "politics")


def choice_pattern(num_options: int, *, hybrid: bool = False) -> str:
    """The next-sentence-selection pattern for `num_options` lettered options in fields a, b, ...
    (six options, not hybrid: exactly SentenceSelection.pattern)."""
    if not 1 <= num_options <= len(LETTERS):
        raise InputError(f"multiple choice with {num_options} options: PPT patterns take 1 to {len(LETTERS)}")
    fields = [letter.lower() for letter in LETTERS[:num_options]]
    options = " ".join(f"{letter}. {{{field}}}" for letter, field in zip(LETTERS, fields[:-1]))
    last = f"{LETTERS[num_options - 1]}. {{{fields[-1]}|rstrip_punct}}"
    options = f"{options} {last}" if options else last
    lead, answer = ("We ask ", "The answer is") if hybrid else ("", "Answer is")
    return f"{lead}{{query|rstrip_punct}}? {options}. {answer} [MASK]."


def lettered(options: Sequence[str]) -> str:
    """ "A. first B. second ..." (the unified format's option list)."""
    return " ".join(f"{letter}. {text.strip()}" for letter, text in zip(LETTERS, options))


# --------------------------------------------------------------------------------------------
# How each task reads in its format.


@dataclasses.dataclass(frozen=True)
class View:
    """A task seen in its PPT format.

    format: "nsp" | "nss" | "sentiment" | "unified".
    fields: example -> the format's fields: s1, s2 (nsp); sentence (sentiment); query and
      options, a tuple of texts in label order (nss, unified).
    words: label -> the format's word (nsp, sentiment) or option letter (nss, unified).
    option_count: example -> how many options it has (unified pre-training); None: all labels.
    """

    format: str
    fields: Callable[[Example], dict]
    words: Mapping[str, str]
    option_count: Callable[[Example], int] | None = None

    def options(self, labels: Sequence[str]) -> list[str]:
        """The unified format's option texts of an nsp / sentiment task, in letter order: the
        format's words in the pre-training verbalizer's order (no, maybe, yes / terrible .. great)."""
        order = list(NSP_WORDS.values()) if self.format == "nsp" else list(SENTIMENT_WORDS.values())
        used = [self.words[label] for label in labels]
        return sorted(dict.fromkeys(used), key=lambda w: order.index(w) if w in order else len(order))

    def unified(self, labels: Sequence[str]) -> tuple[Callable[[Example], dict], dict[str, str]]:
        """(fields, label -> letter) of the task cast as unified multiple choice."""
        if self.format in ("nss", "unified"):
            def fields(example):
                own = self.fields(example)
                return {"query": own["query"], "options": lettered(own["options"])}

            return fields, dict(self.words)
        options = self.options(labels)
        letters = {label: LETTERS[options.index(self.words[label])] for label in labels}
        text = lettered(options)
        if self.format == "nsp":  # paper: the two sentences concatenated (passage, then question)
            def fields(example):
                own = self.fields(example)
                return {"query": f"{own['s2'].strip()} {own['s1'].strip()}", "options": text}
        else:
            def fields(example):
                return {"query": self.fields(example)["sentence"], "options": text}
        return fields, letters


def _question(text: str) -> str:
    text = text.strip().rstrip("?. ")
    return (text[:1].upper() + text[1:] + "?") if text else text


def _sentence_end(text: str) -> str:
    """A sentence as the pre-training pairs have them: with its final punctuation."""
    text = text.strip()
    return text if not text or text[-1] in ".!?\"'" else text + "."


def _pair(first: str, second: str, words: Mapping[str, str]) -> View:
    """s1 = the hypothesis / question, s2 = the premise / passage (PET's order for RTE and BoolQ:
    "h? <X>, p"), so "s2 follows s1" reads as "the passage answers the question"."""
    def fields(example):
        s1 = example.fields[first]
        return {"s1": _question(s1) if first == "question" else _sentence_end(s1), "s2": example.fields[second]}

    return View("nsp", fields, words)


def _sentence(field: str, words: Mapping[str, str]) -> View:
    return View("sentiment", lambda example: {"sentence": example.fields[field]}, words)


def _copa_fields(example: Example) -> dict:
    question = "What was the cause" if example.fields["question"] == "cause" else "What happened as a result"
    premise = example.fields["premise"].strip()
    return {"query": f"{premise} {question}",
            "options": (example.fields["choice1"], example.fields["choice2"])}


def _race_fields(example: Example) -> dict:
    return {"query": f"{example.fields['article'].strip()} {example.fields['question'].strip()}",
            "options": tuple(example.fields[f"option_{letter.lower()}"] for letter in LETTERS[:4])}


def _yahoo_fields(example: Example) -> dict:
    parts = (example.fields.get(k, "") for k in ("title", "content", "answer"))
    return {"sentence": " ".join(p.strip() for p in parts if p and p.strip())}


_BOOL = {"True": NSP_WORDS["2"], "False": NSP_WORDS["0"]}
_NLI3 = {"entailment": NSP_WORDS["2"], "neutral": NSP_WORDS["1"], "contradiction": NSP_WORDS["0"]}
_TWO_SENTIMENTS = {"0": SENTIMENT_WORDS["0"], "1": SENTIMENT_WORDS["4"]}  # terrible / great

VIEWS: dict[str, View] = {
    "boolq": _pair("question", "passage", _BOOL),
    "rte": _pair("hypothesis", "premise", {"entailment": NSP_WORDS["2"], "not_entailment": NSP_WORDS["0"]}),
    "cb": _pair("hypothesis", "premise", _NLI3),
    "mnli": _pair("hypothesis", "premise", _NLI3),
    "copa": View("nss", _copa_fields, {"0": "A", "1": "B"}),
    "race": View("nss", _race_fields, {letter: letter for letter in LETTERS[:4]}),
    "sst2": _sentence("sentence", _TWO_SENTIMENTS),
    "sst2_trees": _sentence("sentence", _TWO_SENTIMENTS),
    "sst5": _sentence("sentence", SENTIMENT_WORDS),
    "sst5_text": _sentence("sentence", SENTIMENT_WORDS),
    "yahoo_answers": View("sentiment", _yahoo_fields, {str(k + 1): w for k, w in enumerate(YAHOO_WORDS)}),
    # The pre-training tasks, read in their own format.
    "ppt_nsp": View("nsp", lambda example: dict(example.fields), NSP_WORDS),
    "ppt_sentiment": View("sentiment", lambda example: dict(example.fields), SENTIMENT_WORDS),
    "ppt_nss": View("nss", lambda e: {"query": e.fields["query"], "options": tuple(e.fields["choices"])},
                    {letter: letter for letter in SentenceSelection.labels}),
    "ppt_unified_mc": View("unified", lambda e: {"query": e.fields["query"], "options": tuple(e.fields["choices"])},
                           {letter: letter for letter in UnifiedChoice.labels},
                           option_count=lambda example: int(example.meta["num_options"])),
}
# Task variants that read the same examples (few-shot samples, RACE levels).
ALIASES = {"sst2_fewshot": "sst2", "sst5_fewshot": "sst5", "yahoo_answers_fewshot": "yahoo_answers",
           "race_m": "race", "race_h": "race", "race_fewshot": "race", "race_m_fewshot": "race",
           "race_h_fewshot": "race", "boolq_fewshot": "boolq", "rte_fewshot": "rte", "cb_fewshot": "cb"}


def view_for(task: str) -> View:
    name = ALIASES.get(task, task)
    if name not in VIEWS:
        known = ", ".join(sorted(set(VIEWS) | set(ALIASES)))
        raise InputError(f"task {task!r} has no PPT format (config.prompt.pattern needs one of: {known}); "
                         f"use config.prompt.pattern='task'")
    return VIEWS[name]


def is_pretraining_task(task: str) -> bool:
    return task in PRETRAINING_TASKS.values()


def source_task(task: str, pattern: str) -> str:
    """The pre-training task whose prompt a task starts from: its format's, or unified
    multiple choice's when the task is read as unified multiple choice ("" for a task without
    a PPT format)."""
    name = ALIASES.get(task, task)
    if name not in VIEWS:
        return ""
    return PRETRAINING_TASKS["unified" if pattern == "unified" else VIEWS[name].format]


def handles(config, spec: TaskSpec) -> bool:
    """Whether this module builds the task's formulation (PPT patterns or a pre-training task)."""
    return is_pretraining_task(spec.name) or config.prompt.pattern != "task"


# --------------------------------------------------------------------------------------------
# Formulations.


@dataclasses.dataclass
class MaskedVerbalizerClassification(VerbalizerClassification):
    """A verbalizer over all labels where each example allows only its first `option_count`
    ones (unified multiple choice: an example with 4 options scores the letters A-D only)."""

    option_count: Callable[[Example], int] | None = None

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        features = super().featurize(examples)
        if self.option_count is None:
            return features
        num_labels = len(self.labels)
        for feature, example in zip(features, examples):
            count = self.option_count(example)
            if not 1 <= count <= num_labels:
                raise InputError(f"{example.meta.get('where', example.guid)}: {count} options; this task "
                                 f"takes 1 to {num_labels}")
            if example.label is not None and self.labels.index(example.label) >= count:
                raise InputError(f"{example.meta.get('where', example.guid)}: label {example.label!r} is beyond "
                                 f"its {count} options")
            feature["label_mask"] = (np.arange(num_labels) < count).astype(np.int32)
        return features


def _template_for(view: View, pattern: str, kind: str, num_options: int) -> str:
    """The pattern text (without soft tokens) of a view under config.prompt.pattern."""
    if pattern == "unified" or view.format == "unified":
        if pattern == "hybrid":
            raise InputError("config.prompt.pattern='hybrid': unified multiple choice has no hybrid pattern")
        return UNIFIED_PATTERN
    style = "hybrid" if pattern == "hybrid" else "format"
    if view.format == "nsp":
        return NSP_PATTERNS[style][kind == "causal_lm"]
    if view.format == "sentiment":
        return SENTIMENT_PATTERNS[style]
    return choice_pattern(num_options, hybrid=style == "hybrid")


def build_formulation(config, spec: TaskSpec, backbone, renderer, head_kind: str):
    """(formulation, plain pattern) of a task under config.prompt.pattern; the caller adds the
    method's soft tokens to the pattern (method_template)."""
    from ptjax.methods.methods import method_template

    pattern = config.prompt.pattern
    if pattern not in PATTERNS:
        raise InputError(f"config.prompt.pattern={pattern!r}: choose one of {', '.join(map(repr, PATTERNS))}")
    if head_kind not in ("auto", "verbalizer", "choice"):
        raise InputError(f"PPT patterns are cloze patterns scored by the LM head; config.head.type={head_kind!r} "
                         f"does not fit (use 'verbalizer')")
    if backbone.kind == "encoder":
        raise InputError(f"{backbone.name} has no LM head: PPT patterns need a masked LM, a causal LM or T5")
    view = view_for(spec.name)
    labels = tuple(spec.labels)
    option_count = view.option_count
    if pattern == "unified" and view.format != "unified":
        fields_fn, words = view.unified(labels)
        num_options = len(set(words.values()))
    else:
        words = dict(view.words)
        num_options = len(labels)
        fields_fn = _format_fields(view)
    if config.head.verbalizer:
        if len(config.head.verbalizer) != len(labels):
            raise InputError(f"config.head.verbalizer has {len(config.head.verbalizer)} words for {len(labels)} "
                             f"labels {list(labels)}")
        words = dict(zip(labels, config.head.verbalizer))
    plain = _template_for(view, pattern, backbone.kind, num_options)
    template = method_template(config, plain, "", f"task {spec.name} (PPT pattern {pattern!r})")
    decoder_start = getattr(backbone.config, "decoder_start_token_id", 0) or 0
    if head_kind == "choice" or not _single_tokens(words, renderer, template):
        return _word_choice(template, renderer, labels, words, fields_fn, option_count, decoder_start), template
    formulation = MaskedVerbalizerClassification(
        template=template, labels=labels, label_words=words, renderer=renderer, decoder_start_id=decoder_start,
        fields_fn=fields_fn, option_count=option_count)
    return formulation, template


def _word_choice(template, renderer, labels, words, fields_fn, option_count, decoder_start) -> MultipleChoice:
    """Label words scored as candidates by their log-likelihood; an example with `option_count`
    options has only its first words as candidates (option_mask)."""
    candidates = [words[label] for label in labels]
    if option_count is None:
        def options(example):
            return candidates
    else:
        def options(example):
            return candidates[:option_count(example)]
    return WordChoice(template=template, renderer=renderer, options_fn=options,
                      label_fn=lambda example: list(labels).index(example.label), num_options=len(labels),
                      answer_fn=lambda example, index: labels[index], fields_fn=fields_fn,
                      decoder_start_id=decoder_start, label_words={label: words[label] for label in labels})


def _format_fields(view: View) -> Callable[[Example], dict]:
    """Fields for the format and hybrid patterns: nss options become fields a, b, c, ..."""
    if view.format not in ("nss", "unified"):
        return view.fields

    def fields(example):
        own = view.fields(example)
        out = {"query": own["query"], "options": lettered(own["options"])}
        out.update({letter.lower(): text for letter, text in zip(LETTERS, own["options"])})
        return out

    return fields


def _single_tokens(words: Mapping[str, Any], renderer, template) -> bool:
    verbalizer = build_verbalizer(dict(words), renderer.tokenizer, renderer.kind,
                                  follows_space=parse_template(template).target_follows_space)
    return verbalizer.is_single_token and verbalizer.token_ids.shape[1] == 1
