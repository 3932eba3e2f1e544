"""Do the picks follow the history's obvious intent, whichever arm answers? A suite of multi-turn chats.

    python -m bench.scenarios --bundle assets/ml-100k [--arms llm lightgcn] [--out bench/scenarios-result.json]

`bench/scenarios.json` holds the chats as a visitor types them ("Scream, The Shining and Alien are my
favourites", "something from the 80s", "no horror please"), each turn with what its picks must show, read
from each pick's genres and year in the catalog (its "about" says how the thresholds were set). The kinds:

- `count: N`: exactly N picks (checked on every turn: the file's `n`, 10, unless the turn asks for a count);
- `share_genre_at_least: {genres: [...], count: K}`: at least K picks have one of the genres;
- `no_genre: [...]`: no pick has any of the genres;
- `year_between: {from: Y0, to: Y1, share: S}`: at least that share of the picks come from Y0..Y1 (either
  end may be left open; a pick of unknown year is outside);
- `like_previous_pick: {rank: R, count: K}`: at least K picks share a genre with the previous turn's pick R.

Every scenario runs in a fresh `ConversationState` per arm through `Engine.respond`, the chat's own turn, so
the picks are the arm's (the LLM's generated items for the LLM arm) under the engine's filters; each pick
keeps the `source` the engine gives it, and the share of picks that came from the arm asked (not from the
CF backfill that fills in when filters starve the LLM's ten) is reported per arm. Before anything runs,
the file is checked against the bundle's catalog (`problems`): every title a turn declares is named surely
by the chat's own reading (`face_app.dialogue.parse`) and nothing else is named or asked about, and the
history of the first turn is dominated by what `dominated_by` says. Prints a markdown table (turns and
scenarios passed per arm, checks passed per kind) and the failing turns with why; `--out` writes the
result as JSON with the machine, the load average and every turn's picks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from face_app.catalog import Catalog
from face_app.dialogue import ConversationState, parse

SCENARIOS = Path(__file__).with_name("scenarios.json")
KINDS = ("count", "share_genre_at_least", "no_genre", "year_between", "like_previous_pick")
# The keys each kind's value must have (`count` and `no_genre` take a number and a list).
KIND_KEYS = {"share_genre_at_least": ({"genres", "count"}, set()), "year_between": ({"share"}, {"from", "to"}),
             "like_previous_pick": ({"rank", "count"}, set())}
_PICK_OBJECT = re.compile(r'\{\s*"item_id": [^{}]*\}')  # a pick as `to_json` writes it


@dataclass(frozen=True)
class Turn:
    """One message. titles: the films it names, as catalog labels ("Scream (1996)"); expect: kind -> value."""

    say: str
    expect: dict[str, Any]
    titles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A chat. dominated_by: {"genres": [...]} and/or {"years": {"from", "to"}}, what its first turn's history
    is dominated by (empty when it names no film)."""

    name: str
    turns: tuple[Turn, ...]
    dominated_by: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pick:
    """What a check reads of a recommendation: its catalog label, year, genres, and the model that proposed it."""

    item_id: str
    label: str
    year: int | None
    genres: tuple[str, ...]
    source: str

    @classmethod
    def of(cls, recommendation: Any) -> Pick:
        """From a `face_app.engine.Recommendation`."""
        r = recommendation
        return cls(r.item_id, f"{r.title} ({r.year})" if r.year else r.title, r.year, tuple(r.genres), r.source)


# --- the file -------------------------------------------------------------------------------------------------


