"""LAMA knowledge probing (P-tuning, "GPT Understands, Too"): a fact becomes a cloze input and the
object is ranked over the vocabulary.

    experiment = build_lama_experiment(config, get_task("lama"), backbone)

Input per method ([MASK] is the object slot):
  manual      each relation's own template from relations.jsonl: "[X] was born in [Y] ." becomes
              "{sub} was born in [MASK] ." (`manual_template`); nothing trains (mode eval), or the
              backbone with method.train_backbone (manual prompt + fine-tuning)
  fine_tune   the subject and the slot only, "{sub} [MASK]"; the whole model trains
  ptuning     (3, sub, 3, obj, 3) "[P*3] {sub} [P*3] [MASK] [P*3]" on masked LMs, (3, sub, 3, obj)
              "[P*3] {sub} [P*3] [MASK]" on causal LMs; frozen backbone; one independent prompt
              encoder per relation (`PromptEncoderBank`), all relations trained in one job
  lester      config.prompt.length soft tokens before each relation's manual template
config.prompt.template replaces the method's default for every relation. Masked LMs predict the
object at the mask; causal LMs as the next token, so their templates end at the slot (what follows
it is cut, as in LAMA's and P-tuning's causal setting).

Facts: only those whose object is one token of the backbone's vocabulary in its in-context form
(after a space when the template has one before the slot, so " Paris" for byte-level BPE; the
tokenizer's own lowercasing for uncased vocabularies) are kept; `LamaTask` logs how many each
relation lost. Predictions: argmax over the candidates, the whole vocabulary (special tokens
excluded), or with task.options.common_vocab only the listed words that are single tokens (LAMA-29k
/ 34k); the loss is cross-entropy over the whole vocabulary, P-tuning's objective.

task.options: the loader's (relations, common_vocab, vocab_model) plus
  train_facts_per_relation / eval_facts_per_relation: keep a fixed random sample of at most N facts
  per relation of the train / eval splits (0: all), the same sample for every method and seed.
Relations: task.options.relations, else every relation of relations.jsonl with a facts file for
the train split and every eval split (the same set for every method, so that macro averages
compare).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ptjax.errors import InputError
from ptjax.eval.metrics import precision_at_1_of_hits, task_score
from ptjax.eval.scoring import p_at_1_metrics
from ptjax.formulations.base import EXAMPLE_FIELD, FormulatedTask, rendered_features, sequence_pad_values
from ptjax.formulations.lama_relations import (
    exported_relations,
    has_context_before_slot,
    manual_template,
    probed_relations,
    within_bank,
)
from ptjax.heads.verbalizer import VerbalizerHead
from ptjax.prompts.rendering import Renderer
from ptjax.prompts.templates import Template
from ptjax.prompts.verbalizers import tokenize_word
from ptjax.tasks import lama as lama_data
from ptjax.tasks.base import Example, TaskSpec

log = logging.getLogger(__name__)

SUBJECT_ONLY = "{sub} [MASK]"
PTUNING_TEMPLATES = {"masked_lm": "[P*3] {sub} [P*3] [MASK] [P*3]", "causal_lm": "[P*3] {sub} [P*3] [MASK]"}
SAMPLING_OPTIONS = ("train_facts_per_relation", "eval_facts_per_relation")
TOP_K = 10  # candidates per fact in the predictions file
def single_token_id(tokenizer, word: str, *, follows_space: bool) -> int | None:
    """The one token of `word` in running text (see tokenize_word), or None when it takes several
    tokens, is unknown, or its token does not read back as the word (an uncased vocabulary that
    strips accents, say)."""
    ids = tokenize_word(tokenizer, word, follows_space=follows_space)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    surface, expected = tokenizer.decode(ids).strip(), word.strip()
    if getattr(tokenizer, "do_lower_case", False):
        surface, expected = surface.lower(), expected.lower()
    return int(ids[0]) if surface == expected else None


@dataclasses.dataclass(frozen=True)
class FactProbeHead(VerbalizerHead):
    """The verbalizer head with the candidate vocabulary as labels, loss over the whole
    vocabulary. predict returns the top-1 candidate index, not [batch, vocab] scores: for the
    predictions file also the TOP_K best candidates [batch, k] with their scores and the gold
    object's rank (0: predicted)."""

    loss_over: str = "vocab"
    name: str = "fact_probe"

    def predict(self, params, outputs, lm_logits, batch) -> dict:
        scores, _ = self.logits(outputs, lm_logits, batch)
        top_scores, top = jax.lax.top_k(scores, min(TOP_K, scores.shape[-1]))
        gold = jnp.take_along_axis(scores, batch["label"][:, None], axis=-1)
        return {"prediction": jnp.argmax(scores, axis=-1).astype(jnp.int32), "top": top.astype(jnp.int32),
                "top_scores": top_scores, "gold_rank": jnp.sum(scores > gold, axis=-1).astype(jnp.int32)}


