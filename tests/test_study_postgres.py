"""The study log on PostgreSQL, for several app replicas sharing one study: the guarantees the SQLite log has, on a
real server (tests/pg_server.py) — every event committed at once and kept across a SIGKILL of the writer, balanced
enrolment, withdrawal and export, and two processes writing to one study at once with no event lost or doubled.
The two-writer test runs on SQLite too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pg_server import server, why_not

from face_app.study import DEFAULT_CONFIG, StudyConfig, StudyLog, redact

ROOT = Path(__file__).resolve().parents[1]
REASON = why_not()


@pytest.fixture(scope="module")
def postgres_url():
    if REASON:
        pytest.skip(REASON)
    with tempfile.TemporaryDirectory(prefix="face-app-pg-") as tmp, server(Path(tmp)) as url:
        yield url


WRITER = """
import sys, time
from face_app.study import StudyLog
log = StudyLog(sys.argv[1])
for k in range(int(sys.argv[3])):
    event = log.log("P-" + sys.argv[2], sys.argv[2], "message", {"k": k})
    print(event, flush=True)
"""


def writer(target: str, tag: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, target, tag, str(count)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def test_enrolment_events_withdrawal_and_export_on_postgres(postgres_url: str) -> None:
    config = StudyConfig.load(DEFAULT_CONFIG)
    log = StudyLog(postgres_url)
    codes = [log.enrol(config)[0] for _ in range(8)]
    arms = [log.arm_of(code) for code in codes]
    assert sorted(arms) == sorted([a.name for a in config.arms] * 2)  # balanced: two in each of four arms
    for code in codes:
        log.log(code, "s", "message", {"text": "I loved Fargo", "unicode": "千と千尋"})
    log.withdraw(codes[0])
    events = list(log.events())
    assert len(events) == 7 and codes[0] not in {e["code"] for e in events}
    assert events[0]["payload"]["unicode"] == "千と千尋" and events[0]["arm"] == arms[1]
    assert log.withdrawn() == [arms[0]]
    assert [json.loads(line)["code"] for line in log.export("jsonl").splitlines()] == codes[1:]
    log.close()
    out = subprocess.run([sys.executable, "-m", "face_app.study", "export", "--db", postgres_url, "--format", "csv"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + 7


def test_no_committed_event_is_lost_when_the_writer_is_killed(postgres_url: str) -> None:
    process = writer(postgres_url, "killed", 100_000)
    ids = [int(process.stdout.readline()) for _ in range(50)]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    log = StudyLog(postgres_url)
    kept = {e["id"] for e in log.events() if e["session"] == "killed"}
    log.close()
    assert set(ids) <= kept and len(kept) >= 50


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_write_one_study_with_nothing_lost_or_doubled(backend: str, tmp_path: Path,
                                                                    request) -> None:
    target = str(tmp_path / "study.sqlite") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    StudyLog(target).close()
    processes = [writer(target, f"w{n}-{backend}", 200) for n in range(2)]
    printed = [[int(line) for line in p.communicate(timeout=300)[0].split()] for p in processes]
    assert all(p.returncode == 0 for p in processes)
    log = StudyLog(target)
    events = [e for e in log.events() if e["session"].endswith(backend)]
    log.close()
    assert len(events) == 400 and len({e["id"] for e in events}) == 400
    for n, ids in enumerate(printed):
        mine = [e for e in events if e["session"] == f"w{n}-{backend}"]
        assert [e["payload"]["k"] for e in mine] == list(range(200)) and [e["id"] for e in mine] == ids


def test_a_bad_url_gets_one_clear_message_without_the_password() -> None:
    with pytest.raises(ValueError, match="cannot open the study log") as error:
        StudyLog("postgresql://someone:secret@127.0.0.1:1/none")
    assert "secret" not in str(error.value) and "***" in redact("postgresql://someone:secret@h/db")
