"""Build configuration: YAML files loaded into typed dataclasses.

Layering: dataclass defaults <- YAML file <- `--set section.key=value` overrides
from the command line. Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import torch
import yaml

from face_app.sequential import SASRecShape


@dataclass
class DataConfig:
    """Which dataset to read and how to filter it.

    source: a pinned dataset (`ml-100k`, `ml-1m`) or a reader (`recbole`,
        `grouplens-100k`, `grouplens-1m`, `amazon2018`) with `paths`.
    max_users: keep only the first N users in id order (small test configs).
    """

    source: str = "ml-100k"
    paths: dict[str, str] | None = None
    max_users: int | None = None
    min_user_interactions: int = 0
    min_item_interactions: int = 0


@dataclass
class LightGCNConfig:
    """LightGCN (training/cf.py); defaults tuned on ML-100k valid NDCG@10 (1-2 min a seed on 2 cores).

    reg: L2 weight on the batch's ego embeddings. batch_size: BPR triples per step;
        every step propagates the whole graph, so a large batch is what keeps it fast.
    eval_every/patience: validate every N epochs; stop after `patience` validations
        without improvement and keep the best.
    """

    dim: int = 64
    layers: int = 3
    lr: float = 5e-3
    reg: float = 1e-4
    batch_size: int = 4096
    epochs: int = 400
    eval_every: int = 5
    patience: int = 10


@dataclass
class SASRecConfig(SASRecShape):
    """SASRec (training/sasrec.py): its shape (`face_app.sequential.SASRecShape`: dim, layers, heads, max_len,
    dropout, ffn_mult) and how it is trained; defaults tuned on ML-100k valid NDCG@10 (about 5 min a seed on
    2 cores).

    max_len: history items the model sees (longer histories are cut into windows of
        this length for training, and truncated to the newest `max_len` for scoring).
    ffn_mult: feed-forward width as a multiple of `dim` (1 as in the SASRec paper).
    batch_size: windows per step.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 120
    eval_every: int = 5
    patience: int = 10