@dataclasses.dataclass
class FactProbe:
    """Facts -> features for one backbone; predictions -> object words.

    template_for: a relation's manual template (already in ptjax syntax) -> the template its facts
      use (the method's choice: the manual one, the P-tuning one, subject only...).
    relations: relation id -> relations.jsonl template, for the relations probed.
    candidates: token ids the prediction ranges over (sorted; the object must be one of them).
    bank: the relations of the prompt bank in order (prompt_id = index); default `relations`. An
      export trained on more relations than are probed keeps its own order here.
    """

    template_for: Callable[[str], Template]
    relations: Mapping[str, str]
    renderer: Renderer
    candidates: np.ndarray
    bank: Sequence[str] = ()

    def __post_init__(self):
        self.candidates = np.unique(np.asarray(self.candidates, np.int32))
        self._candidate_index = {int(t): i for i, t in enumerate(self.candidates)}
        self.bank = tuple(self.bank or self.relations)
        missing = [r for r in self.relations if r not in self.bank]
        if missing:
            raise InputError(f"lama: relation(s) {', '.join(missing)} have no prompt in the bank {list(self.bank)}")
        self.relation_index = {relation: i for i, relation in enumerate(self.bank)}
        self._templates: dict[str, Template] = {}
        self._objects: dict[tuple[str, bool], int | None] = {}
        self.head = FactProbeHead(label_token_ids=self.candidates)
        self.pad_values = sequence_pad_values(self.renderer.pad_id)
        self.length_groups = {}

    def template(self, relation: str) -> Template:
        if relation not in self._templates:
            if relation not in self.relations:
                raise InputError(f"lama: relation {relation} is not among the probed relations {list(self.relations)}")
            origin = f"lama relation {relation}"
            template = self.template_for(manual_template(self.relations[relation], origin))
            if not template.has_target:
                raise InputError(f"{template.describe()}: LAMA needs a [MASK] slot for the object")
            if self.renderer.kind == "causal_lm":
                template = template.until_target()
                if not has_context_before_slot(template):
                    raise InputError(f"{template.describe()}: nothing precedes the object slot, so a causal "
                                     "LM has no context to predict it from")
            self._templates[relation] = template
        return self._templates[relation]

    def object_token(self, example: Example) -> int | None:
        """The object's token when it is a single token among the candidates, else None."""
        follows_space = self.template(example.meta["relation"]).target_follows_space
        key = (example.label, follows_space)
        if key not in self._objects:
            token = single_token_id(self.renderer.tokenizer, example.label, follows_space=follows_space)
            self._objects[key] = token if token in self._candidate_index else None
        return self._objects[key]

    def filter_facts(self, examples: Sequence[Example]) -> tuple[list[Example], dict[str, dict[str, int]]]:
        """(facts whose object is a candidate token, {relation: {"kept": n, "dropped": m}})."""
        kept, counts = [], {}
        for example in examples:
            entry = counts.setdefault(example.meta["relation"], {"kept": 0, "dropped": 0})
            if self.object_token(example) is None:
                entry["dropped"] += 1
            else:
                entry["kept"] += 1
                kept.append(example)
        return kept, counts

    def featurize(self, examples: Sequence[Example]) -> list[dict]:
        features = []
        for index, example in enumerate(examples):
            relation = example.meta["relation"]
            token = self.object_token(example)
            if token is None:
                raise InputError(f"{example.meta.get('where', example.guid)}: object {example.label!r} is not "
                                 "one candidate token (LamaTask filters such facts)")
            subject = example.fields["sub_label"]
            rendered = self.renderer(self.template(relation), {"sub": subject, "sub_label": subject})
            feature = rendered_features(rendered)
            feature["target_index"] = rendered.target_index
            feature["label"] = self._candidate_index[token]
            feature["prompt_id"] = self.relation_index[relation]
            feature[EXAMPLE_FIELD] = index
            features.append(feature)
        return features

    def decode(self, examples, features, predictions) -> list[str]:
        """The predicted word per fact: the gold object itself when its token was predicted (so
        that uncased vocabularies compare equal), else the predicted token's text."""
        answers = []
        for example, feature, prediction in zip(examples, features, predictions):
            index = int(prediction["prediction"])
            if index == int(feature["label"]):
                answers.append(example.label)
            else:
                answers.append(self.renderer.tokenizer.decode([int(self.candidates[index])]).strip())
        return answers

    def scores(self, examples, features, predictions) -> list[dict]:
        """{"top": [[word, score], ...] best first, "gold_rank": how many candidates scored above
        the object} per fact."""
        words: dict[int, str] = {}

        def word(index: int) -> str:
            if index not in words:
                words[index] = self.renderer.tokenizer.decode([int(self.candidates[index])]).strip()
            return words[index]

        return [{"top": [[word(int(i)), float(s)] for i, s in zip(p["top"], p["top_scores"])],
                 "gold_rank": int(p["gold_rank"])} for p in predictions]

    def describe(self) -> dict:
        return {"formulation": "fact_probe", "candidates": len(self.candidates),
                "templates": {r: self.template(r).source for r in self.relations}}


