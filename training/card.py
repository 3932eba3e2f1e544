"""The bundle's model card, `<bundle>/README.md`: how it was built, what it scores, and how it talks.

Written by the export stage from the build's report (every number is read from `report.json`, the
stage timings and machine records of the workdir) and from scripted conversations run through the
app's own engine on the exported bundle, so what the card quotes is what a visitor gets. The card
is listed in the bundle's manifest like every other file.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import yaml

from face_app import bundle as fmt
from face_app.dialogue import ConversationState
from training.config import Config, config_dict
from training.report import descriptors_section, read_report, read_timings, results_table

CARD_FILE = "README.md"
MACHINES_FILE = "machines.json"
# (model, reference, goal, whether a tie meets it)
GOALS = (("LLM", "SASRec", "the tuned LLM at or above SASRec", True),
         ("LightGCN+FACE", "LightGCN", "LightGCN+FACE above LightGCN", False))
FAITHFULNESS_GOAL = 10.0  # descriptors retrieve their own profile this many times better than random words


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, accelerator, Python and torch versions of the machine running this."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total = next((line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal")), "")
        memory = round(int(total.split()[1]) / 2**20, 1) if total else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__}


def machine_text(machine: dict[str, Any]) -> str:
    accelerator = machine.get("gpu") or "no GPU"
    return (f"{machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, {accelerator}; "
            f"Python {machine.get('python')}, torch {machine.get('torch')}")


def record_machine(workdir: Path, stage: str) -> None:
    """Note in `<workdir>/machines.json` which machine ran `stage` (the card reports it)."""
    path = workdir / MACHINES_FILE
    machines = json.loads(path.read_text()) if path.exists() else {}
    machines[stage] = describe_machine()
    path.write_text(json.dumps(machines, indent=2))


def goal_lines(report: dict[str, Any]) -> list[str]:
    """Each DESIGN.md quality goal, measured: met, or missed by how much."""
    models = report.get("models", {})
    lines = []
    for model, reference, goal, tie_meets in GOALS:
        if model not in models or reference not in models:
            lines.append(f"- {goal}: not measured in this build ({model} or {reference} missing).")
            continue
        parts = []
        for metric in ("HR@10", "NDCG@10"):
            mine, theirs = models[model][metric], models[reference][metric]
            if mine > theirs or (tie_meets and mine == theirs):
                verdict = "met"
            elif mine == theirs:
                verdict = "missed (equal)"
            else:
                verdict = f"missed by {theirs - mine:.4f} ({(theirs - mine) / theirs:.0%})"
            parts.append(f"{metric} {mine:.4f} vs {theirs:.4f}: {verdict}")
        lines.append(f"- {goal}: " + "; ".join(parts) + ".")
    found = report.get("descriptors")
    if found:
        ratio = found["hit@10"] / found["random_hit@10"] if found["random_hit@10"] else float("inf")
        verdict = "met" if ratio >= FAITHFULNESS_GOAL else f"missed ({ratio / FAITHFULNESS_GOAL:.0%} of the goal)"
        lines.append(f"- Descriptors retrieve their own profile at least {FAITHFULNESS_GOAL:.0f}x better than random "
                     f"words: hit@10 {found['hit@10']:.4f} vs {found['random_hit@10']:.4f}, {ratio:.2f}x: {verdict}.")
    return lines


def index_lines(report: dict[str, Any]) -> list[str]:
    index = report.get("index")
    if not index:
        return []
    usage = ", ".join(f"{u:.2f}" for u in index.get("code_usage", []))
    return ["", "## Item indices", "",
            f"{index['levels']} levels of {index['codebook_size']} codes (RQ-VAE, collision-free last level): "
            f"{index['collisions']} collisions, code usage per level {usage}, reconstruction loss "
            f"{index['recon_loss']:.4f}."]


def build_lines(config: Config, workdir: Path) -> list[str]:
    """The command, the time and machine per stage, and the config."""
    timings = read_timings(workdir)
    machines_path = workdir / MACHINES_FILE
    machines = json.loads(machines_path.read_text()) if machines_path.exists() else {}
    lines = ["## How it was built", "",
             "```",
             f"python -m training build --config configs/{config.name}.yaml --workdir runs/{config.name}",
             "```", "",
             "Each stage checkpoints or resumes; a stage finished by an earlier session is not run again, so the "
             "stages below may have run in several sessions. Wall time per stage (the export stage, which writes "
             "this card, is not in it):", "",
             "| stage | seconds | machine |", "|---|---|---|"]
    for stage, seconds in timings.items():
        machine = machines.get(stage)
        lines.append(f"| {stage} | {seconds:.1f} | {machine_text(machine) if machine else 'not recorded'} |")
    lines += [f"| total | {sum(timings.values()):.1f} | |", "", "The config:", "", "```yaml",
              yaml.safe_dump(config_dict(config), sort_keys=False).rstrip(), "```"]
    return lines


def conversation_lines(engine, name: str, messages: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Run one scripted conversation through the engine; the transcript as markdown and a summary."""
    state = ConversationState()
    lines = ["", f"### {name}", ""]
    shown: list = []
    for message in messages:
        reply = engine.respond(state, message)
        lines += [f"**Visitor:** {message}", "", f"**face-app:** {reply.text}", ""]
        for rec in reply.recommendations:
            year = f" ({rec.year})" if rec.year else ""
            lines.append(f"{rec.rank}. {rec.title}{year} · {', '.join(rec.genres)} · `{rec.tokens}` · "
                         f"{', '.join(rec.descriptors)} · by {rec.source}")
            shown.append(rec)
        if reply.user_descriptors:
            lines += ["", f"Visitor's descriptors: {', '.join(reply.user_descriptors)}"]
        lines.append("")
    history = [engine.catalog.item(i) for i in state.history]
    genres, decades = {g for item in history for g in item.genres}, {decade(item.year) for item in history}
    sharing = sum(bool(set(rec.genres) & genres) for rec in shown)
    on_theme = sum(bool(set(rec.genres) & genres) or decade(rec.year) in decades - {None} for rec in shown)
    by_llm = sum(rec.source == "llm" for rec in shown)
    summary = {"history": len(state.history), "recommended": len(shown), "share_a_genre": sharing,
               "genre_or_decade": on_theme, "by_llm": by_llm}
    lines.append(f"{sharing} of {len(shown)} recommendations share a genre with the visitor's history, {on_theme} a "
                 f"genre or a decade; {by_llm} came from the LLM.")
    return lines, summary