@dataclass
class CFConfig:
    """Stage `cf`: the baselines, each trained once per seed."""

    models: list[str] = field(default_factory=lambda: ["Pop", "LightGCN", "SASRec"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lightgcn: LightGCNConfig = field(default_factory=LightGCNConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)


@dataclass
class FACEConfig:
    """Stage `face` (training/face.py): FACE descriptors trained jointly with LightGCN, one run per cf seed.

    k: descriptors per entity. warm_start: start the projection from the ridge regression of
        each entity's profile keywords on its CF embedding (FACE: orthogonal init); see face.md.
    map_epochs: passes over all users and items fitting the
        projection and decoder to the fixed, pretrained CF embeddings by gradient (0: the
        warm start is the map phase). Then the joint
        phase: `epochs` LightGCN epochs (BPR batches of cf.lightgcn.batch_size) with the
        FACE losses on `entities_per_step` random users and items per step, the alignment
        on `align_entities` of them; validated every `eval_every` epochs, stopped after
        `patience` validations without improvement.
    lr: FACE module learning rate (FACE: 1e-3, which undoes the warm start here); cf_lr:
        the CF tables' (FACE: a tenth of the module's, 1e-4).
    vq_weight / recons_weight / align_weight: weights of the commitment, reconstruction
        and InfoNCE alignment losses (FACE: 1, 1, 0.1); temperature: InfoNCE's (FACE: 0.02).
    distinct_stems: no two descriptors of one entity share a stem (`face_app.descriptors.word_stem`:
        explore / exploring / exploration are one choice); false: only no word twice.
    """

    k: int = 8
    distinct_stems: bool = True
    warm_start: bool = True
    map_epochs: int = 0
    epochs: int = 6
    eval_every: int = 2
    patience: int = 2
    lr: float = 1e-4
    cf_lr: float = 1e-4
    vq_weight: float = 1.0
    recons_weight: float = 1.0
    align_weight: float = 0.1
    temperature: float = 0.02
    entities_per_step: int = 64
    align_entities: int = 16


@dataclass
class IndexConfig:
    """Stage `index`: the RQ-VAE that gives every item a code (training/rqvae.py).

    embedding: `text` (MiniLM of title, year, genres), `text+cf` (plus the LightGCN item embedding), or a CF
        model's item embeddings alone: `lightgcn` or `sasrec` (the cf stage's first run).
    levels/codebook_size: code length and codes per level; the last level is re-assigned
        so that no two items share a code (needs at most `codebook_size` items per prefix).
    epochs: passes over the items (mini-batches of `batch_size`).
    """

    embedding: str = "text"
    levels: int = 3
    codebook_size: int = 32
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    beta: float = 0.25
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 200
    kmeans_iters: int = 30
    seed: int = 0
    threads: int | None = 1  # a small MLP: one thread beats two on a busy machine


@dataclass
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
    eval_beams: beam width when scoring the LLM (>= 20, so Recall@20 counts only generated items).
    init_from: a tuned model directory to start from (e.g. `assets/ml-100k/model`: a shipped bundle's LoRA,
        index rows and taste projection; the same item index and model shape), so a tune survives a new machine.
    """

    base_model: str = "smollm2"
    keep_layers: int | None = None
    tasks: dict[str, float] = field(
        default_factory=lambda: {"next": 1.0, "followup": 0.1, "descriptors": 0.1, "index_to_title": 1.0,
                                 "title_to_index": 1.0, "intention": 1.0}
    )
    max_history: int = 20
    titles_in_history: bool = False
    taste: bool | str = False
    distill: float = 0.0
    distill_temperature: float = 1.0
    max_length: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers: list[int] | None = None
    lr: float = 1e-3
    warmup_steps: int = 50
    batch_size: int = 16
    epochs: int = 1
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_every: int = 100
    eval_every: int | None = None
    eval_users: int = 200
    precision: str = "auto"
    log_every: int = 10
    eval_beams: int = 20
    init_from: str | None = None
    seed: int = 0
    threads: int | None = None  # torch threads for tuning and LLM decoding in eval (None: the build's `threads`)


@dataclass
class EvalConfig:
    batch_size: int = 256


@dataclass
class ExportConfig:
    """Stage `export`: where the bundle goes and how many test users it offers as personas.

    out: output directory; `{name}` is the config name, `{workdir}` the build's workdir.
    conversations: scripted chats (name -> the visitor's messages) run on the exported bundle and quoted
        verbatim in its model card (training/card.py).
    """

    out: str = "assets/{name}"
    personas: int = 24
    conversations: dict[str, list[str]] = field(default_factory=lambda: {
        "Children's animation": ["I loved Toy Story, Aladdin and The Lion King", "more like the first one",
                                 "something lighter"],
        "Horror": ["I loved Scream, The Shining and A Nightmare on Elm Street", "something darker",
                   "from the 80s"],
        "1940s drama": ["I loved Casablanca, Citizen Kane and It's a Wonderful Life", "from the 40s",
                        "more like the second one"],
    })


@dataclass
class Config:
    name: str = "ml-100k"
    data: DataConfig = field(default_factory=DataConfig)
    cf: CFConfig = field(default_factory=CFConfig)
    face: FACEConfig = field(default_factory=FACEConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    threads: int | None = None  # torch intra-op threads; None: torch's default


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


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from a nested dict, rejecting unknown keys."""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)} in {where or 'top level'}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _build(hint, value, f"{where}.{name}".lstrip("."))
        kwargs[name] = value
    return cls(**kwargs)


def _set_path(values: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config and apply `key.sub=value` overrides (values parsed as YAML)."""
    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping")
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        _set_path(values, dotted.strip(), raw)
    return _build(Config, values, "")


def config_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (for reports and manifests)."""
    return dataclasses.asdict(config)