@dataclasses.dataclass
class LamaTask(FormulatedTask):
    """FormulatedTask for LAMA: keeps the facts the formulation can score, samples at most
    `facts_per_relation[split]` per relation (fixed seed), and records per split and relation
    how many facts were kept and dropped (`fact_counts`)."""

    facts_per_relation: dict = dataclasses.field(default_factory=dict)
    sample_seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        self.fact_counts: dict[str, dict[str, dict[str, int]]] = {}

    @property
    def bank_metrics(self) -> tuple[str, ...]:
        """The metric of each prompt-bank entry, in bank order: each relation's P@1 picks its own
        best step and early stopping (ptjax.prompts.banks.BankSelection), as its own run would."""
        return tuple(f"p_at_1/{relation}" for relation in self.formulation.bank)

    def evaluate(self, split: str, predictions: list[dict]) -> dict[str, float]:
        """P@1 of the predicted token ids against the objects' (the reference's check), not of
        decoded words: " Paris" predicted for "Paris" (another token that decodes alike) misses."""
        examples, features = self.examples(split), self.features(split)
        if len(predictions) != len(features):
            raise ValueError(f"{len(predictions)} predictions for {len(features)} features of {split}")
        scored = [(examples[f[EXAMPLE_FIELD]], int(p["prediction"]) == int(f["label"]))
                  for f, p in zip(features, predictions)]
        scored = [(example, hit) for example, hit in scored if example.label is not None]
        if not scored:
            return {}
        metrics = p_at_1_metrics(precision_at_1_of_hits([hit for _, hit in scored],
                                                        [example.meta["relation"] for example, _ in scored]))
        return {**metrics, "score": task_score(metrics, self.spec.metrics)}

    def examples(self, split: str) -> list[Example]:
        if split not in self._examples:
            loaded = self.spec.load(self.data_dir, split, **self.load_options)
            kept, counts = self.formulation.filter_facts(loaded)
            kept = sample_per_relation(kept, int(self.facts_per_relation.get(split, 0) or 0), self.sample_seed)
            limit = int(self.max_examples.get(split, 0) or 0)
            self._examples[split] = kept[:limit] if limit else kept
            self.fact_counts[split] = counts
            _report(split, counts, len(self._examples[split]))
        return self._examples[split]


def sample_per_relation(examples: Sequence[Example], limit: int, seed: int) -> list[Example]:
    """At most `limit` facts per relation (0: all), a seeded random sample kept in file order."""
    if not limit:
        return list(examples)
    by_relation: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        by_relation.setdefault(example.meta["relation"], []).append(i)
    rng = np.random.default_rng(seed)
    chosen = set()
    for indices in by_relation.values():
        chosen.update(indices if len(indices) <= limit else rng.choice(indices, limit, replace=False).tolist())
    return [e for i, e in enumerate(examples) if i in chosen]


def _report(split: str, counts: dict[str, dict[str, int]], used: int) -> None:
    dropped = {r: c["dropped"] for r, c in counts.items() if c["dropped"]}
    kept = sum(c["kept"] for c in counts.values())
    summary = (f"LAMA {split}: {kept} of {kept + sum(dropped.values())} facts in {len(counts)} relations have a "
               f"single-token object; {used} used")
    if dropped:
        log.warning("%s; dropped per relation: %s", summary, ", ".join(f"{r} {n}" for r, n in dropped.items()))
    else:
        log.info(summary)


