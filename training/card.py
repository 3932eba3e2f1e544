"""The bundle's model card, `<bundle>/README.md`: how it was built, what it scores, and how it talks.

Written by the export stage from the build's report (every number is read from `report.json`, the
stage timings and machine records of the workdir) and from scripted conversations run through the
app's own engine on the exported bundle, so what the card quotes is what a visitor gets. The card
is listed in the bundle's manifest like every other file.
"""

from __future__ import annotations

import json
import platform
import shlex
from pathlib import Path
from typing import Any

import yaml

from face_app import bundle as fmt
from face_app import hardware
from face_app.bundle import Bundle
from face_app.decoder import GENERATOR_FILE, GeneratorSpec
from face_app.dialogue import ConversationState
from face_app.engine import Engine
from training.config import DEPENDS_ON, Config, config_dict, config_hash
from training.report import descriptors_section, read_report, read_timings, results_table
from training.workdir import Workdir

CARD_FILE = "README.md"
# (model, reference, goal, whether a tie meets it)
GOALS = (("LLM", "SASRec", "the tuned LLM at or above SASRec", True),
         ("LightGCN+FACE", "LightGCN", "LightGCN+FACE above LightGCN", False))
FAITHFULNESS_GOAL = 10.0  # descriptors retrieve their own profile this many times better than random words


