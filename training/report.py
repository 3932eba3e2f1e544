"""The build report: `report.json` (the machine-readable contract), `report.md`, loss plots.

`report.json` holds `dataset`, `protocol`, `models` ({name: {metric: mean,
"<metric>_std": std}}), `seeds`, `timings` ({stage: seconds}) and, per model, the
per-seed runs under `runs`. Later stages add their own sections; this module
renders whatever models are present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import METRICS
from training.workdir import Workdir


def read_report(workdir: Path) -> dict[str, Any]:
    path = Workdir(workdir).report_json
    return json.loads(path.read_text()) if path.exists() else {}


def write_report(workdir: Path, report: dict[str, Any]) -> None:
    """Write report.json and the rendered report.md, with the stage timings recorded so far."""
    report = {**report, "timings": {**read_timings(workdir), **report.get("timings", {})}}
    Workdir(workdir).report_json.write_text(json.dumps(report, indent=2))
    render_report(workdir)


def read_timings(workdir: Path) -> dict[str, float]:
    path = Workdir(workdir).timings_file
    return json.loads(path.read_text()) if path.exists() else {}


def update_timings(workdir: Path, timings: dict[str, float]) -> None:
    """Record stage wall times in timings.json, and in the report when one exists."""
    Workdir(workdir).timings_file.write_text(json.dumps({**read_timings(workdir), **timings}, indent=2))
    report = read_report(workdir)
    if report:
        report["timings"] = {**report.get("timings", {}), **timings}
        Workdir(workdir).report_json.write_text(json.dumps(report, indent=2))
        render_report(workdir)


def format_metric(values: dict[str, float], name: str) -> str:
    value = values.get(name)
    if value is None:
        return "-"
    std = values.get(f"{name}_std")
    return f"{value:.4f} ± {std:.4f}" if std is not None else f"{value:.4f}"


def results_table(report: dict[str, Any]) -> str:
    """The models table as markdown (mean ± std over seeds where there are several)."""
    lines = ["| model | seeds | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name, values in report.get("models", {}).items():
        seeds = ", ".join(str(run["seed"]) for run in report.get("runs", {}).get(name, []) if "seed" in run)
        lines.append(f"| {name} | {seeds or '-'} | " + " | ".join(format_metric(values, m) for m in METRICS) + " |")
    return "\n".join(lines)


def training_time_table(report: dict[str, Any]) -> str:
    """Per model: seeds trained, mean and total training seconds, mean best epoch."""
    lines = ["| model | runs | seconds per run | seconds in all | best epoch |", "|---|---|---|---|---|"]
    for name, runs in report.get("runs", {}).items():
        seconds = [r["train_seconds"] for r in runs if r.get("train_seconds") is not None]
        if not seconds:  # a served row: the chat's arm over trained models, nothing trained of its own
            continue
        epochs = [r["best_epoch"] for r in runs if r.get("best_epoch") is not None]
        best = f"{sum(epochs) / len(epochs):.0f}" if epochs else "-"
        lines.append(f"| {name} | {len(runs)} | {sum(seconds) / len(seconds):.1f} | {sum(seconds):.1f} | {best} |")
    return "\n".join(lines)


SERVED = " (served)"


def served_table(report: dict[str, Any]) -> str:
    """The served rows (`training.served`) on valid and test beside the model each arm serves, "" when none."""
    runs = report.get("runs", {})
    rows = [name for name in runs if name.endswith(SERVED)]
    if not rows:
        return ""
    lines = ["| row | valid HR@10 | valid NDCG@10 | test HR@10 | test NDCG@10 |", "|---|---|---|---|---|"]
    for name in rows:
        model = "LLM" if name.startswith("LLM") else name.removesuffix(SERVED).removesuffix(" arm")
        seed = runs[name][0].get("seed")
        for label in (name, model):
            per_seed = [r for r in runs.get(label, []) if r.get("seed") == seed]
            cells = []
            for split in ("valid", "test"):
                values = [r[split] for r in per_seed if split in r]
                cells += [f"{np.mean([v[m] for v in values]):.4f}" if values else "-" for m in ("HR@10", "NDCG@10")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timings_table(report: dict[str, Any]) -> str:
    timings = report.get("timings", {})
    lines = ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()]
    lines.append(f"| total | {sum(timings.values()):.1f} |")
    return "\n".join(lines)


def word_measures(metrics: dict[str, Any]) -> list[str]:
    """The word measures of report.json's `descriptors` (`training.vocabulary.word_report` per kind) as markdown
    lines: a table per kind, then each kind's most common words; none for a report without them."""
    words = metrics.get("words")
    if not words:
        return []
    lines = ["", "How informative the words are, per kind: faithfulness as hit@10 over random words' hit@10; "
             "own-group lift: the mean leave-one-out lift of an entity's words for its own groups (genres for "
             "items; gender, age band, occupation for users), against random words of the same vocabulary; "
             "common uninformative words: on more than 5% of the entities with no group lift of 1.5.",
             "", "| kind | faithfulness: hit@10 / random = ratio | distinct words | own-group lift (random words) | "
             "common uninformative words |", "|---|---|---|---|---|"]
    for kind, values in words.items():
        per_kind = metrics["per_kind"][kind]
        ratio = per_kind["hit@10"] / max(per_kind["random_hit@10"], 1e-12)
        bad = ", ".join(f"{w['word']} ({w['share']:.0%})" for w in values["common_uninformative"]) or "none"
        lines.append(f"| {kind} | {per_kind['hit@10']:.4f} / {per_kind['random_hit@10']:.4f} = {ratio:.1f}x | "
                     f"{values['distinct_words']} | {values['own_group_lift']:.2f} "
                     f"({values['random_own_group_lift']:.2f}) | {bad} |")
    for kind, values in words.items():
        lines += ["", f"The most common words of the {kind}: " + "; ".join(
            f"{w['word']} {w['share']:.0%} (best lift {w['lift']:.1f}, {w['best_group']})"
            for w in values["most_common"]) + "."]
    return lines


