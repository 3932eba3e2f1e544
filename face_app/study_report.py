"""The study's analysis: `python -m face_app.study report --db PATH --out DIR` writes `DIR/report.md` and PNG plots.

What it reports, from the event log alone (a withdrawn participant's rows are gone; only their number remains):

- **Per arm:** enrolled, completed (answered the questionnaire) and withdrawn.
- **Per questionnaire item:** the distribution per arm, the mean with a 95% bootstrap interval
  (`scipy.stats.bootstrap`, percentile method), and one test per factor of the default 2x2 design (descriptors shown
  or hidden; LLM or LightGCN): the Mann-Whitney U test (`scipy.stats.mannwhitneyu`, two-sided) with its
  rank-biserial correlation as the effect size. Why this: the answers are ordinal (a 1-5 agreement is not an
  interval scale), the groups are small and their distributions need not be normal, and the arms are balanced, so
  each factor compares the two halves of the participants. An ordinal regression would also model the interaction,
  but with the few dozen participants a study of this app has it would be fitted on a handful per cell; the
  report shows the four cells' means so an interaction can be seen, and says it is not tested.
- **Behaviour:** per arm, turns, likes and dislikes per pick shown, the kinds of follow-up people used, time from
  consent to "I'm done", and picks that joined the history.
- **The descriptor rating task:** the share of shown words participants marked as fitting, per arm and per word.
- **A power line:** participants per arm needed to detect a stated effect (Cohen's d) with the Mann-Whitney test at
  alpha 0.05 and power 0.8: the two-sample normal approximation n = 2 (z(1-alpha/2) + z(power))^2 / d^2, divided by
  the test's asymptotic relative efficiency against the t-test (3/pi, its value for normal data).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ALPHA, POWER, EFFECT = 0.05, 0.8, 0.5
BOOTSTRAP = 2000
FOLLOW_UPS = ("more_like", "mood", "genres", "no_genres", "years", "era", "reject", "seen", "why", "again", "count",
              "ordinal")


def mean_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """The mean and its 95% bootstrap interval (nan bounds with fewer than two values)."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) < 2 or np.all(data == data[0]):
        return float(data.mean()) if len(data) else math.nan, math.nan, math.nan
    result = bootstrap((data,), np.mean, n_resamples=BOOTSTRAP, confidence_level=0.95, method="percentile",
                       random_state=np.random.default_rng(seed))
    return float(data.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high)


def factor_test(first: Sequence[float], second: Sequence[float]) -> dict[str, float] | None:
    """Mann-Whitney U (two-sided) between two groups, with the rank-biserial correlation (first over second)."""
    if len(first) < 2 or len(second) < 2:
        return None
    from scipy.stats import mannwhitneyu

    test = mannwhitneyu(first, second, alternative="two-sided")
    return {"U": float(test.statistic), "p": float(test.pvalue),
            "rank_biserial": float(2 * test.statistic / (len(first) * len(second)) - 1),
            "n": (len(first), len(second))}


def per_arm_needed(effect: float = EFFECT, alpha: float = ALPHA, power: float = POWER) -> int:
    """Participants per group for the Mann-Whitney test to detect Cohen's d = `effect` (module docstring)."""
    from scipy.stats import norm

    t_test = 2 * (norm.ppf(1 - alpha / 2) + norm.ppf(power)) ** 2 / effect ** 2
    return math.ceil(t_test / (3 / math.pi))


class _NoTitles:
    """A catalog that knows no film: the parser then reads only what a message asks (its follow-up kinds)."""

    def find_titles(self, text: str, weak: Sequence[tuple[int, int]] = ()) -> list:
        return []


def follow_up_kinds(text: str) -> list[str]:
    from face_app.dialogue import parse

    request = parse(text, _NoTitles())  # type: ignore[arg-type]
    return [kind for kind in FOLLOW_UPS if getattr(request, kind) not in (None, False, (), [], "")]


