"""`python -m bench` on the tiny bundle, scaled down (a few turns, two sessions, training times read from the
tiny build): every measure present, numeric and sane, each target judged, and `--readme` rewriting only
the performance block."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import ranking
from bench.__main__ import README_END, README_START, TARGETS, main
from face_app.arms import GeneratorRecommender
from training.report import README_END as RESULTS_END
from training.report import README_START as RESULTS_START
from training.report import read_timings

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("turn_p50_s", "turn_p95_s", "decoder_p50_s", "hf_generate_p50_s", "speedup", "same_topk", "ready_s",
            "served_turn_p50_s", "rss_mb", "concurrent_sessions", "concurrent_errors", "concurrent_crossed",
            "concurrent_p95_s", "train_total_s")


@pytest.fixture(scope="module")
def run(tiny_build: Path, tiny_bundle: Path, tmp_path_factory) -> tuple[dict, Path, Path]:
    out = tmp_path_factory.mktemp("bench")
    readme = out / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    args = ["--bundle", str(tiny_bundle), "--out", str(out / "results.json"), "--readme", str(readme),
            "--turns", "6", "--generate-prompts", "2", "--rss-turns", "2", "--sessions", "1", "2",
            "--session-turns", "2", "--skip-train", "--train-workdir", str(tiny_build)]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text()), readme, out / "results.json"


def outside(text: str, start: str, end: str) -> tuple[str, str]:
    head, _, rest = text.partition(start)
    return head, rest.partition(end)[2]


def inside(text: str, start: str, end: str) -> str:
    return text.partition(start)[2].partition(end)[0]


def test_every_measure_is_present_numeric_and_sane(run, tiny_build: Path) -> None:
    results, _, _ = run
    for key in MEASURES:
        value = results[key]
        assert isinstance(value, int | float) and math.isfinite(value), (key, value)
        if key.endswith("_s"):
            assert value > 0, (key, value)  # a time of 0 means the step never ran
    assert results["arm"] == "llm" and results["turns"] == 6 and results["search_calls"] == 2
    assert 0 < results["turn_p50_s"] <= results["turn_p95_s"]
    assert results["speedup"] == pytest.approx(results["hf_generate_p50_s"] / results["decoder_p50_s"])
    # the 5 picks a turn shows, searched as the chat searches them
    assert results["k"] == 5 and results["beams"] == GeneratorRecommender.beams
    # the trie search is an exact beam search: a broken trie or cache returns other items than `generate` does
    # (tests/test_decoder.py checks equality call by call; here at least most of the bench's calls must agree)
    assert results["same_topk"] >= 0.5
    assert 0 < results["ready_s"] < 600 and results["rss_turns"] == 2
    assert 200 < results["rss_mb"] < results["machine"]["memory_gib"] * 1024
    assert results["concurrent_sessions"] == 2 and results["concurrent_errors"] == 0
    assert results["concurrent_crossed"] == 0 and results["concurrent_p95_s"] > 0
    # each count asked ran on its own, fewest first; the targets read the largest
    assert [run["sessions"] for run in results["concurrent"]] == [1, 2]
    assert results["concurrent"][-1]["p95_s"] == results["concurrent_p95_s"]
    timings = read_timings(tiny_build)
    assert results["train_config"] == "tiny" and set(results["train_s"]) == set(timings)
    assert results["train_total_s"] == pytest.approx(sum(timings.values()))


def test_the_run_records_where_and_on_what_it_ran(run) -> None:
    results, _, _ = run
    machine = results["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch_threads"] >= 1
    assert results["bundle"] == "tiny" and results["items"] > 1000
    assert len(results["commit"].removesuffix("+dirty")) == 40
    assert results["command"].startswith("python -m bench --bundle ")


def test_each_design_target_is_judged_against_its_value(run) -> None:
    results, _, _ = run
    targets = results["targets"]
    assert set(targets) == {*TARGETS, "train_total_s"}
    for key, target in targets.items():
        value, limit = results[key], target["limit"]
        assert target["value"] == value
        assert target["met"] is (value <= limit if target["op"] == "<=" else value >= limit)
    assert targets["train_total_s"]["limit"] == 120.0  # the tiny config: two minutes
    assert targets["concurrent_sessions"]["met"] is False  # 2 sessions here, 16 asked


def test_readme_rewrites_only_the_performance_block(run) -> None:
    results, readme, _ = run
    original, written = (ROOT / "README.md").read_text(), readme.read_text()
    assert outside(written, README_START, README_END) == outside(original, README_START, README_END)
    assert inside(written, RESULTS_START, RESULTS_END) == inside(original, RESULTS_START, RESULTS_END)
    assert inside(original, README_START, README_END) != inside(written, README_START, README_END)
    block = inside(written, README_START, README_END)
    assert "| chat turn, median (engine, the LLM arm's top-5) |" in block and results["command"] in block
    for n in (1, 2):  # every session count has its own rows, each judged against the targets
        assert f"| {n} concurrent sessions: turn, 95th percentile |" in block
    assert results["machine"]["cpu"] in block and results["commit"] in block


def test_render_only_rerenders_the_same_block_from_results_json(run, tmp_path: Path) -> None:
    _, readme, results_json = run
    again = tmp_path / "README.md"
    again.write_text((ROOT / "README.md").read_text())
    assert main(["--render-only", "--out", str(results_json), "--readme", str(again)]) == 0
    assert again.read_text() == readme.read_text()
    assert main(["--render-only", "--out", str(tmp_path / "none.json")]) == 2


def test_ranking_scores_the_engines_top10_for_every_arm_and_setting(tiny_build: Path, tiny_bundle: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "ranking.json"
    args = ["--bundle", str(tiny_bundle), "--workdir", str(tiny_build), "--split", "valid", "--users", "6",
            "--recent", "0,2", "--weights", "0,0.5", "--threads", "1", "--out", str(out)]
    assert ranking.main(args) == 0
    result = json.loads(out.read_text())
    assert result["users"] == 6 and result["split"] == "valid"
    rows = {(r["arm"], r["recent"], r["weight"]): r for r in result["rows"]}
    assert set(rows) == {("llm", None, None)} | {("lightgcn", recent, weight)
                                                for recent, weight in ((0, None), (2, 0.0), (2, 0.5))}
    for row in rows.values():
        assert 0.0 <= row["NDCG@10"] <= row["HR@10"] <= 1.0
    # the LLM arm is shown as generated: the chat's top-10 is the generator's own, list for list
    llm_row = rows[("llm", None, None)]
    assert llm_row["identical_lists"] == 1.0 and llm_row["HR@10"] == llm_row["own_HR@10"]
    # each row is the engine's own top-10 for those sessions, scored as the protocol does
    from face_app.bundle import Bundle
    from face_app.engine import Engine
    from training.data import SplitData

    histories, targets = ranking.sessions(SplitData.load(tiny_build / "data"), "valid", 6)
    engine = Engine.from_bundle(Bundle.load(tiny_bundle), n=10)
    engine.recent_items, engine.model_weight = 2, 0.5
    expected = ranking.score(engine, "lightgcn", histories, targets)
    assert expected["HR@10"] == rows[("lightgcn", 2, 0.5)]["HR@10"]
    assert expected["NDCG@10"] == pytest.approx(rows[("lightgcn", 2, 0.5)]["NDCG@10"])


def test_busy_shares_count_working_samples_only_and_each_function_once_per_stack() -> None:
    """`bench.serving.busy_shares`: a waiting thread's samples are left out, and a function twice in one stack
    (recursion) counts that stack once."""
    from bench.serving import busy_shares

    raw = "\n".join([
        "thread (1): batcher;Batcher._work (batching.py:60);search_many (decoder.py:400);forward (x.py:1) 30",
        "thread (2): worker;App.chat (handlers.py:140);render (render.py:9);render (render.py:9) 10",
        "thread (3): loop;Server.run (server.py:1);EpollSelector.select (selectors.py:468) 60",
    ])
    shares = busy_shares(raw)
    assert shares == {"Batcher._work": 0.75, "search_many": 0.75, "forward": 0.75, "App.chat": 0.25, "render": 0.25}


def test_the_gradio_floor_serves_every_session_its_turns_from_one_and_from_several_client_processes() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bench.gradio_floor", "--sessions", "4", "--turns", "2",
                           "--client-processes", "1", "2", "--connect-s", "8"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(done.stdout)["runs"]
    assert [run["client_processes"] for run in runs] == [1, 2]
    for run in runs:
        assert run["turns"] == 8 and run["errors"] == 0
        assert 0 < run["p50_s"] <= run["p95_s"] < 60 and run["openings_p95_s"] > 0