def load_scenarios(path: Path = SCENARIOS) -> tuple[list[Scenario], int]:
    """The scenarios of `path` and the number of picks a turn shows unless it asks for a count.

    Raises ValueError naming the turn when an expectation is of an unknown kind or lacks a key."""
    data = json.loads(Path(path).read_text())
    scenarios = []
    for s in data["scenarios"]:
        turns = tuple(Turn(t["say"], dict(t["expect"]), tuple(t.get("titles", ()))) for t in s["turns"])
        scenario = Scenario(s["name"], turns, dict(s.get("dominated_by", {})))
        for number, turn in enumerate(turns, start=1):
            where = f"{path}: {scenario.name!r} turn {number}"
            if not turn.expect:
                raise ValueError(f"{where} expects nothing")
            for kind, value in turn.expect.items():
                if kind not in KINDS:
                    raise ValueError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
                if kind == "count" and not isinstance(value, int):
                    raise ValueError(f"{where}: count must be a number, not {value!r}")
                if kind == "no_genre" and not (isinstance(value, list) and value):
                    raise ValueError(f"{where}: no_genre must be a list of genres, not {value!r}")
                required, optional = KIND_KEYS.get(kind, (set(), set()))
                if required and not (isinstance(value, dict) and required <= set(value) <= required | optional):
                    raise ValueError(f"{where}: {kind} needs {sorted(required)}"
                                     + (f" and may have {sorted(optional)}" if optional else "") + f", not {value!r}")
        scenarios.append(scenario)
    return scenarios, int(data.get("n", 10))


def in_years(year: int | None, span: dict[str, int]) -> bool:
    """Whether `year` lies in {"from": Y0, "to": Y1} (inclusive; a missing end is open; None never does)."""
    return year is not None and span.get("from", year) <= year <= span.get("to", year)


def describe_span(span: dict[str, int]) -> str:
    if "from" not in span:
        return f"before {span['to'] + 1}"
    return f"{span['from']} on" if "to" not in span else f"{span['from']}-{span['to']}"


def genres_named(scenario: Scenario) -> set[str]:
    """Every genre the scenario's `dominated_by` and expectations name."""
    named = set(scenario.dominated_by.get("genres", ()))
    for turn in scenario.turns:
        named |= set(turn.expect.get("no_genre", ()))
        named |= {g for value in turn.expect.values() if isinstance(value, dict) for g in value.get("genres", ())}
    return named


def problems(catalog: Catalog, scenarios: Sequence[Scenario]) -> list[str]:
    """What is wrong with the scenarios against `catalog`, one line each (empty when nothing is):
    a turn whose declared titles are not exactly the films the chat names surely in it, a turn that names a
    film uncertainly (the chat would ask "Did you mean...?" and show no picks), a `dominated_by` that more
    than half of the first turn's films do not match, and a genre the catalog does not have."""
    found = []
    known = set(catalog.genres)
    for scenario in scenarios:
        unknown = sorted(genres_named(scenario) - known)
        found += [f"{scenario.name!r}: no genre {genre!r} in the catalog" for genre in unknown]
        for number, turn in enumerate(scenario.turns, start=1):
            request = parse(turn.say, catalog)
            named = tuple(catalog.item(i).label for i in request.titles)
            if named != turn.titles:
                found.append(f"{scenario.name!r} turn {number}: names {list(named)}, declares {list(turn.titles)}")
            for mention in request.unsure:
                choices = [catalog.item(i).label for i in mention.choices]
                found.append(f"{scenario.name!r} turn {number}: {mention.written!r} is unsure between {choices}")
        films = [catalog.item(i) for i in parse(scenario.turns[0].say, catalog).titles]
        for what, wanted in scenario.dominated_by.items():
            if what == "genres":
                matching = sum(bool(set(wanted) & set(item.genres)) for item in films)
            elif what == "years":
                matching = sum(in_years(item.year, wanted) for item in films)
            else:
                found.append(f"{scenario.name!r}: dominated_by {what!r}? (genres or years)")
                continue
            if 2 * matching <= len(films):
                found.append(f"{scenario.name!r}: {matching} of the first turn's {len(films)} films match "
                             f"dominated_by {what} {wanted}")
    return found


# --- the checks -----------------------------------------------------------------------------------------------


