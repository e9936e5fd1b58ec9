"""ptjax: prompt tuning (P-tuning, Lester et al., P-tuning v2, PPT) on frozen language models in JAX/Flax.

    import ptjax
    config = ptjax.get_config("base", overrides={"task.name": "sst2", "train.num_steps": 100})
    results = ptjax.train(config, "runs/sst2")
    prompt = ptjax.load_prompt("runs/sst2/export")
    prompt.predict(["a gripping film"])

The functions live in ptjax/api.py and are imported on first use, so `import ptjax` stays
cheap (no JAX) for the command line and for config files that import it.
"""

from ptjax.errors import InputError

_API = ("get_config", "train", "evaluate", "plan", "load_prompt", "LoadedPrompt")

__all__ = ["InputError", *_API]


def __getattr__(name: str):
    if name in _API:
        from ptjax import api

        return getattr(api, name)
    raise AttributeError(f"module 'ptjax' has no attribute {name!r}")
