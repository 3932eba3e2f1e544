"""The LLM turn in other weight formats and with fewer beams: latency, and agreement with the shipped setting.

    python -m bench.formats --bundle assets/ml-100k --workdir runs/ml-100k --users 40 --threads 1 \\
        --out bench/formats.json
    python -m bench.formats --bundle assets/ml-100k --workdir runs/ml-100k --users 200 --threads 1 \\
        --rows beams --beams 9,8 --out bench/beams.json

Every row decodes the same prompts: the LLM arm's own prompt (`face_app.arms.GeneratorRecommender`) for `--users`
seeded test users' histories (`--workdir`'s split), with the history excluded, the history's FACE descriptors
in the prompt and the history's intent prior in the search (`face_app.picking.Intent`, at the engine's weight
and boost), exactly as a chat turn asks.
The reference is fp32 weights and 10 beams (the chat's setting until 9 beams were adopted from this bench's
beam rows, `bench/beams.json`). Rows:

- weight formats at 10 beams, top-10: `int8` (`torch.ao.quantization.quantize_dynamic` on every `nn.Linear`,
  the LM head included: int8 weights, activations quantized per call; runs on fbgemm/onednn kernels on any x86),
  `int8-layers` (the same on the decoder layers only, the LM head in fp32) and `bf16` (the weights cast to
  bfloat16: fast only where the CPU has native bf16, `face_app.hardware`);
- beams at fp32, top-5 (the chat's default of 5 picks; 10 picks need 10 beams): `--beams`, 8, 6 and 5 by
  default;
- `--rows precision`: the served search as the app runs it on a CPU with native bf16, the chat's 9 beams and 5
  picks with the model's products in bf16 under autocast (`ItemGenerator.use_precision`: fp32 weights, norms,
  softmax and beam sums), against the same in fp32.

`--rows` runs only the format rows, only the beam rows or only the precision rows (each with its own reference).

Per row: the median and 90th percentile of a turn's decoding time, and its agreement with the reference: the
mean share of the reference's top-k that the row also returns (`overlap`), and the share of turns whose
list is identical, order included. The machine and the load average go with the result.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from bench.__main__ import git_commit
from bench.ranking import sessions
from face_app import hardware
from face_app.bundle import Bundle
from face_app.dialogue import ConversationState
from face_app.engine import Engine
from training.data import SplitData

REFERENCE = ("fp32", 10)
FORMATS = ("int8", "int8-layers", "bf16")
BEAM_COUNTS = (8, 6, 5)


def convert(model: torch.nn.Module, fmt: str) -> torch.nn.Module:
    """A copy of `model` in `fmt` (`fp32`, `int8`, `int8-layers`, `bf16`; `bf16-autocast`: the model itself)."""
    if fmt in ("fp32", "bf16-autocast"):  # autocast keeps the fp32 weights (`ItemGenerator.use_precision`)
        return model
    if fmt == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16)
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao; it still works
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        converted = copy.deepcopy(model)
        if fmt == "int8-layers":  # the decoder layers only: the LM head keeps fp32 logits over the vocabulary
            converted.get_decoder().layers = quantize_dynamic(converted.get_decoder().layers, {torch.nn.Linear},
                                                              dtype=torch.qint8)
            return converted
        return quantize_dynamic(converted, {torch.nn.Linear}, dtype=torch.qint8)


def decode_all(engine: Engine, histories: list[list[str]], k: int,
               beams: int) -> tuple[list[list[str]], list[float]]:
    """Each history's top-k (item ids) and seconds: the LLM arm's prompt with the history's descriptors, its
    intent prior, the history excluded."""
    tops, seconds = [], []
    arm = engine.recommenders["llm"]
    arm.beams = beams
    for history in histories:
        state = ConversationState()
        state.add_history(history)
        words = engine.user_descriptors(state)
        bonus = engine.intent.bonus(engine.intent.mixes(history), engine.intent_llm, engine.boost_llm)
        start = time.perf_counter()
        ranked = arm.rank(history, words, None, set(history), k, bonus)
        seconds.append(time.perf_counter() - start)
        tops.append([item_id for item_id, _ in ranked])
    return tops, seconds


def agreement(rows: list[list[str]], reference: list[list[str]], k: int) -> dict[str, float]:
    overlap = [len(set(a[:k]) & set(b[:k])) / k for a, b in zip(rows, reference, strict=True)]
    same = [a[:k] == b[:k] for a, b in zip(rows, reference, strict=True)]
    return {"overlap": statistics.fmean(overlap), "identical": statistics.fmean(same)}


def timing(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"median_s": statistics.median(ordered), "p90_s": ordered[int(0.9 * (len(ordered) - 1))]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--workdir", type=Path, default=Path("runs/ml-100k"))
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", choices=("all", "formats", "beams", "precision"), default="all")
    parser.add_argument("--beams", default=",".join(map(str, BEAM_COUNTS)), help="beam counts to try at top-5")
    parser.add_argument("--out", type=Path, default=Path("bench/formats.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    histories, _ = sessions(SplitData.load(args.workdir / "data"), "test", args.users)
    engine = Engine.from_bundle(Bundle.load(args.bundle), n=10)
    generator = engine.recommenders["llm"].generator
    fp32 = generator.model
    load = os.getloadavg()[0]
    rows = []

    def run(fmt: str, beams: int, k: int, reference: list[list[str]] | None) -> list[list[str]]:
        generator.model = convert(fp32, fmt)
        generator.use_precision("bf16" if fmt == "bf16-autocast" else "fp32")
        generator.forget_prefixes()
        decode_all(engine, histories[:2], k, beams)  # warm-up: the header cache, first-call allocations
        tops, seconds = decode_all(engine, histories, k, beams)
        row = {"format": fmt, "beams": beams, "k": k, **timing(seconds),
               **(agreement(tops, reference, k) if reference is not None else {"overlap": 1.0, "identical": 1.0})}
        rows.append(row)
        print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()}), flush=True)
        return tops

    if args.rows in ("all", "formats"):
        reference10 = run(*REFERENCE, 10, None)
        for fmt in FORMATS:
            if fmt == "bf16" and not hardware.native_bf16():
                print("[formats] bf16 skipped: this CPU has no native bf16 (it would run many times slower)")
                continue
            run(fmt, REFERENCE[1], 10, reference10)
    if args.rows in ("all", "beams"):
        reference5 = run(*REFERENCE, 5, None)
        for beams in (int(b) for b in args.beams.split(",")):
            run(REFERENCE[0], beams, 5, reference5)
    if args.rows == "precision":
        if not hardware.native_bf16():
            print("[formats] bf16 skipped: this CPU has no native bf16 (it would run many times slower)")
        else:
            served = engine.recommenders["llm"].beams
            reference = run(REFERENCE[0], served, 5, None)
            run("bf16-autocast", served, 5, reference)
    generator.model = fp32
    generator.use_precision("fp32")
    generator.forget_prefixes()
    result = {"command": " ".join(["python -m bench.formats", *(sys.argv[1:] if argv is None else argv)]),
              "commit": git_commit(), "intent": {"weight": engine.intent_llm, "boost": engine.boost_llm},
              "bundle": str(args.bundle), "users": len(histories), "threads": args.threads, "load_at_start": load,
              "load_at_end": os.getloadavg()[0], "machine": hardware.machine(), "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[formats] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
