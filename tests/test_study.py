"""Study mode: design config, arm assignment, the SQLite log (WAL, per-event commits, restart), export,
withdrawal, the admin secret, and a whole participant session through the app's handlers."""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from catalog_fixture import SmallReadout, items_frame

from face_app.arms import ArmUnavailable, EmbeddingRecommender, LoadingArm
from face_app.catalog import Catalog
from face_app.dialogue import ConversationState
from face_app.engine import Engine
from face_app.handlers import App, Session
from face_app.study import (
    DEFAULT_CONFIG,
    StudyConfig,
    StudyLog,
    admin_allowed,
    new_code,
    normalise_code,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine() -> Engine:
    catalog = Catalog(items_frame(), popularity=np.arange(12, 0, -1))
    readout = SmallReadout()
    return Engine(catalog, readout, {"lightgcn": EmbeddingRecommender(readout, catalog.popularity)}, n=3, pool=12,
                  personas={"7": ["1", "2", "4"]})


def test_default_design_crosses_descriptors_and_recommender() -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    assert {(a.recommender, a.show_descriptors) for a in config.arms} == {
        ("llm", True), ("llm", False), ("lightgcn", True), ("lightgcn", False)}
    assert config.consent and config.task and config.min_turns == 3
    assert [q.kind for q in config.questionnaire] == ["likert", "likert", "likert", "choice", "text"]


def test_a_bad_design_is_refused_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("arms: [{name: a, recommender: gpt}]\n")
    with pytest.raises(ValueError, match="recommender 'gpt'"):
        StudyConfig.load(path)
    path.write_text("arms: [{name: a}]\nquestionnaire: [{id: q, text: Q, kind: choice}]\n")
    with pytest.raises(ValueError, match="needs options"):
        StudyConfig.load(path)


def test_questionnaire_answers_are_checked() -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    good = {"satisfied": "4", "understood": "5", "control": "2", "would_watch": "one", "comments": ""}
    assert config.check_answers(good) == []
    assert len(config.check_answers({**good, "satisfied": None, "would_watch": "lots"})) == 2


def test_codes_are_readable_and_typos_of_case_or_dash_are_forgiven() -> None:
    code = new_code()
    assert len(code) == 9 and code[4] == "-" and not set(code) & set("01OIL")
    assert normalise_code(code.lower().replace("-", " ")) == code


def test_arms_are_assigned_at_random_but_balanced(tmp_path: Path) -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    log = StudyLog(tmp_path / "study.sqlite")
    arms = [log.enrol(config, random.Random(seed))[1].name for seed in range(12)]
    assert sorted(arms.count(a.name) for a in config.arms) == [3, 3, 3, 3]
    assert arms[:4] != arms[4:8] or arms[4:8] != arms[8:]  # not a fixed rotation


def test_every_event_is_committed_at_once_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "study.sqlite"
    log = StudyLog(path)
    code, _ = log.enrol(StudyConfig.load(DEFAULT_CONFIG))
    log.log(code, "s1", "message", {"text": "hi"})
    # Another connection (another process, say) sees it without the writer closing anything.
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT kind, payload FROM events").fetchall() == [("message", '{"text": "hi"}')]
    other.close()


def test_nothing_identifying_is_stored(tmp_path: Path) -> None:
    log = StudyLog(tmp_path / "study.sqlite")
    columns = {row[1] for table in ("participants", "events")
               for row in log._db.execute(f"PRAGMA table_info({table})").fetchall()}
    assert columns == {"code", "arm", "created", "consent", "id", "session", "ts", "kind", "payload"}


def test_withdrawal_deletes_only_that_participant(tmp_path: Path) -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    log = StudyLog(tmp_path / "study.sqlite")
    (a, _), (b, _) = log.enrol(config), log.enrol(config)
    for code in (a, b, a):
        log.log(code, "s", "message", {"text": code})
    assert log.withdraw(a.lower()) == 3  # two events and the enrolment
    assert [e["code"] for e in log.events()] == [b]
    assert [p["code"] for p in log.participants()] == [b]
    assert log.withdraw(a) == 0


def test_admin_download_needs_the_configured_secret(monkeypatch) -> None:
    monkeypatch.delenv("FACE_APP_ADMIN_SECRET", raising=False)
    assert not admin_allowed("anything")  # no secret set: admin is disabled
    monkeypatch.setenv("FACE_APP_ADMIN_SECRET", "s3cret")
    assert not admin_allowed("wrong") and not admin_allowed("") and admin_allowed("s3cret")


def test_a_participant_session_end_to_end_survives_a_restart_and_exports(engine: Engine, tmp_path: Path,
                                                                         monkeypatch) -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    db = tmp_path / "data" / "study.sqlite"
    app = App(engine, {}, study=config, log=StudyLog(db))
    session = Session()
    _, _, _, session = app.consent(True, session)
    assert session.code and session.arm in {a.name for a in config.arms}
    assert config.arm(session.arm).recommender == "lightgcn"  # this engine has no LLM: enrolled into its arms only
    for text in ("I loved Glass Harbor", "something darker", "from the 90s"):
        app.chat(text, session)
    card_index = next(iter(session.cards))
    like = type("Like", (), {"index": card_index, "liked": True, "value": None})()
    app.feedback(session, like)
    app.finish(session)
    answers = ["4", "3", "5", "one", "nice"]
    app.submit_answers(session, *answers)

    # A restart: a new process opens the same file; nothing is lost.
    app.log.close()
    restarted = StudyLog(db)
    kinds = [e["kind"] for e in restarted.events()]
    assert kinds == ["consent", "message", "message", "message", "feedback", "finish_task", "questionnaire"]
    events = list(restarted.events())
    assert all(e["code"] == session.code and e["arm"] == session.arm for e in events)
    assert events[1]["payload"]["recommendations"][0]["rank"] == 1
    assert events[4]["payload"]["item_id"] == session.cards[card_index]
    assert events[6]["payload"]["answers"]["would_watch"] == "one"
    restarted.close()

    # Export from the command line, both formats.
    run = [sys.executable, "-m", "face_app.study", "export", "--db", str(db)]
    jsonl = subprocess.run([*run, "--format", "jsonl"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert [json.loads(line)["kind"] for line in jsonl.splitlines()] == kinds
    text = subprocess.run([*run, "--format", "csv"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["kind"] for r in rows] == kinds and json.loads(rows[1]["payload"])["text"] == "I loved Glass Harbor"

    # Admin download through the app, then withdrawal by code from the command line.
    monkeypatch.setenv("FACE_APP_ADMIN_SECRET", "letmein")
    app2 = App(engine, {}, study=config, log=StudyLog(db))
    assert app2.admin_export("nope", "csv")[0] is None
    path, note = app2.admin_export("letmein", "jsonl")
    assert Path(path).read_text() == jsonl and note == "7 events."
    out = subprocess.run([sys.executable, "-m", "face_app.study", "withdraw", session.code, "--db", str(db)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "removed 8 row(s)" in out.stdout
    assert list(app2.log.events()) == []


def test_without_the_llm_nobody_is_enrolled_into_or_served_by_an_llm_arm(engine: Engine, tmp_path: Path) -> None:
    """Study mode on an engine without the LLM: every participant lands in a LightGCN arm, every turn is logged
    with the arm that served it and the build, and nothing is substituted."""
    config = StudyConfig.load(DEFAULT_CONFIG)
    assert {a.recommender for a in config.arms} == {"llm", "lightgcn"}
    app = App(engine, {}, study=config, log=StudyLog(tmp_path / "study.sqlite"),
              build={"bundle_manifest_sha256": "abc", "commit": "def"})
    for _ in range(12):
        session = Session()
        app.consent(True, session)
        assert config.arm(session.arm).recommender == "lightgcn" and session.recommender == "lightgcn"
        app.chat("I loved Glass Harbor", session)
    events = list(app.log.events())
    assert {e["arm"] for e in events} <= {a.name for a in config.arms if a.recommender == "lightgcn"}
    messages = [e["payload"] for e in events if e["kind"] == "message"]
    assert len(messages) == 12 and all(m["served"]["recommender"] == "lightgcn" for m in messages)
    assert all(e["payload"]["build"] == {"bundle_manifest_sha256": "abc", "commit": "def"} for e in events)
    with pytest.raises(ArmUnavailable):  # and the handlers refuse to put a session into an LLM arm by hand
        app.enrol(Session(), next(a for a in config.arms if a.recommender == "llm"))


def test_enrolment_with_no_servable_arm_enrols_nobody(tmp_path: Path) -> None:
    log = StudyLog(tmp_path / "study.sqlite")
    with pytest.raises(ArmUnavailable, match="nobody is enrolled"):
        log.enrol(StudyConfig.load(DEFAULT_CONFIG), servable=lambda arm: False)
    assert log._db.execute("SELECT COUNT(*) FROM participants").fetchone()[0] == 0


def test_an_arm_that_failed_to_load_is_never_replaced_silently(engine: Engine) -> None:
    """Outside a study the LightGCN arm may stand in for an LLM that failed to load, and the reply says so; in a
    study (substitute off) the turn is refused instead."""
    def broken():
        raise OSError("no weights")

    failed = LoadingArm("llm", True, broken)
    while not failed.failed():
        pass
    chat = Engine(engine.catalog, engine.readout, {**engine.recommenders, "llm": failed}, n=3, pool=12)
    assert not chat.available("llm") and chat.available("lightgcn")
    state = ConversationState()
    reply = chat.respond(state, "I loved Glass Harbor", "llm")
    assert reply.served == "lightgcn" and reply.recommendations
    assert "could not be loaded" in reply.text and "LightGCN arm" in reply.text
    chat.substitute = False
    with pytest.raises(ArmUnavailable, match="failed to load"):
        chat.respond(ConversationState(), "I loved Glass Harbor", "llm")
    with pytest.raises(ArmUnavailable, match="no arm named"):
        chat.respond(ConversationState(), "I loved Glass Harbor", "sasrec")


def fake_study(db: Path, config: StudyConfig, seed: int = 0) -> dict[str, list[int]]:
    """A logged study with known answers: 12 participants per arm, the LLM arms answering `satisfied` higher; two
    participants of each LightGCN arm withdraw. Returns the `satisfied` answers per arm (withdrawn ones left out)."""
    rng = random.Random(seed)
    log = StudyLog(db)
    kept: dict[str, list[int]] = {a.name: [] for a in config.arms}
    for arm in config.arms:
        for k in range(12):
            code = new_code()
            log._write("INSERT INTO participants (code, arm, created, consent) VALUES (?, ?, ?, ?)",
                       (code, arm.name, 1.0, "yes"))
            log.log(code, "s", "consent", {"arm": arm.name})
            log.log(code, "s", "message", {"text": "something darker", "recommendations": [{"item_id": "1"}] * 5})
            log.log(code, "s", "feedback", {"item_id": "1", "liked": k % 2 == 0})
            log.log(code, "s", "word_ratings", {"marks": [{"item_id": "1", "word": "noir", "fits": k % 3 != 0}]})
            log.log(code, "s", "finish_task", {})
            satisfied = min(5, max(1, (4 if arm.recommender == "llm" else 2) + rng.choice([-1, 0, 1])))
            log.log(code, "s", "questionnaire", {"answers": {"satisfied": str(satisfied), "understood": "3",
                                                             "control": "4", "would_watch": "one", "comments": ""}})
            if arm.recommender == "lightgcn" and k < 2:
                log.withdraw(code)
            else:
                kept[arm.name].append(satisfied)
    log.close()
    return kept


def test_the_report_counts_arms_tests_each_factor_and_draws_plots(tmp_path: Path) -> None:
    from scipy.stats import mannwhitneyu

    config = StudyConfig.load(DEFAULT_CONFIG)
    db = tmp_path / "study.sqlite"
    kept = fake_study(db, config)
    out = subprocess.run([sys.executable, "-m", "face_app.study", "report", "--db", str(db), "--out",
                          str(tmp_path / "report")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| lightgcn-plain | 12 | 10 | 2 |" in text and "| llm-plain | 12 | 12 | 0 |" in text
    llm = [v for a in config.arms if a.recommender == "llm" for v in kept[a.name]]
    cf = [v for a in config.arms if a.recommender == "lightgcn" for v in kept[a.name]]
    expected = mannwhitneyu(llm, cf, alternative="two-sided")
    assert f"LLM vs LightGCN: Mann-Whitney U = {expected.statistic:.1f}, p = {expected.pvalue:.3f}" in text
    assert f"(n = {len(llm)} vs {len(cf)})" in text and expected.pvalue < 0.001
    for png in ("participants.png", "item-satisfied.png", "item-would_watch.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5_000
    assert "| llm-plain | 12 | 0.667 |" in text  # words marked, share fitting (k % 3 != 0: 8 of 12)
    assert "participants per group" in text


@pytest.mark.parametrize("case", ["empty", "foreign", "damaged", "missing"])
def test_the_report_refuses_a_log_it_cannot_read_and_changes_nothing(tmp_path: Path, case: str) -> None:
    db = tmp_path / "study.sqlite"
    if case == "empty":
        StudyLog(db).close()
    elif case == "foreign":
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE orders (id INTEGER)")
    elif case == "damaged":
        db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 500)
    before = db.read_bytes() if db.exists() else None
    out = subprocess.run([sys.executable, "-m", "face_app.study", "report", "--db", str(db), "--out",
                          str(tmp_path / "report")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.splitlines()) == 1
    assert not (tmp_path / "report" / "report.md").exists()
    assert (db.read_bytes() if db.exists() else None) == before


def test_the_word_rating_task_follows_the_questionnaire_and_logs_one_mark_per_word(engine: Engine,
                                                                                   tmp_path: Path) -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    app = App(engine, {}, study=config, log=StudyLog(tmp_path / "study.sqlite"))
    session = Session()
    app.consent(True, session)
    for text in ("I loved Glass Harbor", "something darker", "from the 90s"):
        app.chat(text, session)
    app.finish(session)
    out = app.submit_answers(session, "4", "3", "5", "one", "")
    questionnaire, rating, thanks, problems, note, *boxes = out
    assert rating.visible is True and thanks.visible is False and len(boxes) == config.word_rating_cards
    films = session.rating
    assert 1 <= len(films) <= config.word_rating_cards and all(words for _, words in films)
    assert set(dict(films)) <= set(session.state.shown)  # films the participant was shown
    for box, (item_id, words) in zip(boxes, films, strict=False):
        assert box.choices == [(w, w) for w in words] and box.label == engine.catalog.item(item_id).label
    ticked = [[words[0]] for _, words in films]
    screens = app.submit_ratings(session, *ticked)
    assert screens[1].visible is True and session.code in screens[2]
    (event,) = [e for e in app.log.events() if e["kind"] == "word_ratings"]
    marks = event["payload"]["marks"]
    assert len(marks) == sum(len(words) for _, words in films)
    assert [m["word"] for m in marks if m["fits"]] == [words[0] for _, words in films]


def test_an_incomplete_questionnaire_says_what_is_missing_and_stays(engine: Engine, tmp_path: Path) -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    app = App(engine, {}, study=config, log=StudyLog(tmp_path / "study.sqlite"))
    session = Session()
    app.consent(True, session)
    out = app.submit_answers(session, "4", None, "5", "one", "")
    questionnaire, rating, thanks, problems, note, *boxes = out
    assert questionnaire.visible is True and rating.visible is False and thanks.visible is False
    assert "please answer: I understood" in problems and len(boxes) == config.word_rating_cards
    assert [e["kind"] for e in app.log.events()] == ["consent"]