def descriptors_section(report: dict[str, Any]) -> list[str]:
    """FACE descriptor faithfulness and samples (report keys `descriptors`, `descriptor_samples`), as markdown lines."""
    metrics = report.get("descriptors")
    if not metrics:
        return []
    lines = [
        "",
        "## FACE descriptors",
        "",
        f"Each entity's {metrics['k']} descriptors, joined as text and embedded by MiniLM, retrieve its own profile "
        "among all profiles of its kind; the baseline uses random codebook words "
        f"(seed {metrics.get('seed', '?')}'s read-out).",
        "",
        "| entities | hit@10 | MRR | random hit@10 | random MRR |",
        "|---|---|---|---|---|",
    ]
    rows = [("all", metrics), *metrics.get("per_kind", {}).items()]
    for kind, values in rows:
        lines.append(
            f"| {kind} | {values['hit@10']:.4f} | {values['mrr']:.4f} | {values['random_hit@10']:.4f} "
            f"| {values['random_mrr']:.4f} |"
        )
    lines += ["", f"Distinct words used: {metrics['distinct_words']}."]
    vocabulary = metrics.get("vocabulary")
    if vocabulary:
        lines += ["", f"Vocabulary: `{vocabulary['rule']}`, {vocabulary['words']:,} words; hub correction weight "
                  f"{vocabulary['hub_penalty']} (training/vocabulary.py, `face_app.descriptors.hub_penalty`)."]
    lines += word_measures(metrics)
    samples = report.get("descriptor_samples", {})
    if samples.get("items"):
        lines += ["", "| item | training interactions | profile | descriptors |", "|---|---|---|---|"]
        for item in samples["items"]:
            lines.append(
                f"| {item['item_id']} | {item['train_interactions']} | {item['profile']} "
                f"| {', '.join(item['descriptors'])} |"
            )
    if samples.get("users"):
        lines += ["", "| user | profile | descriptors |", "|---|---|---|"]
        for user in samples["users"]:
            lines.append(f"| {user['user_id']} | {user['profile']} | {', '.join(user['descriptors'])} |")
    return lines


def render_report(workdir: Path) -> str:
    """Render report.md from report.json; return the markdown."""
    paths = Workdir(workdir)
    report = read_report(workdir)
    if not report:
        raise FileNotFoundError(f"no {paths.report_json.name} in {workdir}; run the eval stage first")
    data = report.get("data", {})
    parts = [
        f"# Build report: {report.get('dataset', '?')}",
        "",
        f"Data: {data.get('users', '?')} users, {data.get('items', '?')} items, "
        f"{data.get('interactions', '?')} interactions "
        f"(train {data.get('train', '?')}, valid {data.get('valid', '?')}, test {data.get('test', '?')}).",
        "",
        f"Protocol: {report.get('protocol', {}).get('description', '')}",
        f"Seeds configured: {report.get('seeds', [])}; the table names the seeds behind each row (mean ± std where "
        "a model has several runs).",
        "",
        "## Test metrics",
        "",
        results_table(report),
        *(["", "## What the chat serves", "",
            "Each arm as a chat turn runs it (`training/served.py`: the visitor's whole history, 10 picks, the "
            "chat's defaults), beside the model it serves, of the same seed (LLM: the generator's own top-10, "
            "scored on test only; LightGCN: its own scores).", "", served_table(report)]
          if served_table(report) else []),
        "",
        "## Wall time per stage",
        "",
        timings_table(report),
        "",
        "A stage reuses runs finished by an earlier build with the same settings, so its wall time can be "
        "shorter than the training time of its models, listed here per run:",
        "",
        training_time_table(report),
        *descriptors_section(report),
    ]
    plots = sorted(paths.plots.glob("*.png")) if paths.plots.exists() else []
    if plots:
        parts += ["", "## Training curves", ""]
        parts += [f"![{p.stem}]({paths.plots.name}/{p.name})" for p in plots]
    text = "\n".join(parts) + "\n"
    paths.report_md.write_text(text)
    return text


