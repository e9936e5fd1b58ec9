"""Single-sentence format (PPT section 3.2.3): sentences pseudo-labelled by a sentiment classifier.

    def classify(sentences: list[str]) -> np.ndarray:   # [n, 5] probabilities, terrible .. great
        ...
    builder = PseudoLabelledSentences(classify, threshold=0.5, balance=True)
    builder.pattern, builder.verbalizer   # "{sentence} [MASK].", {"0": "terrible", ..., "4": "great"}

The paper labels corpus sentences with a RoBERTa-base fine-tuned on a 5-class sentiment set and
"filters out those with low classification probability", without a number. Default threshold
0.5: the smallest value at which the kept class holds more probability than the other four
together (a real majority, not just a plurality). The authors' released preprocessing keeps the
three middle classes at 0.5 and asks more of the extremes (0.7 for great, 0.95 for terrible),
tuned to their classifier's skew; pass a per-label mapping to do the same.

Class balance: a classifier on web text predicts some classes far more often than others, and a
prompt pre-trained on skewed labels learns the skew as a prior. With balance=True (default) kept
sentences wait in one bounded buffer per class (once a class holds `buffer_size`, a new sentence
takes the place of a random waiting one), and examples leave in rounds of one per class,
shuffled, so every prefix of the output is balanced to within one round; what still waits when
the corpus ends is dropped. balance=False yields every kept sentence in corpus order.

Pattern: the paper's "s. <X>." with the sentence keeping its own final punctuation (not doubled).
Labels are "0".."4" (terrible .. great), the same strings as the SST-5 task's, so a prompt
pre-trained here transfers to SST-5 with the same verbalizer and to 2-class tasks with a subset.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ptjax.errors import InputError
from ptjax.tasks.base import Example
from ptjax.tasks.pretraining.builders import PretrainingBuilder
from ptjax.tasks.pretraining.corpus import SentencedDocument

Classifier = Callable[[list[str]], Sequence[Sequence[float]]]
DEFAULT_THRESHOLD = 0.5


class PseudoLabelledSentences(PretrainingBuilder):
    task = "ppt_sentiment"
    labels = ("0", "1", "2", "3", "4")
    fields = ("sentence",)
    pattern = "{sentence} [MASK]."
    verbalizer = {"0": "terrible", "1": "bad", "2": "maybe", "3": "good", "4": "great"}

    def __init__(self, classifier: Classifier, *, threshold: float | Mapping[str, float] = DEFAULT_THRESHOLD,
                 balance: bool = True, batch_size: int = 64, buffer_size: int = 1000, **options):
        super().__init__(**options)
        if not callable(classifier):
            raise InputError(f"{self.task}: the classifier must be callable (list of sentences -> "
                             f"probabilities [n, 5]), got {type(classifier).__name__}")
        self.classifier = classifier
        self.thresholds = self._thresholds(threshold)
        self.balance = balance
        if batch_size < 1 or buffer_size < 1:
            raise InputError(f"{self.task}: batch_size and buffer_size must be positive")
        self.batch_size = batch_size
        self.buffer_size = buffer_size

    def _thresholds(self, threshold) -> np.ndarray:
        if isinstance(threshold, Mapping):
            unknown = sorted(set(map(str, threshold)) - set(self.labels))
            if unknown:
                raise InputError(f"{self.task}: threshold for unknown label {unknown[0]!r} "
                                 f"(labels: {', '.join(self.labels)})")
            values = [float(threshold.get(label, threshold.get(int(label), DEFAULT_THRESHOLD)))
                      for label in self.labels]
        else:
            values = [float(threshold)] * len(self.labels)
        if not all(0.0 <= v <= 1.0 for v in values):
            raise InputError(f"{self.task}: thresholds must lie in [0, 1], got {values}")
        return np.asarray(values)

    def build(self, documents: Iterable[SentencedDocument]) -> Iterator[Example]:
        rng = random.Random(self.seed)
        buffers: list[list[tuple]] = [[] for _ in self.labels]
        number = 0
        for label, item in self._kept(documents):
            if not self.balance:
                yield self._example(f"{self.guid_prefix}-{number}", label, item)
                number += 1
                continue
            buffer = buffers[label]
            if len(buffer) < self.buffer_size:
                buffer.append(item)
            else:
                buffer[rng.randrange(self.buffer_size)] = item
            if all(buffers):
                round_ = [(k, b.pop(rng.randrange(len(b)))) for k, b in enumerate(buffers)]
                rng.shuffle(round_)
                for k, taken in round_:
                    yield self._example(f"{self.guid_prefix}-{number}", k, taken)
                    number += 1

    def _kept(self, documents: Iterable[SentencedDocument]) -> Iterator[tuple[int, tuple]]:
        """(class index, (where, sentence index, sentence, confidence)) of confident sentences."""
        batch: list[tuple[str, int, str]] = []
        for document in documents:
            for index, sentence in enumerate(document.sentences):
                if self.usable(sentence):
                    batch.append((document.where, index, sentence))
                if len(batch) == self.batch_size:
                    yield from self._classify(batch)
                    batch = []
        if batch:
            yield from self._classify(batch)

    def _classify(self, batch: list[tuple[str, int, str]]) -> Iterator[tuple[int, tuple]]:
        probabilities = np.asarray(self.classifier([sentence for _, _, sentence in batch]), dtype=np.float64)
        if probabilities.shape != (len(batch), len(self.labels)):
            raise InputError(f"{self.task}: the classifier returned shape {probabilities.shape} for "
                             f"{len(batch)} sentences; expected ({len(batch)}, {len(self.labels)})")
        if (not np.all(np.isfinite(probabilities)) or probabilities.min() < 0
                or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)):
            raise InputError(f"{self.task}: the classifier must return probabilities (non-negative, "
                             f"rows summing to 1), not logits; first row: {probabilities[0].tolist()}")
        best = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1)
        for (where, index, sentence), label, score in zip(batch, best, confidence):
            if score >= self.thresholds[label]:
                yield int(label), (where, index, sentence, float(score))

    def _example(self, guid: str, label: int, item: tuple) -> Example:
        where, index, sentence, confidence = item
        return Example(guid, {"sentence": sentence}, self.labels[label],
                       {"where": where, "sentence_index": index, "confidence": confidence})
