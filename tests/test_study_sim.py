"""A simulated study, scaled down, end to end through the served app (bench/study_sim.py): gradio_client
participants and one Chromium participant consent, chat, rate words and answer; one withdraws; the report is
written from the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser import CHROMIUM

from bench.study_sim import simulate
from face_app.study import StudyLog


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_a_small_simulated_study_ends_in_a_report(tiny_bundle: Path, tmp_path: Path) -> None:
    record = simulate(tiny_bundle, tmp_path, participants=6, browsers=1, parallel=2, seed=3)
    assert record["participants"] == 6 and record["through_chromium"] == 1 and record["withdrawn"] == 1
    assert record["through_gradio_client"] == 5
    log = StudyLog(tmp_path / "study.sqlite")
    events, participants, withdrawn = list(log.events()), log.participants(), log.withdrawn()
    log.close()
    assert len(participants) == 5 and len(withdrawn) == 1
    kinds = {code: [e["kind"] for e in events if e["code"] == code] for code in {p["code"] for p in participants}}
    for flow in kinds.values():  # every remaining participant went all the way through
        assert flow[0] == "consent" and flow.count("message") == 3
        assert flow[-3:] == ["finish_task", "questionnaire", "word_ratings"]
    assert all(flow.count("feedback") == 1 for flow in kinds.values())  # each liked a card: thumb or event
    served = {e["payload"]["served"]["recommender"] for e in events if e["kind"] == "message"}
    arms = {p["arm"] for p in participants}
    assert served <= {"llm", "lightgcn"} and len(arms) >= 3  # the LLM was loaded: its arms enrolled too
    report = (tmp_path / "report.md").read_text()
    withdrawn_row = [line for line in report.splitlines() if line.startswith(f"| {withdrawn[0]} |")]
    assert withdrawn_row and withdrawn_row[0].endswith(" 1 |")
    assert "Mann-Whitney" in report and (tmp_path / "item-satisfied.png").exists()
    assert json.loads((tmp_path / "timings.json").read_text())["participants"] == 6