def describe_machine() -> dict[str, Any]:
    """CPU model and capability, cores, memory, accelerator, Python and torch versions of the machine running this."""
    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total = next((line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal")), "")
        memory = round(int(total.split()[1]) / 2**20, 1) if total else None
    return {**hardware.machine(), "memory_gib": memory, "python": platform.python_version()}


def machine_text(machine: dict[str, Any]) -> str:
    accelerator = machine.get("gpu") or "no GPU"
    capability = f" ({machine['capability']})" if machine.get("capability") else ""
    return (f"{machine.get('cpu')}{capability}, {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, "
            f"{accelerator}; Python {machine.get('python')}, torch {machine.get('torch')}")


def record_command(workdir: Path, argv: list[str]) -> None:
    """Append a build command, exactly as it was run, to `<workdir>/commands.json` (the card quotes them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = Workdir(workdir).commands_file
    commands = json.loads(path.read_text()) if path.exists() else []
    commands.append(shlex.join(argv))
    path.write_text(json.dumps(commands, indent=1))


def record_machine(workdir: Path, stage: str) -> None:
    """Note in `<workdir>/machines.json` which machine ran `stage` (the card reports it)."""
    path = Workdir(workdir).machines_file
    machines = json.loads(path.read_text()) if path.exists() else {}
    machines[stage] = describe_machine()
    path.write_text(json.dumps(machines, indent=2))


def goal_lines(report: dict[str, Any]) -> list[str]:
    """Each DESIGN.md quality goal, measured: met, or missed by how much."""
    models = report.get("models", {})
    lines = []
    for model, reference, goal, tie_meets in GOALS:
        if model not in models or reference not in models:
            if model == "LightGCN+FACE" and read_out_alone(report):
                lines.append(f"- {goal}: not applicable to this build: its FACE read-out was trained alone on the "
                             "frozen LightGCN (face.mode readout), so LightGCN's ranking is LightGCN+FACE's.")
            else:
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
    for kind, found in report.get("descriptors", {}).get("per_kind", {}).items():
        ratio = found["hit@10"] / found["random_hit@10"] if found["random_hit@10"] else float("inf")
        verdict = "met" if ratio >= FAITHFULNESS_GOAL else f"missed ({ratio / FAITHFULNESS_GOAL:.0%} of the goal)"
        lines.append(f"- Descriptors of the {kind} retrieve their own profile at least {FAITHFULNESS_GOAL:.0f}x "
                     f"better than random words: hit@10 {found['hit@10']:.4f} vs {found['random_hit@10']:.4f}, "
                     f"{ratio:.2f}x: {verdict}.")
    return lines


def read_out_alone(report: dict[str, Any]) -> bool:
    """Whether the build's FACE read-out was trained alone on the frozen LightGCN (face.mode `readout`)."""
    return report.get("descriptors", {}).get("vocabulary", {}).get("mode") == "readout"


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
    machines_path = Workdir(workdir).machines_file
    machines = json.loads(machines_path.read_text()) if machines_path.exists() else {}
    commands_path = Workdir(workdir).commands_file
    commands = json.loads(commands_path.read_text()) if commands_path.exists() else ["(not recorded)"]
    lines = ["## How it was built", "", "The build commands, as they were run in its workdir:", "",
             "```", *commands, "```", "",
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
    engine = Engine.from_bundle(Bundle.load(bundle_dir))
    generative = engine.recommenders[engine.default].generative
    order = ("the recommender's own top picks in its own order: the visitor's filters act inside its constrained "
             "search, and a pick \"by lightgcn\" appears only where they leave too few items") if generative else (
             f"the recommender's pool and the CF neighbours of the newest {engine.recent_items} history items (or of "
             f"the item asked \"more like\"), ordered by closeness to them plus {engine.model_weight:g} times the "
             "recommender's own order")
    lines = ["", "## Conversations", "",
             f"Verbatim, from the app's engine on this bundle (recommender: {engine.default}); each card line is "
             "title, genres, index tokens, the item's descriptors and the recommender that generated it. The picks "
             f"are {order}."]
    summaries = {}
    for name, messages in scripts.items():
        transcript, summaries[name] = conversation_lines(engine, name, messages)
        lines += transcript
    return lines, summaries


def stale_stages(config: Config, workdir: Path) -> list[str]:
    """A line per finished stage of the workdir whose config sections have changed since it ran (a build that
    re-ran only some stages, e.g. `--stages face,eval,export`): its output is from the earlier settings."""
    paths = Workdir(workdir)
    lines = []
    for stage in (name for name in DEPENDS_ON if name != "export"):  # the card is written by the export stage
        marker = paths.done_marker(stage)
        if marker.exists() and json.loads(marker.read_text()).get("config_hash") != config_hash(config, stage):
            lines.append(f"The {stage} stage's output was built from an earlier config than this bundle's: its "
                         f"config sections ({', '.join(DEPENDS_ON[stage])}) differ now in at least one setting, and "
                         f"its results are those of the earlier settings (`--stages {stage} --force` rebuilds it).")
    return lines


def limitations(report: dict[str, Any], workdir: Path) -> list[str]:
    """What this build cannot do, from its own report and records (no fact of another build)."""
    data = report.get("data", {})
    lines = [f"The data set is small: {data.get('users')} users and {data.get('items')} items; the recommendations "
             "reflect its raters, and the descriptors are words from the LLM's vocabulary, not reviewed labels."]
    model_dir = Workdir(workdir).tune_model
    if (model_dir / GENERATOR_FILE).exists():
        spec = GeneratorSpec.load(model_dir)
        training = spec.training
        machine = training.get("machine") or {}
        where = machine.get("gpu") or f"{machine.get('cores')} CPU cores ({machine.get('cpu')})"
        minutes = (training.get("train_seconds") or 0) / 60
        model = spec.base_model
        if spec.keep_layers:
            model = f"the first {spec.keep_layers} decoder layers of {model}"
        lines.append(f"The LLM ({model}) was tuned for {minutes:.0f} minutes on {where}, in "
                     f"{training.get('precision')}; its row in the table is what that budget bought.")
        if spec.taste:
            lines.append("The LLM reads the visitor's history partly through a `<taste>` token, SASRec's state of the "
                         "history: it depends on that SASRec, and a history of items SASRec never saw gives it "
                         "nothing to read.")
    models = report.get("models", {})
    if "LLM" in models and "SASRec" in models and models["LLM"]["NDCG@10"] < models["SASRec"]["NDCG@10"]:
        lines.append(f"The LLM ranks below the project's SASRec (NDCG@10 {models['LLM']['NDCG@10']:.4f} vs "
                     f"{models['SASRec']['NDCG@10']:.4f}).")
    lines.append("Follow-ups such as \"darker\" act through the catalog's genres as well as the prompt, so the "
                 "model's own reading of free text is only part of each answer.")
    lines.append("The descriptors summarise collaborative-filtering embeddings; they can be wrong or odd for items "
                 "with few ratings, and say nothing about an item's content beyond what raters' behaviour reflects.")
    return lines


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


def write_card(bundle_dir: Path, config: Config, workdir: Path, report: dict[str, Any] | None = None,
               build: list[str] | None = None, limits: list[str] | None = None) -> dict[str, Any]:
    """Write `<bundle>/README.md` and list it in the manifest; return the conversations' summaries.

    report / build / limits: the report, the "how it was built" lines and the limitations to write (None: the
    workdir's, as the export stage writes them; `refresh_readout` passes the bundle's own, amended)."""
    report = read_report(workdir) if report is None else report
    embeddings = "LightGCN (frozen; the read-out trained alone)" if config.face.mode == "readout" else "LightGCN+FACE"
    data = report.get("data", {})
    lines = [f"# face-app bundle: {config.name}", "",
             f"{report.get('dataset', config.name)}: {data.get('users')} users, {data.get('items')} items, "
             f"{data.get('interactions')} interactions. This directory is what `python app.py` serves: the FACE "
             f"read-out (descriptors and {embeddings} embeddings), the item indices, the LoRA-tuned LLM (its "
             "base model is fetched from its pinned source and checked by sha256) and the catalog map.", "",
             *(build_lines(config, workdir) if build is None else build), "",
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
    limits = [*limitations(report, workdir), *stale_stages(config, workdir)] if limits is None else limits
    lines += ["", "## Limitations", "", *[f"- {text}" for text in limits],
              "", "## Data terms and citations", ""]
    movielens = config.data.source.startswith(("ml-", "grouplens"))
    if movielens:
        lines += [TERMS, ""]
    lines += [f"- {text}" for text in (CITATIONS if movielens else CITATIONS[1:])]
    (bundle_dir / CARD_FILE).write_text("\n".join(lines) + "\n")
    manifest = json.loads((bundle_dir / fmt.MANIFEST).read_text())
    fmt.write_manifest(bundle_dir, **{k: v for k, v in manifest.items() if k not in ("format", "files")})
    return summaries