# --------------------------------------------------------------------------------------------
# Wiring (ptjax.experiment.build dispatches task kind "fact_probe" here).


def candidate_tokens(tokenizer, vocab_size: int, words=None, *, follows_space: bool = True) -> np.ndarray:
    """Token ids predictions may take: the vocabulary without special tokens, or the single-token
    in-context forms of `words` (a common-vocabulary list)."""
    if words is None:
        special = set(tokenizer.all_special_ids)
        return np.asarray([i for i in range(vocab_size) if i not in special], np.int32)
    ids = (single_token_id(tokenizer, w, follows_space=follows_space) for w in sorted(words))
    return np.asarray(sorted({i for i in ids if i is not None and i < vocab_size}), np.int32)


def build_lama_experiment(config, spec: TaskSpec, backbone):
    from ptjax.formulations.base import Experiment
    from ptjax.methods.methods import build_prompt_model, method_template
    from ptjax.prompts.banks import PromptEncoderBank

    if backbone.kind not in PTUNING_TEMPLATES:
        raise InputError(f"LAMA scores the object with an LM head: {backbone.name} is a {backbone.kind} backbone; "
                         "use a masked or causal LM")
    if config.head.type not in ("auto", "verbalizer"):
        raise InputError(f"config.head.type={config.head.type!r}: LAMA ranks the vocabulary with the LM head "
                         "(use 'auto')")
    options = dict(config.task.options)
    sampling = {name: int(options.pop(name, 0) or 0) for name in SAMPLING_OPTIONS}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise InputError(f"config.task.options.{unknown[0]}: LAMA knows {', '.join((*spec.options, *SAMPLING_OPTIONS))}")
    method = config.method.name
    plain_of = (lambda manual: SUBJECT_ONLY) if method == "fine_tune" else (lambda manual: manual)
    choose = lambda manual: method_template(config, plain_of(manual), PTUNING_TEMPLATES[backbone.kind],
                                            f"lama ({method})")
    relations = probed_relations(config, spec, config.data_dir, backbone.kind)
    bank = exported_relations(config)
    if bank:  # evaluating an export: any subset of the relations it trained, on any facts of them
        relations = within_bank(relations, bank, bool(config.task.options.get("relations")), config.restore)
    options["relations"] = tuple(relations)
    tokenizer = backbone.tokenizer
    vocab_size = min(int(backbone.config.vocab_size), len(tokenizer))
    words = None
    if options.get("common_vocab"):
        words = lama_data.load_common_vocabulary(config.data_dir, options["common_vocab"],
                                                 options.get("vocab_model", "bert-base-cased"))
    renderer = Renderer(tokenizer, backbone.kind, config.task.max_length)
    first = next(iter(relations))
    follows_space = choose(manual_template(relations[first])).target_follows_space
    formulation = FactProbe(template_for=choose, relations=relations, renderer=renderer,
                            candidates=candidate_tokens(tokenizer, vocab_size, words, follows_space=follows_space),
                            bank=bank or ())
    template = formulation.template(first)
    description = {"task": spec.name, "method": method, "backbone": backbone.name, "relations": list(relations),
                   **formulation.describe()}
    num_prompts = len(formulation.bank)
    model = build_prompt_model(config, backbone, formulation.head, template, description, num_prompts=num_prompts)
    if model.soft_prompt is not None:  # one independent encoder per relation, as P-tuning trains them
        encoders = PromptEncoderBank(num_prompts=num_prompts, num_tokens=template.num_soft_tokens,
                                     embed_dim=model.soft_prompt.embed_dim, reparam=config.prompt.encoder)
        model = dataclasses.replace(model, soft_prompt=encoders)
    eval_cap = sampling["eval_facts_per_relation"]
    data = LamaTask(
        spec=spec, formulation=formulation, data_dir=config.data_dir, load_options=options,
        max_examples={config.task.train_split: config.task.max_train_examples,
                      **{split: config.task.max_eval_examples for split in config.task.eval_splits}},
        facts_per_relation={config.task.train_split: sampling["train_facts_per_relation"],
                            **{split: eval_cap for split in config.task.eval_splits}},
    )
    return Experiment(model=model, data=data, backbone=backbone, description=description)

