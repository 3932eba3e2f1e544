"""Study mode: consent, participant codes, arms, a questionnaire, and an event log on SQLite.

- `StudyConfig.load(path)` reads the YAML study design (`configs/study.yaml` is the default): consent
  text, task, arms (each a recommender and whether descriptors are shown), questionnaire items.
- `StudyLog(path)` is the event log: SQLite in WAL mode, one transaction committed per event, so a
  crash or a restart loses nothing that was logged. Participants are known only by a random code;
  no IP address, user agent or name is ever stored.
- Arms are assigned at random among the arms with the fewest participants so far (balanced).
- Withdrawal by code deletes every row of that participant.
- `python -m face_app.study export --db PATH --format csv|jsonl [--out FILE]` and
  `python -m face_app.study withdraw CODE --db PATH` from the command line; the app's admin download
  is enabled only when `$FACE_APP_ADMIN_SECRET` is set, and compares the secret in constant time.
"""

from __future__ import annotations

import argparse
import csv
import hmac
import io
import json
import os
import random
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "study.yaml"
DEFAULT_DB = "study.sqlite"
ADMIN_SECRET_ENV = "FACE_APP_ADMIN_SECRET"
# Codes avoid look-alike characters (0/O, 1/I/L) so a participant can read theirs back.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
RECOMMENDERS = ("llm", "lightgcn")
QUESTION_KINDS = ("likert", "choice", "text")
EXPORT_FIELDS = ("id", "code", "arm", "session", "ts", "kind", "payload")


@dataclass(frozen=True)
class Arm:
    """One condition: which recommender answers, and whether descriptors are shown."""

    name: str
    recommender: str = "llm"
    show_descriptors: bool = True


@dataclass(frozen=True)
class Question:
    """One questionnaire item. likert: 1..scale; choice: one of `options`; text: free text."""

    id: str
    text: str
    kind: str = "likert"
    scale: int = 5
    options: tuple[str, ...] = ()
    required: bool = True


@dataclass
class StudyConfig:
    consent: str
    task: str
    arms: list[Arm]
    questionnaire: list[Question]
    min_turns: int = 3
    db: str = DEFAULT_DB
    # The descriptor rating task, after the questionnaire (so it cannot sway the answers): for this many films the
    # participant was shown, they tick the shown words that fit the film (0: no such step).
    word_rating_cards: int = 3

    @classmethod
    def load(cls, path: str | Path | None = None) -> StudyConfig:
        """Read a study YAML (default `configs/study.yaml`); raises ValueError naming what is wrong."""
        path = Path(path or DEFAULT_CONFIG)
        raw = yaml.safe_load(path.read_text()) or {}
        try:
            arms = [Arm(**arm) for arm in raw["arms"]]
            questions = [Question(**{**q, "options": tuple(q.get("options", ()))})
                         for q in raw.get("questionnaire", [])]
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path}: bad study config ({error})") from None
        for arm in arms:
            if arm.recommender not in RECOMMENDERS:
                raise ValueError(f"{path}: arm {arm.name!r} has recommender {arm.recommender!r}; use {RECOMMENDERS}")
        for question in questions:
            if question.kind not in QUESTION_KINDS:
                raise ValueError(f"{path}: question {question.id!r} has kind {question.kind!r}; use {QUESTION_KINDS}")
            if question.kind == "choice" and not question.options:
                raise ValueError(f"{path}: choice question {question.id!r} needs options")
        if not arms or len({a.name for a in arms}) != len(arms):
            raise ValueError(f"{path}: arms must be a non-empty list with distinct names")
        return cls(
            consent=str(raw.get("consent", "")).strip(),
            task=str(raw.get("task", "")).strip(),
            arms=arms,
            questionnaire=questions,
            min_turns=int(raw.get("min_turns", 3)),
            db=str(raw.get("db", DEFAULT_DB)),
            word_rating_cards=int(raw.get("word_rating_cards", 3)),
        )

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def check_answers(self, answers: dict[str, Any]) -> list[str]:
        """Problems with a filled questionnaire (empty when it is complete and valid)."""
        problems = []
        for q in self.questionnaire:
            value = answers.get(q.id)
            if value in (None, "") or (isinstance(value, str) and not value.strip()):
                if q.required:
                    problems.append(f"please answer: {q.text}")
                continue
            if q.kind == "likert" and not (isinstance(value, int | str) and str(value).isdigit()
                                           and 1 <= int(value) <= q.scale):
                problems.append(f"{q.id}: expected 1..{q.scale}")
            if q.kind == "choice" and value not in q.options:
                problems.append(f"{q.id}: expected one of {list(q.options)}")
        return problems