def publish(workdir: Path, out: Path, command: str) -> Path:
    """Write the rendered report to `out` (e.g. docs/results.md), plots copied beside it.

    `command` is the build command that produced `workdir`; it is printed at the top
    so every number in the document can be reproduced.
    """
    import shutil

    text = render_report(workdir)
    plots = Workdir(workdir).plots
    if plots.exists():
        (out.parent / "plots").mkdir(parents=True, exist_ok=True)
        for png in plots.glob("*.png"):
            shutil.copyfile(png, out.parent / "plots" / png.name)
    header = (
        "<!-- Generated by `python -m training report`; do not edit by hand. -->\n\n"
        f"Produced by:\n\n```\n{command}\n```\n\n"
    )
    title, _, body = text.partition("\n")
    out.write_text(f"{title}\n\n{header}{body.lstrip()}")
    return out


README_START = "<!-- results:start (generated by python -m training report; do not edit) -->"
README_END = "<!-- results:end -->"


def replace_block(text: str, start: str, end: str, body: str) -> str:
    """`text` with what lies between the marker lines `start` and `end` replaced by `body` (markers kept,
    everything outside them untouched). Raises ValueError when the markers are missing or out of order."""
    head, found, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"no generated block ({start} ... {end})")
    return f"{head}{start}\n{body.strip(chr(10))}\n{end}{tail}"


def update_readme(readme: Path, workdir: Path, results_link: str) -> None:
    """Replace the generated results block of the README with the table of `workdir`'s report."""
    report = read_report(workdir)
    data = report.get("data", {})
    body = "\n".join(
        [
            f"{report.get('dataset')}: {data.get('users')} users, {data.get('items')} items, "
            f"{data.get('interactions')} interactions; test split, mean ± std over each model's seeds. "
            f"Details, wall times and training curves: [{results_link}]({results_link}).",
            "",
            results_table(report),
        ]
    )
    try:
        readme.write_text(replace_block(readme.read_text(), README_START, README_END, body))
    except ValueError as error:
        raise ValueError(f"{readme}: {error}") from None


def plot_history(path: Path, title: str, runs: dict[str, list[dict[str, float]]]) -> None:
    """Loss and validation NDCG@10 per epoch, one line per run, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, valid_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, history in runs.items():
        epochs = [h["epoch"] for h in history if "loss" in h]
        loss_ax.plot(epochs, [h["loss"] for h in history if "loss" in h], label=label)
        scored = [h for h in history if h.get("valid_NDCG@10") is not None]
        valid_ax.plot([h["epoch"] for h in scored], [h["valid_NDCG@10"] for h in scored], marker=".", label=label)
    loss_ax.set(title=f"{title}: training loss", xlabel="epoch")
    valid_ax.set(title=f"{title}: valid NDCG@10", xlabel="epoch")
    valid_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_tune_curves(path: Path, history: list[dict[str, float]], valid: list[dict[str, float]]) -> None:
    """The LLM tune as PNG: loss per index level (and the distillation term) by step; valid HR@10 / NDCG@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, valid_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    names = sorted({name for h in history for name in h if name != "step"})
    for name in names:
        points = [(h["step"], h[name]) for h in history if name in h]
        loss_ax.plot(*zip(*points, strict=True), label=name, linewidth=1)
    loss_ax.set(title="LLM tune: loss (per index level)", xlabel="step")
    loss_ax.legend(fontsize=7)
    for metric in ("HR@10", "NDCG@10"):
        if valid:
            valid_ax.plot([v["step"] for v in valid], [v[metric] for v in valid], marker=".", label=metric)
    valid_ax.set(title="LLM tune: valid sample", xlabel="step")
    if valid:
        valid_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
