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

from training.evaluate import METRICS

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def read_report(workdir: Path) -> dict[str, Any]:
    path = workdir / REPORT_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def write_report(workdir: Path, report: dict[str, Any]) -> None:
    """Write report.json and the rendered report.md, keeping timings already recorded."""
    previous = read_report(workdir)
    report = {**report, "timings": {**previous.get("timings", {}), **report.get("timings", {})}}
    (workdir / REPORT_JSON).write_text(json.dumps(report, indent=2))
    render_report(workdir)


def update_timings(workdir: Path, timings: dict[str, float]) -> None:
    """Record stage wall times in timings.json, and in the report when one exists."""
    path = workdir / "timings.json"
    merged = {**(json.loads(path.read_text()) if path.exists() else {}), **timings}
    path.write_text(json.dumps(merged, indent=2))
    report = read_report(workdir)
    if report:
        report["timings"] = {**report.get("timings", {}), **timings}
        (workdir / REPORT_JSON).write_text(json.dumps(report, indent=2))
        render_report(workdir)


def format_metric(values: dict[str, float], name: str) -> str:
    value = values.get(name)
    if value is None:
        return "-"
    std = values.get(f"{name}_std")
    return f"{value:.4f} ± {std:.4f}" if std is not None else f"{value:.4f}"


def results_table(report: dict[str, Any]) -> str:
    """The models table as markdown (mean ± std over seeds where there are several)."""
    lines = ["| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, values in report.get("models", {}).items():
        lines.append(f"| {name} | " + " | ".join(format_metric(values, m) for m in METRICS) + " |")
    return "\n".join(lines)


def timings_table(report: dict[str, Any]) -> str:
    timings = report.get("timings", {})
    lines = ["| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()]
    lines.append(f"| total | {sum(timings.values()):.1f} |")
    return "\n".join(lines)


def render_report(workdir: Path) -> str:
    """Render report.md from report.json; return the markdown."""
    report = read_report(workdir)
    if not report:
        raise FileNotFoundError(f"no {REPORT_JSON} in {workdir}; run the eval stage first")
    data = report.get("data", {})
    parts = [
        f"# Build report: {report.get('dataset', '?')}",
        "",
        f"Data: {data.get('users', '?')} users, {data.get('items', '?')} items, "
        f"{data.get('interactions', '?')} interactions "
        f"(train {data.get('train', '?')}, valid {data.get('valid', '?')}, test {data.get('test', '?')}).",
        "",
        f"Protocol: {report.get('protocol', {}).get('description', '')}",
        f"Seeds: {report.get('seeds', [])} (mean ± std over seeds where a model has several runs).",
        "",
        "## Test metrics",
        "",
        results_table(report),
        "",
        "## Wall time per stage",
        "",
        timings_table(report),
    ]
    plots = sorted((workdir / "plots").glob("*.png")) if (workdir / "plots").exists() else []
    if plots:
        parts += ["", "## Training curves", ""]
        parts += [f"![{p.stem}](plots/{p.name})" for p in plots]
    text = "\n".join(parts) + "\n"
    (workdir / REPORT_MD).write_text(text)
    return text


def plot_history(path: Path, title: str, runs: dict[str, list[dict[str, float]]]) -> None:
    """Loss and validation NDCG@10 per epoch, one line per run, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, valid_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, history in runs.items():
        epochs = [h["epoch"] for h in history if "loss" in h]
        loss_ax.plot(epochs, [h["loss"] for h in history if "loss" in h], label=label)
        scored = [h for h in history if h.get("NDCG@10") is not None]
        valid_ax.plot([h["epoch"] for h in scored], [h["NDCG@10"] for h in scored], marker=".", label=label)
    loss_ax.set(title=f"{title}: training loss", xlabel="epoch")
    valid_ax.set(title=f"{title}: valid NDCG@10", xlabel="epoch")
    valid_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