def new_code(length: int = 8) -> str:
    """A random participant code like `K7QH-3M2P` (about 40 bits)."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
    return f"{chars[: length // 2]}-{chars[length // 2:]}"


def normalise_code(code: str) -> str:
    """What a participant typed -> the stored form (case, spaces and a missing dash forgiven)."""
    chars = "".join(ch for ch in code.upper() if ch in CODE_ALPHABET)
    return f"{chars[: len(chars) // 2]}-{chars[len(chars) // 2:]}" if chars else ""


def admin_allowed(given: str | None, secret: str | None = None) -> bool:
    """True only when an admin secret is configured and `given` equals it (constant-time)."""
    secret = os.environ.get(ADMIN_SECRET_ENV) if secret is None else secret
    if not secret or not given:
        return False
    return hmac.compare_digest(given.encode(), secret.encode())


SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    code TEXT PRIMARY KEY, arm TEXT NOT NULL, created REAL NOT NULL, consent TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT NOT NULL, session TEXT NOT NULL,
    ts REAL NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_code ON events(code);
CREATE TABLE IF NOT EXISTS withdrawals (arm TEXT NOT NULL, ts REAL NOT NULL);
"""


def is_url(target: str | Path) -> bool:
    """Whether a log target is a PostgreSQL URL (else it is a SQLite file's path)."""
    return str(target).startswith(("postgresql://", "postgres://"))


