"""Default patterns, soft-prompt templates, classifier inputs and label words per task.

The manual patterns follow PET's style (a cloze question whose answer is a label word) with the
answer slot at the end, so the same pattern serves masked LMs, causal LMs (which predict the
next token) and T5 (whose decoder writes the word after the sentinel). The P-tuning templates
add soft tokens around the same anchors ("?", "Answer:"), as P-tuning does. The linear inputs
are what P-tuning v2 and fine-tuning feed a [CLS] head: the fields, pairs split by [SEP].
Long fields carry `truncate`, so the question and the slot survive truncation.
WSC on an LM head names the referent instead (`ptjax.formulations.wsc`); the yes/no patterns
here serve linear heads and head.type='verbalizer'.
Any of these is overridden by config.prompt.template / config.head.verbalizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from ptjax.errors import InputError
from ptjax.formulations.wsc import marked_fields
from ptjax.tasks.base import Example, TaskSpec
from ptjax.tasks.pretraining import (NextSentencePairs, PseudoLabelledSentences, SentenceSelection,
                                     UnifiedChoice)

YES_NO = {"False": "No", "True": "Yes"}


@dataclasses.dataclass(frozen=True)
class TaskPatterns:
    manual: str
    ptuning: str
    linear: str
    label_words: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Multiple-choice tasks: candidate texts and the index of the right one.
    options: Callable[[Example], Sequence[str]] | None = None
    linear_choice: str = ""
    fields: Callable[[Example], Mapping[str, Any]] | None = None


def _pair(first: str, second: str, words: Mapping[str, str]) -> TaskPatterns:
    return TaskPatterns(
        manual=f"{{{first}|truncate}} Question: {{{second}|rstrip_punct}}? Answer: [MASK].",
        ptuning=f"{{{first}|truncate}} [P*3] Question: {{{second}|rstrip_punct}}? [P*3] Answer: [MASK].",
        linear=f"{{{first}|truncate}} [SEP] {{{second}}}",
        label_words=words,
    )


def _copa_fields(example: Example) -> dict:
    return {**example.fields, "connective": "so" if example.fields["question"] == "effect" else "because"}


def _copa_options(example: Example) -> list[str]:
    return [_as_continuation(example.fields["choice1"]), _as_continuation(example.fields["choice2"])]


def _as_continuation(sentence: str) -> str:
    """A choice as the rest of the premise's sentence: no final stop, first letter lowercased
    (except the pronoun I: "so I took a nap")."""
    sentence = sentence.strip().rstrip(".!?")
    if sentence.split(" ", 1)[0].split("'", 1)[0] == "I":
        return sentence
    return sentence[:1].lower() + sentence[1:]


NLI_WORDS = {"entailment": "Yes", "not_entailment": "No", "contradiction": "No", "neutral": "Maybe"}

PATTERNS: dict[str, TaskPatterns] = {
    "rte": _pair("premise", "hypothesis", {k: NLI_WORDS[k] for k in ("entailment", "not_entailment")}),
    "cb": _pair("premise", "hypothesis", {k: NLI_WORDS[k] for k in ("entailment", "contradiction", "neutral")}),
    "mnli": _pair("premise", "hypothesis", {k: NLI_WORDS[k] for k in ("entailment", "contradiction", "neutral")}),
    "boolq": TaskPatterns(
        manual="{passage|truncate} Question: {question|upper_first|rstrip_punct}? Answer: [MASK].",
        ptuning="{passage|truncate} [P*3] Question: {question|upper_first|rstrip_punct}? [P*3] Answer: [MASK].",
        linear="{question} [SEP] {passage|truncate}",
        label_words=YES_NO,
    ),
    # The two sentences are numbered (run together they read as one text); P-tuning keeps the
    # word in quotes and "?" as anchors.
    "wic": TaskPatterns(
        manual='Sentence 1: {sentence1} Sentence 2: {sentence2} Question: is the word "{word}" used in the '
               "same sense in both sentences? Answer: [MASK].",
        ptuning='Sentence 1: {sentence1} Sentence 2: {sentence2} [P*3] "{word}" ? [P*3] Answer: [MASK].',
        linear="{word}: {sentence1} [SEP] {sentence2}",
        label_words=YES_NO,
    ),
    "wsc": TaskPatterns(
        manual='{text|truncate} Question: in the passage above, does "{span2_text}" refer to "{span1_text}"? '
               "Answer: [MASK].",
        ptuning='{text|truncate} [P*3] "{span2_text}" refer to "{span1_text}" ? [P*3] Answer: [MASK].',
        linear='{text|truncate} [SEP] "{span2_text}" refers to "{span1_text}"',
        label_words=YES_NO,
        fields=marked_fields,  # the pronoun marked in the text (*they*): it may occur twice
    ),
    "multirc": TaskPatterns(
        manual='{passage|truncate} Question: {question|rstrip_punct}? Is the answer "{answer}" correct? '
               "Answer: [MASK].",
        ptuning='{passage|truncate} [P*3] Question: {question|rstrip_punct}? "{answer}" ? [P*3] Answer: [MASK].',
        linear="{passage|truncate} [SEP] {question} {answer}",
        label_words={"0": "No", "1": "Yes"},
    ),
    "copa": TaskPatterns(
        manual="{premise|rstrip_punct}, {connective} [MASK].",
        ptuning="{premise|rstrip_punct} [P*3] {connective} [P*3] [MASK].",
        linear="",
        linear_choice="{premise|rstrip_punct}, {connective} [SEP] {option}",
        options=_copa_options,
        fields=_copa_fields,
    ),
}
_SENTIMENT = dict(
    manual="{sentence|truncate} It was [MASK].",
    ptuning="{sentence|truncate} [P*3] It was [P*3] [MASK].",
    linear="{sentence|truncate}",
)
PATTERNS["sst2"] = PATTERNS["sst2_trees"] = TaskPatterns(**_SENTIMENT, label_words={"0": "terrible", "1": "great"})
PATTERNS["sst5"] = PATTERNS["sst5_text"] = TaskPatterns(
    **_SENTIMENT, label_words={"0": "terrible", "1": "bad", "2": "okay", "3": "good", "4": "great"})



def _race_options(example: Example) -> list[str]:
    return [example.fields[f"option_{letter}"] for letter in "abcd"]


PATTERNS["race"] = PATTERNS["race_m"] = PATTERNS["race_h"] = TaskPatterns(
    manual="{article|truncate} Question: {question|rstrip_punct}? Answer: [MASK].",
    ptuning="{article|truncate} [P*3] Question: {question|rstrip_punct}? [P*3] Answer: [MASK].",
    linear="",
    linear_choice="{article|truncate} [SEP] {question} {option}",
    options=_race_options,
)
PATTERNS["yahoo_answers"] = TaskPatterns(
    manual="{title} {content|truncate} {answer|truncate} Topic: [MASK].",
    ptuning="{title} {content|truncate} {answer|truncate} [P*3] Topic: [P*3] [MASK].",
    linear="{title} {content|truncate} [SEP] {answer|truncate}",
    label_words={str(k + 1): word for k, word in enumerate(
        ("society", "science", "health", "education", "computers", "sports", "business", "entertainment",
         "family", "politics"))},
)
# Few-shot samples (ptjax.tasks.fewshot) read like their task.
for _base in ("sst2", "sst5", "yahoo_answers", "race", "race_m", "race_h", "boolq", "rte", "cb"):
    PATTERNS[f"{_base}_fewshot"] = PATTERNS[_base]
# PPT pre-training formats: the builders' patterns and verbalizers. ptjax.formulations.ppt builds
# these tasks (a causal LM gets the sentence-pair slot at the end; unified multiple choice masks
# the letters beyond each example's options); the entries say what the formats are.
for _builder in (NextSentencePairs, SentenceSelection, UnifiedChoice, PseudoLabelledSentences):
    _inputs = "{sentence}" if _builder is PseudoLabelledSentences else (
        "{s1} [SEP] {s2}" if _builder is NextSentencePairs else "{query} [SEP] {options}")
    PATTERNS[_builder.task] = TaskPatterns(manual=_builder.pattern, ptuning=f"[P*3] {_builder.pattern}",
                                           linear=_inputs, label_words=dict(_builder.verbalizer))


# Several manual patterns per task (PET's multi-pattern protocol: each pattern trained on its own,
# reported as mean ± std over patterns and as the best pattern). RTE: the four prompts of the
# P-tuning paper's Table 6, label words Yes / No (true / false where the prompt asks for them).
# name -> (template, label words in the task's label order).
MANUAL_PATTERNS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "rte": {
        "pre_agrees_hyp": ("Does {premise|truncate|rstrip_punct} agree with {hypothesis|rstrip_punct}? [MASK].",
                           ("Yes", "No")),
        "hyp_agrees_pre": ("Does {hypothesis|rstrip_punct} agree with {premise|truncate|rstrip_punct}? [MASK].",
                           ("Yes", "No")),
        "premise_hypothesis": ("Premise: {premise|truncate} Hypothesis: {hypothesis} Answer: [MASK].",
                               ("Yes", "No")),
        "true_or_false": ("{premise|truncate} question: {hypothesis|rstrip_punct}. true or false? answer: [MASK].",
                          ("true", "false")),
    },
}


def pattern_variants(task: str) -> tuple[str, ...]:
    """Sweep variants (config.sweep.variants), one per manual pattern of `task`: each sets
    config.prompt.template and config.head.verbalizer."""
    if task not in MANUAL_PATTERNS:
        raise InputError(f"task {task!r} has no list of manual patterns (known: {', '.join(MANUAL_PATTERNS)})")
    return tuple(f"{name}: prompt.template={template}; head.verbalizer={words!r}"
                 for name, (template, words) in MANUAL_PATTERNS[task].items())


def patterns_for(spec: TaskSpec) -> TaskPatterns:
    if spec.name == "text_classification":  # a config-defined task (ptjax.tasks.custom)
        return generic_patterns(spec)
    if spec.name not in PATTERNS:
        raise InputError(
            f"task {spec.name!r} has no default patterns: set config.prompt.template (and config.head.verbalizer)"
        )
    return PATTERNS[spec.name]


def generic_patterns(spec: TaskSpec) -> TaskPatterns:
    """A config-defined classification task: its fields as the classifier input and its label
    names as label words; LM heads need config.prompt.template, which no default can guess."""
    return TaskPatterns(manual="", ptuning="", linear=" [SEP] ".join(f"{{{field}}}" for field in spec.fields),
                        label_words={label: label for label in spec.labels})
