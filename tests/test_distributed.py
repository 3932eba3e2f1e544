"""Data-parallel tuning (training/launch.py, `Tuning.run`): the objective weights each process's share of a step
so that DDP's averages are the whole step's loss and gradient; two CPU processes joined by gloo under torchrun,
on the tiny config's data, tune as one process does with twice their batch; process 0 writes the checkpoint, and
after one process is killed a new launch resumes from it on every process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tune import tiny_config, tuning_parts

from training import tasks, tune
from training.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
# configs/tiny.yaml with a short cf (only the SASRec that the tune's taste and distillation read) and a short tune
# in fp32 (bf16, chosen on a CPU with AMX, would round the two runs apart). Dropout needs no setting: the LoRA
# dropout is 0 (training/tune.py) and so is the tiny random Llama's attention dropout.
SETTINGS = ["cf.models=[SASRec]", "cf.sasrec.epochs=2", "tune.precision=fp32", "tune.max_steps=8",
            "tune.warmup_steps=2", "tune.checkpoint_every=2", "tune.log_every=1", "tune.eval_every=4",
            "tune.eval_users=8"]
BATCH = 16  # tiny.yaml's batch: one process takes it whole, each of two processes half of it
KILL_AT = 5  # process 1 dies as step 6 begins: after the checkpoint of step 4 and one step more
# Relative tolerance on every logged loss: the two runs differ only in float32 summation order (DDP's average
# of two half-batch gradients against one backward over the whole batch, each half padded to its own longest
# row): 1.5e-7 at most over tiny.yaml's 40 steps when measured. Weighting each process's means alike instead
# of by its tokens and history rows (a mean of means) puts them 4e-4 apart within 8 steps.
TOLERANCE = 1e-5


def test_the_shares_of_a_step_weighted_by_the_objective_average_to_the_whole_steps_loss_and_gradient(
        tmp_path: Path, face_app_cache: Path) -> None:
    config = tiny_config(taste=True, distill=1.0)
    data, index, catalog, teacher, model, tokenizer = tuning_parts(tmp_path, config)
    examples = [e for rows in tasks.build_examples(data, catalog, config.tune).values() for e in rows]
    encoded = tasks.encode(tokenizer, examples, 256)
    # history rows first, so that some shares have none (the taste projection unused there), then item tasks
    rows = [row for row in encoded if row.user is not None][:4] + [row for row in encoded if row.user is None][::7][:3]
    objective = tune.Tuning(model, tokenizer, index, data, rows, config.tune, teacher, tmp_path / "tune").objective
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step(share, shares=None) -> tuple[dict, list[torch.Tensor]]:
        model.zero_grad()
        loss, parts = objective(model, share, tokenizer.pad_token_id, shares)
        loss.backward()
        return {"loss": loss.item(), **parts}, [torch.zeros_like(p) if p.grad is None else p.grad for p in trainable]

    whole, gradient = step(rows)
    for count in (2, 3, 8):  # 8 processes for 7 rows: one process has no row of its own
        shares = [[rows[i] for i in part] for part in np.array_split(np.arange(len(rows)), count)]
        each = [step(share, shares) for share in shares]
        for name, value in whole.items():  # DDP averages the processes' values and gradients
            assert np.mean([values[name] for values, _ in each]) == pytest.approx(value, rel=1e-5), (count, name)
        for n, expected in enumerate(gradient):
            averaged = sum(grads[n] for _, grads in each) / count
            assert torch.allclose(averaged, expected, rtol=1e-4, atol=1e-7), (count, n)


def build(workdir: Path, stages: str, *settings: str) -> None:
    overrides = [part for setting in [*SETTINGS, *settings] for part in ("--set", setting)]
    assert main(["build", "--config", str(TINY), "--workdir", str(workdir), "--stages", stages, *overrides]) == 0


def torchrun(program: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """`python -m training build ... --stages tune` as two CPU processes, each with half the batch."""
    overrides = [part for setting in [*SETTINGS, f"tune.batch_size={BATCH // 2}"] for part in ("--set", setting)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *program,
               "build", "--config", str(TINY), "--workdir", str(workdir), "--stages", "tune", *overrides]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)


def training_record(workdir: Path) -> dict:
    return json.loads((workdir / "tune" / "model" / "generator.json").read_text())["training"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory, face_app_cache: Path) -> Path:
    """A workdir with the tiny config's data, cf and index stages: what the tune stage reads."""
    workdir = tmp_path_factory.mktemp("stages")
    build(workdir, "data,cf,index")
    return workdir


@pytest.fixture(scope="module")
def one_process(stages: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The training record of the tune in one process with the whole batch."""
    workdir = tmp_path_factory.mktemp("one") / "run"
    shutil.copytree(stages, workdir)
    build(workdir, "tune", f"tune.batch_size={BATCH}")
    return training_record(workdir)


@pytest.fixture(scope="module")
def killed_and_resumed(stages: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two processes with half the batch each, process 1 killed after step KILL_AT; then a new launch of both."""
    workdir = tmp_path_factory.mktemp("two") / "run"
    shutil.copytree(stages, workdir)
    killed = torchrun([str(ROOT / "tests" / "killed_rank.py"), str(KILL_AT)], workdir)
    after_kill = {"returncode": killed.returncode, "model": (workdir / "tune" / "model").exists(),
                  "checkpoint": json.loads((workdir / "tune" / "checkpoint" / "state.json").read_text())}
    resumed = torchrun(["-m", "training"], workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"after_kill": after_kill, "output": resumed.stdout, "record": training_record(workdir)}


def test_a_killed_process_ends_the_launch_and_leaves_the_checkpoint_process_0_wrote(killed_and_resumed) -> None:
    after_kill = killed_and_resumed["after_kill"]
    assert after_kill["returncode"] != 0 and not after_kill["model"]
    checkpoint = after_kill["checkpoint"]
    assert checkpoint["step"] == 4  # the last multiple of checkpoint_every before the kill
    assert [h["step"] for h in checkpoint["history"]] == [1, 2, 3, 4]
    assert [v["step"] for v in checkpoint["valid"]] == [4]


def test_a_new_launch_resumes_from_the_checkpoint_and_only_process_0_reports(killed_and_resumed) -> None:
    output = killed_and_resumed["output"]
    assert output.count("[tune] resuming from step 4 ") == 1
    assert output.count("outputs in ") == 1
    assert output.count("[tune] step 8: valid HR@10") == 1


def test_two_processes_follow_one_process_with_twice_the_batch(killed_and_resumed, one_process) -> None:
    two = killed_and_resumed["record"]
    assert [h["step"] for h in two["loss_history"]] == [h["step"] for h in one_process["loss_history"]] == [
        1, 2, 3, 4, 5, 6, 7, 8]
    for mine, reference in zip(two["loss_history"], one_process["loss_history"], strict=True):
        assert set(mine) == set(reference)  # the parts: level_1..3, text, distill
        for name, value in reference.items():
            assert mine[name] == pytest.approx(value, rel=TOLERANCE), (mine["step"], name)
    curve = [h["loss"] for h in one_process["loss_history"]]
    assert curve[-1] < curve[0] - 100 * TOLERANCE * curve[0]  # the curve moves: the comparison means something
    without_time = [[{k: v for k, v in row.items() if k != "seconds"} for row in record["valid_curve"]]
                    for record in (two, one_process)]
    assert [row["step"] for row in without_time[0]] == [4, 8]
    assert without_time[0] == without_time[1]  # the valid users shared out, the same metrics gathered
    assert two["best"] == one_process["best"]