def analyse(participants: list[dict[str, Any]], events: list[dict[str, Any]], withdrawn: Counter,
            config: Any) -> dict[str, Any]:
    """Every number of the report, as data (config: the `face_app.study.StudyConfig` the study ran with)."""
    arms = {a.name: a for a in config.arms}
    arm_of = {p["code"]: p["arm"] for p in participants}
    by_code: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_code[event["code"]].append(event)
    answers = {code: next(e["payload"]["answers"] for e in evs if e["kind"] == "questionnaire")
               for code, evs in by_code.items() if any(e["kind"] == "questionnaire" for e in evs)}
    out: dict[str, Any] = {"arms": {}, "items": {}, "behaviour": {}, "words": {}, "power": {}}
    codes_of = {name: [c for c, a in arm_of.items() if a == name] for name in arms}
    for name, codes in codes_of.items():
        out["arms"][name] = {"enrolled": len(codes) + withdrawn.get(name, 0),
                             "completed": sum(c in answers for c in codes), "withdrawn": withdrawn.get(name, 0)}
    for question in config.questionnaire:
        if question.kind == "text":
            continue
        scale = ([str(v) for v in range(1, question.scale + 1)] if question.kind == "likert"
                 else list(question.options))
        score = {label: index + 1 for index, label in enumerate(scale)}
        values = {name: [score[answers[c][question.id]] for c, a in arm_of.items()
                         if a == name and c in answers and answers[c].get(question.id) in score] for name in arms}
        row: dict[str, Any] = {"text": question.text, "scale": scale, "per_arm": {}, "tests": {}}
        for name, vals in values.items():
            mean, low, high = mean_interval(vals)
            row["per_arm"][name] = {"n": len(vals), "counts": [vals.count(i + 1) for i in range(len(scale))],
                                    "mean": mean, "low": low, "high": high}
        for factor, split in (("descriptors shown vs hidden", lambda a: a.show_descriptors),
                              ("LLM vs LightGCN", lambda a: a.recommender == "llm")):
            first = [v for name, vals in values.items() if split(arms[name]) for v in vals]
            second = [v for name, vals in values.items() if not split(arms[name]) for v in vals]
            row["tests"][factor] = factor_test(first, second)
        out["items"][question.id] = row
    for name, codes in codes_of.items():
        evs = [e for c in codes for e in by_code.get(c, [])]
        shown = sum(len(e["payload"].get("recommendations", [])) for e in evs)
        feedback = [e["payload"] for e in evs if e["kind"] == "feedback"]
        kinds = Counter(k for e in evs if e["kind"] == "message" for k in follow_up_kinds(e["payload"].get("text", "")))
        durations = []
        for c in codes:
            times = {e["kind"]: e["ts"] for e in by_code.get(c, []) if e["kind"] in ("consent", "finish_task")}
            if len(times) == 2:
                durations.append(times["finish_task"] - times["consent"])
        participants_here = max(len(codes), 1)
        out["behaviour"][name] = {
            "turns_per_participant": sum(e["kind"] in ("message", "choice") for e in evs) / participants_here,
            "picks_shown": shown,
            "likes_per_pick": sum(f.get("liked") is True for f in feedback) / shown if shown else math.nan,
            "dislikes_per_pick": sum(f.get("liked") is False for f in feedback) / shown if shown else math.nan,
            "follow_ups": dict(kinds.most_common()),
            "median_seconds_to_done": float(np.median(durations)) if durations else math.nan,
            "picks_added_to_history": sum(f.get("liked") is True for f in feedback),
        }
    ratings = [(arm_of.get(e["code"]), mark) for e in events if e["kind"] == "word_ratings"
               for mark in e["payload"].get("marks", [])]
    for name in arms:
        marks = [m for a, m in ratings if a == name]
        out["words"][name] = {"marks": len(marks),
                              "fit_share": sum(m["fits"] for m in marks) / len(marks) if marks else math.nan}
    per_word: dict[str, list[bool]] = defaultdict(list)
    for _, mark in ratings:
        per_word[mark["word"]].append(bool(mark["fits"]))
    out["words"]["per_word"] = {w: {"marks": len(v), "fit_share": sum(v) / len(v)}
                                for w, v in sorted(per_word.items(), key=lambda kv: -len(kv[1]))}
    out["power"] = {"effect_d": EFFECT, "alpha": ALPHA, "power": POWER, "per_arm": per_arm_needed()}
    return out