@dataclass
class StudyLog:
    """The study's event log, committed per event. Safe to share between threads.

    path: a SQLite file (WAL mode; the default, for one app process) or a PostgreSQL URL
    (`postgresql://user@host:port/db`, for several app replicas sharing one study; psycopg 3). The same tables and
    the same guarantees on both: every event is one committed transaction, enrolment counts and inserts under one
    write lock (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's table lock), so two processes never enrol past balance nor
    lose or double an event."""

    path: Path | str
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.postgres = is_url(self.path)
        if self.postgres:
            import psycopg

            self.path = str(self.path)
            try:
                self._db = psycopg.connect(self.path, autocommit=True)
            except psycopg.Error as error:
                raise ValueError(f"cannot open the study log at {redact(self.path)}: {error}") from None
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(4242)")  # two replicas creating tables at once
                for statement in SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace(
                        " REAL ", " DOUBLE PRECISION ").split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            return
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return list(self._db.execute(self._sql(sql), args).fetchall())

    @contextmanager
    def _transaction(self, lock: str | None = None) -> Iterator[Any]:
        """One write transaction, under the process's lock and the database's write lock (`lock`: the PostgreSQL
        table to lock for the whole transaction)."""
        with self._lock:
            if self.postgres:
                with self._db.transaction():
                    if lock:
                        self._db.execute(f"LOCK TABLE {lock} IN SHARE ROW EXCLUSIVE MODE")
                    yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, sql: str, args: tuple) -> int:
        returning = self.postgres and sql.startswith("INSERT INTO events")
        with self._transaction() as db:
            cursor = db.execute(self._sql(sql) + (" RETURNING id" if returning else ""), args)
            return int(cursor.fetchone()[0]) if returning else int(getattr(cursor, "lastrowid", 0) or 0)

    def enrol(self, config: StudyConfig, rng: random.Random | None = None,
              servable: Callable[[Arm], bool] | None = None) -> tuple[str, Arm]:
        """A new participant: a fresh code and an arm drawn at random among the least-filled arms that the server
        can serve right now (`servable`; None: every arm). An arm it cannot serve is never enrolled into, and
        never replaced by another: with none servable, `ArmUnavailable` says which and why."""
        rng = rng or random.SystemRandom()
        arms = [a for a in config.arms if servable is None or servable(a)]
        if not arms:
            from face_app.arms import ArmUnavailable  # the app's error (arms loads torch: not for the CLI's sake)

            raise ArmUnavailable("no study arm can be served right now ("
                                 + ", ".join(f"{a.name}: {a.recommender}" for a in config.arms)
                                 + "); nobody is enrolled until one can")
        while True:
            code = new_code()
            # The counts and the insert under one write lock: replicas enrolling at once keep the arms balanced.
            with self._transaction(lock="participants") as db:
                counts = dict(db.execute("SELECT arm, COUNT(*) FROM participants GROUP BY arm").fetchall())
                fewest = min(counts.get(a.name, 0) for a in arms)
                arm = rng.choice([a for a in arms if counts.get(a.name, 0) == fewest])
                if db.execute(self._sql("SELECT 1 FROM participants WHERE code = ?"), (code,)).fetchone():
                    continue  # a code already taken: draw again
                db.execute(self._sql("INSERT INTO participants (code, arm, created, consent) VALUES (?, ?, ?, ?)"),
                           (code, arm.name, time.time(), config.consent))
            return code, arm

    def arm_of(self, code: str) -> str | None:
        rows = self._query("SELECT arm FROM participants WHERE code = ?", (normalise_code(code),))
        return rows[0][0] if rows else None

    def log(self, code: str, session: str, kind: str, payload: dict[str, Any] | None = None) -> int:
        """Append one event and commit it; returns its id. `payload` must be JSON-serialisable.

        A lone surrogate (which a browser can send in JSON but no UTF-8 encoder accepts) is stored as "?"."""
        text = json.dumps(payload or {}, ensure_ascii=False, sort_keys=True).encode("utf-8", "replace").decode()
        return self._write(
            "INSERT INTO events (code, session, ts, kind, payload) VALUES (?, ?, ?, ?, ?)",
            (code, session, time.time(), kind, text),
        )

    def withdraw(self, code: str) -> int:
        """Delete every event and the enrolment of `code`; returns how many rows went (0: unknown code). What stays
        is one row of `withdrawals` with the arm alone (no code, no data), so a report can count withdrawals."""
        code = normalise_code(code)
        with self._transaction() as db:
            row = db.execute(self._sql("SELECT arm FROM participants WHERE code = ?"), (code,)).fetchone()
            events = db.execute(self._sql("DELETE FROM events WHERE code = ?"), (code,)).rowcount
            enrolled = db.execute(self._sql("DELETE FROM participants WHERE code = ?"), (code,)).rowcount
            if row:
                db.execute(self._sql("INSERT INTO withdrawals (arm, ts) VALUES (?, ?)"), (row[0], time.time()))
        return events + enrolled

    def withdrawn(self) -> list[str]:
        """The arm of each withdrawal (nothing else of a withdrawn participant is kept)."""
        return [row[0] for row in self._query("SELECT arm FROM withdrawals ORDER BY ts")]

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event in order, with its participant's arm; payload decoded."""
        rows = self._query("SELECT e.id, e.code, p.arm, e.session, e.ts, e.kind, e.payload FROM events e "
                           "LEFT JOIN participants p ON p.code = e.code ORDER BY e.id")
        for row in rows:
            record = dict(zip(EXPORT_FIELDS, row, strict=True))
            record["payload"] = json.loads(record["payload"])
            yield record

    def participants(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT code, arm, created FROM participants ORDER BY created")
        return [{"code": c, "arm": a, "created": t} for c, a, t in rows]

    def export(self, fmt: str) -> str:
        """All events as CSV (payload as a JSON column) or JSON lines."""
        if fmt == "jsonl":
            return "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in self.events())
        if fmt != "csv":
            raise ValueError(f"format must be csv or jsonl, not {fmt!r}")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for event in self.events():
            writer.writerow({**event, "payload": json.dumps(event["payload"], ensure_ascii=False, sort_keys=True)})
        return out.getvalue()


class ReportError(RuntimeError):
    """A log the report cannot read: missing, damaged or foreign."""


def read_study(path: Path | str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Counter]:
    """(participants, events, withdrawn per arm) of a study log (a SQLite file or a PostgreSQL URL), or a
    `ReportError` that says what is wrong."""
    if not is_url(path):  # a file is checked read-only first: opening a log creates its tables
        if not Path(path).exists():
            raise ReportError(f"no study log at {path}")
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as error:
            raise ReportError(f"{path} is not a readable SQLite database ({error}); nothing was changed") from error
        if not {"participants", "events"} <= tables:
            raise ReportError(f"{path} is not a face-app study log (it has no participants and events tables); "
                              "nothing was changed")
    try:
        log = StudyLog(path)
    except ValueError as error:
        raise ReportError(str(error)) from None
    try:
        return log.participants(), list(log.events()), Counter(log.withdrawn())
    finally:
        log.close()


def db_path(config: StudyConfig | None = None) -> Path | str:
    """Where the log lives: `$FACE_APP_STUDY_DB` (a SQLite path, or a PostgreSQL URL for several replicas), else
    the config's `db`, else ./study.sqlite."""
    target = os.environ.get("FACE_APP_STUDY_DB") or (config.db if config else DEFAULT_DB)
    return target if is_url(target) else Path(target)


def redact(url: str) -> str:
    """A URL with its password hidden, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m face_app.study", description="face-app study log tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write every event as CSV or JSON lines")
    export.add_argument("--db", help="SQLite log or PostgreSQL URL (default: $FACE_APP_STUDY_DB or ./study.sqlite)")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--out", type=Path, help="output file (default: stdout)")
    withdraw = commands.add_parser("withdraw", help="delete every event of a participant code")
    withdraw.add_argument("code")
    withdraw.add_argument("--db")
    report = commands.add_parser("report", help="write the study's analysis: report.md and PNG plots "
                                 "(face_app/study_report.py)")
    report.add_argument("--db")
    report.add_argument("--out", type=Path, required=True, help="folder for report.md and the plots")
    report.add_argument("--config", type=Path, help="the study design it ran with (default: $FACE_APP_STUDY_CONFIG "
                        "or configs/study.yaml)")
    args = parser.parse_args(argv)

    path = args.db or db_path()
    if not is_url(path) and not Path(path).exists():
        print(f"error: no study log at {path}", file=sys.stderr)
        return 2
    if args.command == "report":
        from face_app.study_report import report as write

        try:
            config = StudyConfig.load(args.config or Path(os.environ.get("FACE_APP_STUDY_CONFIG") or DEFAULT_CONFIG))
            print(f"wrote {write(*read_study(path), config, args.out, redact(str(path)))}")
            return 0
        except (ReportError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    log = StudyLog(path)
    try:
        if args.command == "export":
            text = log.export(args.format)
            if args.out:
                args.out.write_text(text)
                print(f"wrote {args.out}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            return 0
        removed = log.withdraw(args.code)
        print(f"removed {removed} row(s) for {normalise_code(args.code)}")
        return 0 if removed else 1
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
