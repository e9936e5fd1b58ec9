"""PPT pre-training data: corpora (text, jsonl, HF datasets, TFDS), sentence splitting, and the
four self-supervised formats with their patterns and verbalizers.

    from ptjax.tasks.pretraining import NextSentencePairs, TextFiles, Shard, sentence_documents
    builder = NextSentencePairs(seed=0)
    documents = sentence_documents(TextFiles("corpus.txt"), Shard(host, num_hosts))
    for example in builder.build(documents): ...      # builder.pattern, builder.verbalizer

Importing this package registers the tasks ppt_nsp, ppt_nss, ppt_unified_mc and ppt_sentiment.
"""

from ptjax.tasks.pretraining.builders import (LETTERS, NextSentencePairs, PretrainingBuilder, SentenceSelection,
                                              UnifiedChoice)
from ptjax.tasks.pretraining.corpus import (Document, DocumentSource, JsonlFiles, SentencedDocument, Shard,
                                            TextFiles, corpus_paths, sentence_documents)
from ptjax.tasks.pretraining.hf_source import HFDataset
from ptjax.tasks.pretraining.pseudo_labels import DEFAULT_THRESHOLD, PseudoLabelledSentences
from ptjax.tasks.pretraining.sentences import split_sentences
from ptjax.tasks.pretraining.store import read_examples, read_header, write_examples
from ptjax.tasks.pretraining.tasks import (BUILDERS, builder_for, host_seed, open_corpus, resolve_classifier,
                                           split_documents, stream_examples)
from ptjax.tasks.pretraining.tfds_source import TFDSDataset

__all__ = ["BUILDERS", "DEFAULT_THRESHOLD", "LETTERS", "Document", "DocumentSource", "HFDataset", "JsonlFiles",
           "NextSentencePairs", "PretrainingBuilder", "PseudoLabelledSentences", "SentenceSelection",
           "SentencedDocument", "Shard", "TFDSDataset", "TextFiles", "UnifiedChoice", "builder_for",
           "corpus_paths", "host_seed", "open_corpus", "read_examples", "read_header", "resolve_classifier",
           "sentence_documents", "split_documents", "split_sentences", "stream_examples", "write_examples"]