def decade(year: int | None) -> int | None:
    return None if year is None else year // 10 * 10


def conversations(bundle_dir: Path, scripts: dict[str, list[str]]) -> tuple[list[str], dict[str, Any]]:
    """Every scripted conversation, on the bundle as the app loads it."""
    from face_app.bundle import Bundle
    from face_app.engine import Engine

    engine = Engine.from_bundle(Bundle.load(bundle_dir))
    lines = ["", "## Conversations", "",
             f"Verbatim, from the app's engine on this bundle (recommender: {engine.default}); each card line is "
             "title, genres, index tokens, the item's descriptors and the recommender that proposed it. The "
             f"engine orders the recommender's pool and the CF neighbours of the newest {engine.recent_items} "
             "history items (or of the item asked \"more like\") by closeness to them, plus "
             f"{engine.model_weight:g} times the recommender's own order; a pick \"by lightgcn\" is such a "
             "neighbour, not one the LLM proposed."]
    summaries = {}
    for name, messages in scripts.items():
        transcript, summaries[name] = conversation_lines(engine, name, messages)
        lines += transcript
    return lines, summaries


LIMITATIONS = [
    "MovieLens-100k is small and old (943 users, 1,682 films up to 1998): the recommendations reflect 1990s "
    "raters, and the descriptors are words from SmolLM2's vocabulary, not reviewed labels.",
    "The LLM was tuned on 2 CPU cores for a fraction of what LC-Rec trains on a GPU; its row in the table is "
    "what that budget bought.",
    "Follow-ups such as \"darker\" act through the catalog's genres and the CF embeddings as well as the prompt, "
    "so the model's own reading of free text is only part of each answer.",
    "The chat does not show the LLM's ranking as it is: it orders the LLM's picks together with the CF neighbours "
    "of the newest history items by closeness to them, because the LLM alone ranks below popularity here "
    "(`python -m bench.ranking` measures that order under the same protocol). The table above is the LLM alone.",
    "The descriptors summarise collaborative-filtering embeddings; they can be wrong or odd for items with few "
    "ratings, and they say nothing about an item's content beyond what raters' behaviour reflects.",
]

CITATIONS = [
    "F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context. ACM Transactions "
    "on Interactive Intelligent Systems 5, 4, Article 19. https://doi.org/10.1145/2827872",
    "FACE: arXiv 2510.15729. LC-Rec: Bowen Zheng et al., Adapting Large Language Models by Integrating "
    "Collaborative Semantics for Recommendation, arXiv 2311.09049.",
    "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0); all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0).",
]

TERMS = ("MovieLens data are from GroupLens Research (University of Minnesota) under their terms: research use, "
         "no redistribution without permission, cite the paper above, no implied endorsement. This bundle holds no "
         "ratings or titles: the app reads them at start from the pinned dataset source named in manifest.json.")


def write_card(bundle_dir: Path, config: Config, workdir: Path) -> dict[str, Any]:
    """Write `<bundle>/README.md` and list it in the manifest; return the conversations' summaries."""
    report = read_report(workdir)
    data = report.get("data", {})
    lines = [f"# face-app bundle: {config.name}", "",
             f"{report.get('dataset', config.name)}: {data.get('users')} users, {data.get('items')} items, "
             f"{data.get('interactions')} interactions. This directory is what `python app.py` serves: the FACE "
             "read-out (descriptors and LightGCN+FACE embeddings), the item indices, the LoRA-tuned LLM (its "
             "base model is fetched from its pinned source and checked by sha256) and the catalog map.", "",
             *build_lines(config, workdir), "",
             "## Results", "",
             f"Test split; protocol: {report.get('protocol', {}).get('description', '')} "
             f"Mean ± std over seeds {report.get('seeds')} where a model has several runs.", "",
             results_table(report), "",
             "Goals (DESIGN.md section 6), as measured:", "",
             *goal_lines(report),
             *index_lines(report),
             *descriptors_section(report)]
    summaries: dict[str, Any] = {}
    if config.export.conversations:
        transcript, summaries = conversations(bundle_dir, config.export.conversations)
        lines += transcript
    lines += ["", "## Limitations", "", *[f"- {text}" for text in LIMITATIONS],
              "", "## Data terms and citations", "", TERMS, "", *[f"- {text}" for text in CITATIONS]]
    (bundle_dir / CARD_FILE).write_text("\n".join(lines) + "\n")
    manifest = json.loads((bundle_dir / fmt.MANIFEST).read_text())
    fmt.write_manifest(bundle_dir, **{k: v for k, v in manifest.items() if k not in ("format", "files")})
    return summaries