def check(expect: dict[str, Any], picks: Sequence[Pick], n: int = 10, previous: Sequence[Pick] = ()) -> dict[str, str]:
    """Each expectation of a turn on its `picks` -> "" when met, else why not ("3/10 Horror, wanted >= 5").

    n: the picks a turn shows unless `expect` has a `count` (the count is always checked);
    previous: the picks of the turn before (for `like_previous_pick`)."""
    shown = len(picks)
    out: dict[str, str] = {}
    wanted = expect.get("count", n)
    out["count"] = "" if shown == wanted else f"{shown} picks, wanted {wanted}"
    for kind, value in expect.items():
        if kind == "count":
            continue
        if kind == "share_genre_at_least":
            have = sum(bool(set(value["genres"]) & set(p.genres)) for p in picks)
            out[kind] = "" if have >= value["count"] else \
                f"{have}/{shown} {' or '.join(value['genres'])}, wanted >= {value['count']}"
        elif kind == "no_genre":
            against = [p.label for p in picks if set(value) & set(p.genres)]
            out[kind] = "" if not against else \
                f"{len(against)}/{shown} {' or '.join(value)} ({'; '.join(against[:3])}), wanted none"
        elif kind == "year_between":
            have = sum(in_years(p.year, value) for p in picks)
            need = math.ceil(value["share"] * shown - 1e-9)
            out[kind] = "" if shown and have >= need else \
                f"{have}/{shown} from {describe_span(value)}, wanted >= {max(need, 1)}"
        elif kind == "like_previous_pick":
            rank = value["rank"]
            if len(previous) < rank:
                out[kind] = f"the previous turn showed no pick {rank}"
                continue
            target = previous[rank - 1]
            have = sum(bool(set(target.genres) & set(p.genres)) for p in picks)
            out[kind] = "" if have >= value["count"] else \
                (f"{have}/{shown} share a genre with {target.label} ({'/'.join(target.genres)}), "
                 f"wanted >= {value['count']}")
        else:
            raise ValueError(f"unknown kind {kind!r}")
    return out


# --- running --------------------------------------------------------------------------------------------------


def run_arm(engine: Any, arm: str, scenarios: Sequence[Scenario], n: int = 10) -> list[dict[str, Any]]:
    """Every scenario through `engine.respond` on `arm`, each in a fresh session: one record per turn with its
    reply, picks and checks (see `check`). Raises ValueError when the engine has no such arm (it would
    otherwise answer with its CF fallback)."""
    if arm not in engine.recommenders:
        raise ValueError(f"the bundle has no {arm!r} arm (it has {', '.join(engine.recommenders)})")
    records = []
    for scenario in scenarios:
        state, previous = ConversationState(), []
        for number, turn in enumerate(scenario.turns, start=1):
            reply = engine.respond(state, turn.say, arm)
            picks = [Pick.of(r) for r in reply.recommendations]
            checks = check(turn.expect, picks, n, previous)
            records.append({
                "arm": arm, "scenario": scenario.name, "turn": number, "say": turn.say, "reply": reply.text,
                "seconds": round(reply.seconds, 3), "passed": not any(checks.values()), "checks": checks,
                # ids and sources only: the repository carries no copy of the dataset's item table (README)
                "picks": [{"item_id": p.item_id, "source": p.source} for p in picks],
            })
            previous = picks or previous  # "the second one" counts over the latest picks shown
    return records


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One arm's records -> turns and scenarios passed, checks passed per kind, the share of picks from the arm."""
    scenarios: dict[str, bool] = {}
    for r in records:
        scenarios[r["scenario"]] = scenarios.get(r["scenario"], True) and r["passed"]
    kinds: dict[str, list[int]] = {}
    for r in records:
        for kind, why in r["checks"].items():
            tally = kinds.setdefault(kind, [0, 0])
            tally[0] += not why
            tally[1] += 1
    picks = [p for r in records for p in r["picks"]]
    own = sum(p["source"] == r["arm"] for r in records for p in r["picks"])
    return {
        "turns": len(records), "turns_passed": sum(r["passed"] for r in records),
        "scenarios": len(scenarios), "scenarios_passed": sum(scenarios.values()),
        "checks": {kind: {"passed": p, "of": t} for kind, (p, t) in sorted(kinds.items(), key=lambda kv: KINDS.index(
            kv[0]))},
        "picks": len(picks), "picks_from_arm": own,
        "seconds": round(sum(r["seconds"] for r in records), 2),
    }


# --- the report -----------------------------------------------------------------------------------------------


def _share(passed: int, of: int) -> str:
    return f"{passed}/{of} ({passed / of:.0%})" if of else "-"


