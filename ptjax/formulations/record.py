"""ReCoRD (SuperGLUE): the query's @placeholder is filled with each candidate entity of the passage
and the best-scoring candidate is the answer, as PET scores it.

    formulation, template = build_record_formulation(config, spec, backbone, renderer)

Every entity of the passage is a candidate (ptjax.tasks.superglue.parse_record keeps them unique,
in passage order). Each fills the slot with all its tokens: on an LM head the score is the
log-likelihood of the entity's tokens in the slot (masked LMs: one mask per token; causal LMs:
teacher-forced after the query's opening words, what follows the slot is cut), on a linear head
(P-tuning v2, fine-tuning) the pooled input with the entity written in. The prediction is the
candidate with the maximum score; EM / F1 are the official ReCoRD scores against every gold string
(ptjax.eval.metrics.record_scores). Training: cross-entropy over the candidates, the first gold
entity as the target. The passage's "@highlight" lines become "- " bullets, as PET reads them.
Template fields are whitespace-trimmed, so text glued to the placeholder ("@placeholder's") is
read with a space before it ("Chelsea 's"); the entity's own tokens are scored as PET scores them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ptjax.errors import InputError
from ptjax.formulations.choice import MultipleChoice
from ptjax.formulations.sentence_tasks import linear_pooling
from ptjax.methods.methods import method_template
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import Example, TaskSpec

PLACEHOLDER = "@placeholder"
MANUAL = "{passage|truncate} {before} [MASK] {after}"
PTUNING = "[P*3] {passage|truncate} [P*3] {before} [MASK] {after}"
LINEAR = "{passage|truncate} [SEP] {before} {option} {after}"


def record_fields(example: Example) -> dict[str, str]:
    """passage (highlights as "- " bullets), before / after: the query around @placeholder."""
    query = example.fields["query"]
    if query.count(PLACEHOLDER) != 1:
        raise InputError(f"{example.meta.get('where', example.guid)}: the query needs exactly one {PLACEHOLDER}")
    before, after = query.split(PLACEHOLDER)
    return {"passage": example.fields["passage"].replace("@highlight\n", "- "), "before": before.strip(),
            "after": after.strip()}


def gold_index(example: Example) -> int:
    """Index among the candidates of the first gold answer that is one (the training target)."""
    entities = list(example.meta["entities"])
    for answer in example.label or ():
        if answer in entities:
            return entities.index(answer)
    raise InputError(f"{example.meta.get('where', example.guid)}: no gold answer {example.label!r} is among the "
                     "passage's entities")


def most_candidates(spec: TaskSpec, data_dir, splits: Sequence[str]) -> int:
    """The largest number of candidate entities of any query in these splits (the options axis)."""
    counts = [len(e.meta["entities"]) for split in splits for e in spec.load(data_dir, split)]
    if not counts:
        raise InputError(f"{spec.name}: no queries in split(s) {', '.join(splits)}")
    return max(counts)


def build_record_formulation(config, spec: TaskSpec, backbone, renderer: Renderer, head_kind: str):
    """(MultipleChoice over the entities, template). head_kind: the experiment's head type ("cls"
    for linear scoring, "choice" / "verbalizer" for the LM head)."""
    splits = [s for s in (config.task.train_split, *config.task.eval_splits) if s]
    origin = f"task {spec.name}"
    linear = head_kind == "cls"
    if not linear and head_kind not in ("choice", "verbalizer"):
        raise InputError(f"config.head.type={config.head.type!r}: ReCoRD scores candidates (use 'auto' or 'choice')")
    template = (method_template(config, LINEAR, "", origin) if linear
                else method_template(config, MANUAL, PTUNING, origin))
    formulation = MultipleChoice(
        template=template, renderer=renderer, options_fn=lambda example: list(example.meta["entities"]),
        label_fn=gold_index, num_options=most_candidates(spec, config.data_dir, splits),
        scoring="linear" if linear else "lm", answer_fn=lambda example, index: example.meta["entities"][index],
        fields_fn=record_fields, decoder_start_id=getattr(backbone.config, "decoder_start_token_id", 0) or 0,
        **({"pooling": linear_pooling(config, backbone)} if linear else {}),
    )
    return formulation, template
