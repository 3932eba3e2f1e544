"""Build configuration: YAML files loaded into typed, validated dataclasses.

Layering: dataclass defaults <- YAML file <- `--set section.key=value` overrides
from the command line. Nothing is read at import time.

Validated on load with pydantic (its dataclasses): a wrong type, an unknown key or an
out-of-range value stops the build before any stage runs, with one line that names the
key and the file, instead of failing an hour later inside a stage. Pydantic dataclasses
keep what the rest of the code relies on (attribute access, `dataclasses.asdict`,
`dataclasses.replace`, which validates again) and cost no new dependency (gradio already
needs pydantic 2). Precision is not a speed setting here: `tune.precision: auto` leaves it
to `face_app/hardware.py` (bf16 only where the hardware computes it natively).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from face_app.hardware import PRECISIONS
from face_app.sequential import SASRecShape
from training.metrics import LARGEST_CUTOFF

# Unknown keys are errors; a value is converted only where nothing is lost ("5" -> 5, never 5.5 -> 5).
STRICT = ConfigDict(extra="forbid")

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
Rate = Annotated[float, Field(gt=0)]  # above zero: a learning rate, a temperature, minutes
Weight = Annotated[float, Field(ge=0)]  # a loss weight, a regulariser
Threads = Annotated[int, Field(gt=0)] | None


@dataclass(config=STRICT)
class Schedule:
    """How a model trained by epochs is validated and stopped (`training.loop.train_with_early_stopping`).

    epochs: the most passes; eval_every: validate every N epochs (and after the last); patience: stop after
    this many validations without a better valid NDCG@10, keeping the best weights.
    """

    epochs: Positive = 1
    eval_every: Positive = 1
    patience: Positive = 1


@dataclass(config=STRICT)
class DataConfig:
    """Which dataset to read and how to filter it.

    source: a pinned dataset (`ml-100k`, `ml-1m`) or a reader (`recbole`,
        `grouplens-100k`, `grouplens-1m`, `amazon2018`) with `paths`.
    max_users: keep only the first N users in id order (small test configs).
    """

    source: str = "ml-100k"
    paths: dict[str, str] | None = None
    max_users: Positive | None = None
    min_user_interactions: NonNegative = 0
    min_item_interactions: NonNegative = 0


@dataclass(config=STRICT)
class LightGCNConfig(Schedule):
    """LightGCN (training/cf.py); defaults tuned on ML-100k valid NDCG@10 (1-2 min a seed on 2 cores).

    reg: L2 weight on the batch's ego embeddings. batch_size: BPR triples per step;
        every step propagates the whole graph, so a large batch is what keeps it fast.
    epochs/eval_every/patience: see `Schedule`.
    """

    dim: Positive = 64
    layers: NonNegative = 3
    lr: Rate = 5e-3
    reg: Weight = 1e-4
    batch_size: Positive = 4096
    epochs: Positive = 400
    eval_every: Positive = 5
    patience: Positive = 10


@dataclass(config=STRICT)
class SASRecConfig(Schedule, SASRecShape):
    """SASRec (training/sasrec.py): its shape (`face_app.sequential.SASRecShape`: dim, layers, heads, max_len,
    dropout, ffn_mult) and how it is trained; defaults tuned on ML-100k valid NDCG@10 (about 5 min a seed on
    2 cores).

    max_len: history items the model sees (longer histories are cut into windows of
        this length for training, and truncated to the newest `max_len` for scoring).
    ffn_mult: feed-forward width as a multiple of `dim` (1 as in the SASRec paper).
    batch_size: windows per step. epochs/eval_every/patience: see `Schedule`.
    window_stride: a training window starts every this many items (None: every max_len); under max_len every
        target keeps at least max_len - stride items of context (training/sasrec.py `training_windows`).
    style: `sasrec` (pre-LayerNorm, the project's) or `recbole` (RecBole's post-LayerNorm blocks, embedding
        LayerNorm, positions from the oldest item; `face_app.sequential`).
    """

    lr: Rate = 1e-3
    weight_decay: Weight = 0.0
    batch_size: Positive = 128
    epochs: Positive = 120
    eval_every: Positive = 5
    patience: Positive = 10
    window_stride: Positive | None = None
    style: Literal["sasrec", "recbole"] = "sasrec"


@dataclass(config=STRICT)
class CFConfig:
    """Stage `cf`: the baselines, each trained once per seed."""

    models: list[Literal["Pop", "LightGCN", "SASRec"]] = field(default_factory=lambda: ["Pop", "LightGCN", "SASRec"])
    seeds: Annotated[list[int], Field(min_length=1)] = field(default_factory=lambda: [0, 1, 2])
    lightgcn: LightGCNConfig = field(default_factory=LightGCNConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)


# The terms a film card's learned order weighs (`training.readout.card_features`; `FACEConfig.display_card_weights`).
CARD_FEATURES = ("genre", "name", "lm", "title", "era", "own", "near", "generic", "word")


@dataclass(config=STRICT)
class FACEConfig(Schedule):
    """Stage `face` (training/face.py): FACE descriptors trained jointly with LightGCN, one run per cf seed.

    k: descriptors per entity. warm_start: start the projection from the ridge regression of
        each entity's profile keywords on its CF embedding (FACE: orthogonal init); see face.md.
    map_epochs: passes over all users and items fitting the
        projection and decoder to the fixed, pretrained CF embeddings by gradient (0: the
        warm start is the map phase). Then the joint
        phase: `epochs` LightGCN epochs (BPR batches of cf.lightgcn.batch_size) with the
        FACE losses on `entities_per_step` random users and items per step, the alignment
        on `align_entities` of them; validated and stopped as `Schedule` says.
    lr: FACE module learning rate (FACE: 1e-3, which undoes the warm start here); cf_lr:
        the CF tables' (FACE: a tenth of the module's, 1e-4).
    vq_weight / recons_weight / align_weight: weights of the commitment, reconstruction
        and InfoNCE alignment losses (FACE: 1, 1, 0.1); temperature: InfoNCE's (FACE: 0.02).
    distinct_stems: no two descriptors of one entity share a stem (`face_app.descriptors.word_stem`:
        explore / exploring / exploration are one choice); false: only no word twice.
    vocabulary: `describing` (training/vocabulary.py: one word per lemma in American spelling, nouns and
        adjectives, the `vocabulary_share` of them closest to the catalog's profiles) or `all` (the codebook).
    faithfulness_draws: how many times the faithfulness baseline draws its random words
        (`training.vocabulary.faithfulness`; 20 steadies the users' ratio, a small test build takes fewer).
    domain_words: add the genre and era words the codebook lacks because SmolLM2 reads them in several pieces
        ("thriller", "noir", "sixties"; `training.vocabulary.domain_words`) to the vocabulary, whatever its rule.
    hub_penalty: weight of the CSLS hub correction in the read-out (`face_app.descriptors.hub_penalty`, over
        each word's `hub_neighbours` closest concepts after training; 0: plain nearest word).
    mode: `joint` (LightGCN and FACE trained together, as the paper) or `readout` (training/readout.py: the
        read-out alone on the frozen LightGCN, for words; LightGCN+FACE then scores as LightGCN).
    profiles: the alignment targets, `basic` (title, year, genres; demographics and recent titles) or `rich`
        (training/profiles.py: also the decade, the titles watched with it and its audience; a user's is the mean
        of their history's item profiles), or `rich-items` (rich for items, basic for users).
    suitable: drop unsuitable words from the vocabulary and keep sensitive ones off users and off films whose
        data does not name them (training/suitability.py). vocabulary `film`: `describing`'s forms ranked by how
        much closer they come to one genre than to the others (`film_words`), not by raw closeness to every
        profile.
    display_candidates / display_min_words / display_min_fit / display_user_genres / display_closeness /
        exposure_cap: the display
        rule of `readout` mode. centre: the read-out subtracts the mean item embedding before it normalises
        (`ConceptProjection.centre`: concepts then say how an entity differs from the average film).
        film_share_cap: a word other than a genre word sits on at most this share of the films (1: no cap).
        (`face_app.descriptors.Display`, training/readout.py).
    display_item_neighbours: a film's candidates are also its CF neighbours' (the concepts of its nearest films in
        LightGCN's item space, by cosine): what the embedding's neighbourhood means, for films whose own
        embedding, read from a handful of ratings, says little (0: its own concepts alone).
    display_genre_rule: which genres a user's and a visitor's words are measured against (`Display.genre_rule`).
    display_item_candidates / display_item_min_words / display_item_min_fit: a film card's candidates per concept,
        least words and threshold (0 / 0 / None: display_candidates / display_min_words / display_min_fit, which
        then count for users and visitors alone).
    display_name_weight / display_card_weight: the display's terms for the genres' names and, for users and
        visitors, the history's cards (`Display`); display_lm: the base model whose reading of each film's title
        reorders a card's candidates (training/film_knowledge.py; `smollm2`, `tiny-random` in tests, or `none`),
        weighted by display_lm_weight.
    display_title_weight: a film card's term for closeness to the film's own title (`training.film_knowledge.
        title_word_scores`: "poetry" for Dead Poets Society, "pond" for On Golden Pond), centred per word.
    display_era_weight: a film card's term for the word of the film's decade ("sixties" for a 1965 film; the
        issue's rule counts an era as fitting), added to that word alone and only where it is among the card's
        candidates (what the embedding's concepts come near), so no card gets its decade from the data alone.
    display_card_centre: for users and visitors, how much of the catalog users' mean card share is taken off each
        word's card share (`Display.card_prior`): 1 orders a history's words by how much more its films' cards
        show them than an average user's, so that "drama" and "action", on most histories' cards, give way to the
        words that set the taste apart (0: the card share itself).
    display_card_recent: the card share of a user or a visitor over their latest N films (`Display.card_recent`;
        0: the whole history); the LLM's prompt reads the latest `tune.max_history`.
    display_card_weights: a film card's order learned from judged marks (`bench.display_learn`): a bias and a weight
        per `training.readout.CARD_FEATURES` term; it replaces the hand-set name, LLM, title and era weights for
        cards, and `display_item_min_fit` is then read on its scale (None: the hand-set order).
    display_card_word_prior: the JSON file of the learned order's `word` term (`bench/display-learned.json`: each
        word's prior log-odds of fitting, from the judged marks of other films), read from the working directory.
    display_item_own_genres: a card never shows a genre word of a genre its film is not listed in ("comedy" on The
        English Patient; `training.readout.foreign_genre_words`).
    display_item_first_words: the capped words are shared out in two rounds (`training.readout.read_out_cards`):
        every film, most rated first, takes its first N words before any film takes its N+1st, so that the
        exposure cap spends a word such as "humor" on a little-rated comedy's fourth word rather than on a popular
        comedy's eighth (0: one round, most rated first).
    """

    k: Positive = 8
    distinct_stems: bool = True
    warm_start: bool = True
    map_epochs: NonNegative = 0
    epochs: Positive = 6
    eval_every: Positive = 2
    patience: Positive = 2
    lr: Rate = 1e-4
    cf_lr: Rate = 1e-4
    vq_weight: Weight = 1.0
    recons_weight: Weight = 1.0
    align_weight: Weight = 0.1
    temperature: Rate = 0.02
    entities_per_step: Positive = 64
    align_entities: Positive = 16
    vocabulary: Literal["describing", "film", "all"] = "describing"
    vocabulary_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    domain_words: bool = False
    faithfulness_draws: Positive = 20
    hub_penalty: Weight = 1.0
    hub_neighbours: Positive = 10
    mode: Literal["joint", "readout"] = "joint"
    profiles: Literal["basic", "rich", "rich-items"] = "basic"
    suitable: bool = False
    display_candidates: Positive = 3
    display_min_words: NonNegative = 5
    display_min_fit: float = 0.1
    display_user_genres: Positive = 4
    display_closeness: NonNegative = 0.0
    centre: bool = False
    exposure_cap: Annotated[float, Field(gt=0, le=1)] = 0.05
    film_share_cap: Annotated[float, Field(gt=0, le=1)] = 1.0
    display_item_candidates: NonNegative = 0
    display_item_neighbours: NonNegative = 0
    display_item_min_words: NonNegative = 0
    display_item_min_fit: float | None = None
    display_genre_rule: Literal["lift", "share", "blend"] = "lift"
    display_name_weight: Weight = 0.0
    display_card_weight: Weight = 0.0
    display_lm: str = "none"
    display_lm_weight: Weight = 0.0
    display_title_weight: Weight = 0.0
    display_era_weight: Weight = 0.0
    display_card_centre: Weight = 0.0
    display_card_recent: NonNegative = 0
    display_card_weights: dict[str, float] | None = None
    display_card_word_prior: str | None = None
    display_item_own_genres: bool = False
    display_item_first_words: NonNegative = 0

    @field_validator("display_card_weights")
    @classmethod
    def _known_card_terms(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        known = ("bias", *CARD_FEATURES)
        unknown = sorted(set(value or {}) - set(known))
        if unknown:
            raise ValueError(f"unknown terms {unknown}; the terms are {', '.join(known)}")
        return value


# What the RQ-VAE of the index stage encodes (training/rqvae.py `item_embeddings`).
IndexEmbedding = Literal["text", "text+cf", "lightgcn", "sasrec"]


@dataclass(config=STRICT)
class IndexConfig:
    """Stage `index`: the RQ-VAE that gives every item a code (training/rqvae.py).

    embedding: `text` (MiniLM of title, year, genres), `text+cf` (plus the LightGCN item embedding), or a CF
        model's item embeddings alone: `lightgcn` or `sasrec` (the cf stage's first run).
    levels/codebook_size: code length and codes per level; the last level is re-assigned
        so that no two items share a code (needs at most `codebook_size` items per prefix).
    epochs: passes over the items (mini-batches of `batch_size`).
    """

    embedding: IndexEmbedding = "text"
    levels: Positive = 3
    codebook_size: Annotated[int, Field(ge=2)] = 32
    latent_dim: Positive = 32
    hidden: list[Positive] = field(default_factory=lambda: [256, 128])
    beta: Weight = 0.25
    lr: Rate = 1e-3
    batch_size: Positive = 256
    epochs: Positive = 200
    kmeans_iters: NonNegative = 30
    seed: int = 0
    threads: Threads = 1  # a small MLP: one thread beats two on a busy machine


@dataclass(config=STRICT)
class TuneConfig:
    """Stage `tune`: LoRA tuning of the LLM on LC-Rec's tasks (training/tune.py).

    base_model: `smollm2` (the pinned GGUF), `tiny-random` (tests), a Hub id or a local directory.
    keep_layers: cut the base to its first N decoder layers (None: all; SmolLM2-135M has 30).
    tasks: task -> weight; for `next`, `followup`, `descriptors` the fraction of the training
        (user, target) windows used, for `index_to_title`, `title_to_index`, `intention` passes over the catalog.
    max_history: history items in a prompt (index tokens only unless `titles_in_history`).
    taste: where history examples carry the `<taste>` soft token (the cf stage's SASRec state of the history):
        `prompt` (a `Taste:` line; `true` means this), `answer` (the last input position, where the first
        index token is predicted), or `none` / false.
    distill: weight of the distillation from that SASRec, per index level (0: none); distill_temperature:
        the temperature of its distribution.
    target_modules/layers: where LoRA goes (layers: decoder layer numbers, None: all).
    max_steps: stop after this many optimizer steps (None: `epochs` passes over the task data); the learning
        rate schedule spans them. max_minutes: also stop once training has taken this long (None: no limit),
        so levers can be compared at equal CPU time.
    checkpoint_every: steps between checkpoints (resume after an interruption).
    eval_every / eval_users: every N steps, HR@10 / NDCG@10 on the same `eval_users` valid users; the best
        step by that NDCG@10 is the model kept (None: no curve, the last step is kept).
    precision: `auto` (bf16 where the hardware computes it natively, else fp32: face_app/hardware.py),
        `fp32`, or `bf16` (refused on a CPU without native bf16).
    eval_beams: beam width when scoring the LLM (at least the largest cut-off, 20, so Recall@20 counts only
        generated items).
    init_from: a tuned model directory to start from (e.g. `assets/ml-100k/model`: a shipped bundle's LoRA,
        index rows and taste projection; the same item index and model shape), so a tune survives a new machine.
    """

    base_model: str = "smollm2"
    keep_layers: Positive | None = None
    tasks: dict[str, Weight] = field(
        default_factory=lambda: {"next": 1.0, "followup": 0.1, "descriptors": 0.1, "index_to_title": 1.0,
                                 "title_to_index": 1.0, "intention": 1.0}
    )
    max_history: Positive = 20
    titles_in_history: bool = False
    # Literal, not bool | str: one clear error for a wrong value (face_app.prompts.TASTE_PLACES, and none).
    taste: Literal[True, False, "prompt", "answer", "none"] = False
    distill: Weight = 0.0
    distill_temperature: Rate = 1.0
    max_length: Positive = 256
    lora_r: Positive = 16
    lora_alpha: Positive = 32
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers: list[NonNegative] | None = None
    lr: Rate = 1e-3
    warmup_steps: NonNegative = 50
    batch_size: Positive = 16
    epochs: Positive = 1
    max_steps: Positive | None = None
    max_minutes: Rate | None = None
    checkpoint_every: Positive = 100
    eval_every: Positive | None = None
    eval_users: Positive = 200
    precision: str = "auto"
    log_every: Positive = 10
    eval_beams: int = 20
    init_from: str | None = None
    seed: int = 0
    threads: Threads = None  # torch threads for tuning and LLM decoding in eval (None: the build's `threads`)

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"must be one of {', '.join(PRECISIONS)}")
        return value

    @field_validator("eval_beams")
    @classmethod
    def _beams_cover_every_cutoff(cls, value: int) -> int:
        if value < LARGEST_CUTOFF:
            raise ValueError(f"must be at least {LARGEST_CUTOFF}, the largest evaluation cut-off "
                             "(training.metrics.METRICS)")
        return value


@dataclass(config=STRICT)
class EvalConfig:
    batch_size: Positive = 256


@dataclass(config=STRICT)
class ExportConfig:
    """Stage `export`: where the bundle goes and how many test users it offers as personas.

    out: output directory; `{name}` is the config name, `{workdir}` the build's workdir.
    conversations: scripted chats (name -> the visitor's messages) run on the exported bundle and quoted
        verbatim in its model card (training/card.py).
    """

    out: str = "assets/{name}"
    personas: NonNegative = 24
    conversations: dict[str, list[str]] = field(default_factory=lambda: {
        "Children's animation": ["I loved Toy Story, Aladdin and The Lion King", "more like the first one",
                                 "something lighter"],
        "Horror": ["I loved Scream, The Shining and A Nightmare on Elm Street", "something darker",
                   "from the 80s"],
        "1940s drama": ["I loved Casablanca, Citizen Kane and It's a Wonderful Life", "from the 40s",
                        "more like the second one"],
    })


@dataclass(config=STRICT)
class Config:
    name: str = "ml-100k"
    data: DataConfig = field(default_factory=DataConfig)
    cf: CFConfig = field(default_factory=CFConfig)
    face: FACEConfig = field(default_factory=FACEConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    threads: Threads = None  # torch intra-op threads; None: torch's default


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` torch intra-op threads (None: leave as is), restoring the count after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ConfigError(ValueError):
    """A config that does not validate; the message is one line naming the file, the key and what is wrong."""


def _key(loc: tuple[Any, ...]) -> str:
    """`cf.lightgcn.lr` from a pydantic error location (list positions as `[i]`, mapping keys as `.key`)."""
    key, cls = "", Config
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
            continue
        key = f"{key}.{part}".lstrip(".")
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        cls = hints.get(part)
    return key


def _describe(error: ValidationError, where: str, overridden: dict[str, str]) -> str:
    """One line for every problem of a validation: `where: key: what (got value)`, joined by `; `."""
    problems: dict[str, str] = {}
    for item in error.errors():
        key = _key(item["loc"])
        if item["type"] == "unexpected_keyword_argument":
            message = "unknown key"
        else:
            message = item["msg"].removeprefix("Value error, ")
            message += f" (got {item['input']!r})"
        given = [name for name in overridden if key == name or key.startswith((f"{name}.", f"{name}["))]
        if given:
            message += f" from --set {given[0]}={overridden[given[0]]}"
        problems.setdefault(key, message)
    text = "; ".join(f"{key}: {message}" for key, message in problems.items())
    return f"{where}: {text}".replace("\n", " ")


def _set_path(values: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}={raw}: {key} is a value, not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {dotted}={raw}: not a YAML value ({' '.join(str(error).split())})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply `key.sub=value` overrides (values parsed as YAML) and validate the result.

    Raises ConfigError (a ValueError) with one line naming the file and each wrong key.
    """
    where = str(path) if path is not None else "defaults"
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping")
    overridden: dict[str, str] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = (part.strip() for part in item.split("=", 1))
        _set_path(values, dotted, raw)
        overridden[dotted] = raw
    try:
        return Config(**values)
    except ValidationError as error:
        raise ConfigError(_describe(error, where, overridden)) from None
    except TypeError as error:  # a section given as a value (`cf: 3`) before pydantic sees it
        raise ConfigError(f"{where}: {error}") from None


def config_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (for reports and manifests)."""
    return dataclasses.asdict(config)


# The config sections each stage's output depends on (its own and those of the stages it reads).
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "cf": ("data", "cf"),
    "face": ("data", "cf", "face"),
    "index": ("data", "cf", "index"),
    "tune": ("data", "cf", "face", "index", "tune"),
    "eval": ("data", "cf", "face", "index", "tune", "eval"),
    "export": ("name", "data", "cf", "face", "index", "tune", "eval", "export"),
}


# Settings added after workdirs were built, at the value those builds had: left out of the stage hashes (and of the
# cf runs' keys, `run_key`) at that value, so that a stage or run built before the setting existed is
# still done.
ADDED_LATER: dict[tuple[str, ...], Any] = {("cf", "sasrec", "style"): "sasrec"}


def without_added_later(values: dict[str, Any], within: tuple[str, ...] = ()) -> dict[str, Any]:
    """`values` (the config as plain data, or its section at `within`) without the `ADDED_LATER` settings that hold
    their earlier value; a copy."""
    values = copy.deepcopy(values)
    for path, earlier in ADDED_LATER.items():
        if path[:len(within)] != within:
            continue
        *parents, leaf = path[len(within):]
        node = values
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict) and leaf in node and node[leaf] == earlier:
            del node[leaf]
    return values


def config_hash(config: Config, stage: str | None = None) -> str:
    """Short stable hash of the config sections `stage` depends on (None: the whole config), `ADDED_LATER` settings
    at their earlier value left out."""
    values = without_added_later(config_dict(config))
    if stage is not None:
        values = {key: values[key] for key in DEPENDS_ON[stage]}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_key(name: str, config: Config) -> dict[str, Any]:
    """What a finished cf run of model `name` depends on (`training.cf` reuses a run by it, `training.tune` checks
    its teacher by it): the data selection and the model's own settings, those added after runs were trained left
    out at their earlier value (`ADDED_LATER`), so those runs and their per-epoch checkpoints are still the same
    run."""
    sections = {"LightGCN": ("lightgcn", config.cf.lightgcn), "SASRec": ("sasrec", config.cf.sasrec)}
    section, settings = sections.get(name, (None, None))
    model_config = without_added_later(dataclasses.asdict(settings), ("cf", section)) if settings else {}
    return {"data": dataclasses.asdict(config.data), "model": model_config}