def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_report(result: dict[str, Any], out: Path, source: str) -> Path:
    """report.md and the plots (one PNG per questionnaire item, one of enrolment) under `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    arms = list(result["arms"])
    lines = [f"# Study report\n\nFrom `{source}`, by `python -m face_app.study report`. Withdrawn participants' "
             "data is not in the log; they are counted only.\n", "## Participants\n",
             "| arm | enrolled | completed | withdrawn |", "|---|---|---|---|"]
    lines += [f"| {a} | {r['enrolled']} | {r['completed']} | {r['withdrawn']} |" for a, r in result["arms"].items()]
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.bar(arms, [result["arms"][a]["completed"] for a in arms], label="completed")
    axis.bar(arms, [result["arms"][a]["enrolled"] - result["arms"][a]["completed"] for a in arms],
             bottom=[result["arms"][a]["completed"] for a in arms], label="not completed", alpha=0.5)
    axis.set_ylabel("participants")
    axis.legend()
    figure.autofmt_xdate(rotation=20)
    figure.tight_layout()
    figure.savefig(out / "participants.png", dpi=110)
    plt.close(figure)
    lines.append("\n![participants](participants.png)\n\n## Questionnaire\n")
    for item_id, row in result["items"].items():
        lines += [f"### {item_id}: {row['text']}\n", "| arm | n | " + " | ".join(row["scale"]) + " | mean [95% CI] |",
                  "|---|---|" + "---|" * len(row["scale"]) + "---|"]
        for arm, cell in row["per_arm"].items():
            lines.append(f"| {arm} | {cell['n']} | " + " | ".join(map(str, cell["counts"]))
                         + f" | {_fmt(cell['mean'])} [{_fmt(cell['low'])}, {_fmt(cell['high'])}] |")
        for factor, test in row["tests"].items():
            lines.append(f"- {factor}: " + ("too few answers to test" if test is None else
                         f"Mann-Whitney U = {test['U']:.1f}, p = {test['p']:.3f}, rank-biserial r = "
                         f"{test['rank_biserial']:+.2f} (n = {test['n'][0]} vs {test['n'][1]})"))
        lines.append("- The interaction of the two factors is not tested (see the module docstring); the four "
                     "arms' means above show it.\n")
        figure, axis = plt.subplots(figsize=(6, 3))
        left = np.zeros(len(arms))
        for level, label in enumerate(row["scale"]):
            counts = np.array([row["per_arm"][a]["counts"][level] for a in arms], dtype=float)
            axis.barh(arms, counts, left=left, label=label)
            left += counts
        axis.set_xlabel("answers")
        axis.set_title(row["text"], fontsize=9)
        axis.legend(fontsize=7, ncols=min(5, len(row["scale"])), loc="lower right")
        figure.tight_layout()
        figure.savefig(out / f"item-{item_id}.png", dpi=110)
        plt.close(figure)
        lines.append(f"![{item_id}](item-{item_id}.png)\n")
    lines += ["## Behaviour\n", "| arm | turns per participant | picks shown | likes per pick | dislikes per pick | "
              "picks added to history | median s to done | follow-ups used |", "|---|---|---|---|---|---|---|---|"]
    for arm, row in result["behaviour"].items():
        kinds = ", ".join(f"{k} {n}" for k, n in row["follow_ups"].items()) or "–"
        lines.append(f"| {arm} | {_fmt(row['turns_per_participant'], 1)} | {row['picks_shown']} | "
                     f"{_fmt(row['likes_per_pick'], 3)} | {_fmt(row['dislikes_per_pick'], 3)} | "
                     f"{row['picks_added_to_history']} | {_fmt(row['median_seconds_to_done'], 0)} | {kinds} |")
    words = result["words"]
    lines += ["\n## Descriptor rating task\n", "| arm | words marked | share marked as fitting |", "|---|---|---|"]
    lines += [f"| {a} | {words[a]['marks']} | {_fmt(words[a]['fit_share'], 3)} |" for a in arms]
    top = list(words["per_word"].items())[:20]
    if top:
        lines += ["\nMost-marked words:\n", "| word | marks | fit share |", "|---|---|---|"]
        lines += [f"| {w} | {r['marks']} | {r['fit_share']:.2f} |" for w, r in top]
    power = result["power"]
    lines += ["\n## Power\n", f"To detect an effect of d = {power['effect_d']} between two groups with the "
              f"Mann-Whitney test (alpha {power['alpha']}, power {power['power']}) takes {power['per_arm']} "
              f"participants per group: {power['per_arm']} per half for one factor of the 2x2 design (about "
              f"{math.ceil(power['per_arm'] / 2)} per arm), {power['per_arm']} per arm to compare two arms."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def report(participants: list[dict[str, Any]], events: list[dict[str, Any]], withdrawn: Counter, config: Any,
           out: Path, source: str) -> Path:
    """Analyse a study's log (`face_app.study.read_study`) and write the report under `out`; ValueError for a
    study with nothing to report or with arms its design does not name. source: where the log is, as shown."""
    if not participants and not withdrawn:
        raise ValueError(f"{source} has no participants yet: nothing to report")
    unknown = sorted({p["arm"] for p in participants} - {a.name for a in config.arms})
    if unknown:
        raise ValueError(f"{source} has participants in arms the study design does not name ({', '.join(unknown)}): "
                         "give the design it was run with (--config)")
    return write_report(analyse(participants, events, withdrawn, config), out, source)