def table(result: dict[str, Any]) -> str:
    """The per-arm pass rates, the checks per kind, and the failing turns with why, as markdown."""
    arms = result["arms"]
    lines = ["| arm | turns passed | scenarios fully passed | picks from the arm itself | time |",
             "|---|---|---|---|---|"]
    for arm, s in arms.items():
        lines.append(f"| {arm} | {_share(s['turns_passed'], s['turns'])} | "
                     f"{_share(s['scenarios_passed'], s['scenarios'])} | {_share(s['picks_from_arm'], s['picks'])} | "
                     f"{s['seconds']:.1f} s |")
    kinds = [k for k in KINDS if any(k in s["checks"] for s in arms.values())]
    lines += ["", "| check | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for kind in kinds:
        cells = [_share(s["checks"][kind]["passed"], s["checks"][kind]["of"]) if kind in s["checks"] else "-"
                 for s in arms.values()]
        lines.append(f"| `{kind}` | " + " | ".join(cells) + " |")
    failing = [r for r in result["turns"] if not r["passed"]]
    if failing:
        lines += ["", "Failing turns:", ""]
        for r in failing:
            why = "; ".join(f"{kind}: {w}" for kind, w in r["checks"].items() if w)
            lines.append(f"- {r['arm']} · {r['scenario']} · turn {r['turn']} “{r['say']}”: {why}")
    return "\n".join(lines)


def measure(bundle: Path, arms: Sequence[str], scenarios: Sequence[Scenario], n: int,
            intent: tuple[float, float] | None = None,
            boost: tuple[float, float] | None = None) -> dict[str, Any]:
    """Load the bundle's engine (the LLM only when asked for), check the scenarios against its catalog, and run
    them on every arm. intent: the engine's weights of the history's genre and decade prior for the LLM and
    LightGCN (None: the engine's defaults; 0: off); boost: how much more a dominated attribute weighs, for the
    LLM and LightGCN (None: the engine's, `face_app.picking.DOMINANCE_BOOST_LLM` and `_CF`). Raises ValueError
    listing the scenarios' `problems` when there are any."""
    from bench.__main__ import git_commit
    from face_app import hardware
    from face_app.bundle import Bundle
    from face_app.engine import Engine

    machine = {**hardware.machine(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    engine = Engine.from_bundle(Bundle.load(bundle), load_llm="llm" in arms, n=n)
    if intent is not None:
        engine.intent_llm, engine.intent_cf = intent
    if boost is not None:
        engine.boost_llm, engine.boost_cf = boost
    found = problems(engine.catalog, scenarios)
    if found:
        raise ValueError("the scenarios do not fit this bundle's catalog:\n" + "\n".join(found))
    turns = [record for arm in arms for record in run_arm(engine, arm, scenarios, n)]
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": git_commit(),
        "bundle": str(bundle), "machine": machine, "n": n,
        "intent": {"llm": engine.intent_llm, "lightgcn": engine.intent_cf},
        "boost": {"llm": engine.boost_llm, "lightgcn": engine.boost_cf},
        "arms": {arm: summarise([r for r in turns if r["arm"] == arm]) for arm in arms}, "turns": turns,
    }


def to_json(result: dict[str, Any]) -> str:
    """`result` as indented JSON with each pick on one line (a turn's ten picks read as ten lines)."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    return _PICK_OBJECT.sub(lambda m: json.dumps(json.loads(m[0]), ensure_ascii=False), text) + "\n"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("assets/ml-100k"))
    parser.add_argument("--arms", nargs="+", default=["llm", "lightgcn"])
    parser.add_argument("--scenarios", type=Path, default=SCENARIOS)
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    parser.add_argument("--intent", type=float, nargs=2, metavar=("LLM", "LIGHTGCN"),
                        help="the weights of the history's genre and decade prior (default: the engine's, "
                        "face_app.picking.INTENT_LLM and INTENT_CF; 0 0: the arms' own scores)")
    parser.add_argument("--boost", type=float, nargs=2, metavar=("LLM", "LIGHTGCN"),
                        help="how much more the prior of an attribute the history is dominated by weighs (default: "
                        "the engine's, face_app.picking.DOMINANCE_BOOST_LLM and _CF)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    scenarios, n = load_scenarios(args.scenarios)
    start = time.perf_counter()
    try:
        result = measure(args.bundle, args.arms, scenarios, n, args.intent, args.boost)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = {"command": " ".join(["python -m bench.scenarios", *argv]), "scenarios_file": str(args.scenarios),
              **result, "seconds": round(time.perf_counter() - start, 1)}
    print(table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(to_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
