"""The app's handlers: what each click and message does to a visitor's `Session`, around one shared engine.

Every per-visitor fact lives in a `Session` (held in `gr.State` by the layout, `face_app.ui`), so a second
tab is a second session. `App` answers the chat, the question's choices, likes, personas, the title search,
start over, and the study's consent, questionnaire, withdrawal and admin export; each returns the values of
the layout's outputs. `load_app` verifies and loads a bundle and wraps its engine in an `App`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from face_app.arms import ArmUnavailable
from face_app.bundle import Bundle, build_facts
from face_app.catalog_map import catalog_map, catalog_points, map_chart, map_colours
from face_app.dialogue import ConversationState, clean_message
from face_app.engine import EMPTY_MESSAGE_HINT, MAX_MESSAGE_CHARS, Engine, Reply
from face_app.render import card, chat_text, chips, esc, history_html, picks_row
from face_app.study import ADMIN_SECRET_ENV, Arm, StudyConfig, StudyLog, admin_allowed, normalise_code

console = logging.getLogger("face_app")

PROMPT_LOG = 50  # history items logged with each study message
ECHO_CHARS = 200  # how much of an over-long message is echoed back in the chat
NEITHER_CHOICE = "neither"  # the question's "none of these" answer (item ids never take this value)


@dataclass
class Session:
    """One visitor: the engine's conversation state, the chat as shown, and which message is which item."""

    state: ConversationState = field(default_factory=ConversationState)
    messages: list[dict[str, Any]] = field(default_factory=list)
    cards: dict[int, str] = field(default_factory=dict)  # chat message index -> item id of its card
    ranks: dict[int, int] = field(default_factory=dict)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    code: str | None = None  # study participant code
    arm: str | None = None
    recommender: str | None = None
    show_descriptors: bool = True
    last_event: float = field(default_factory=time.time)
    banner: str = ""
    turn: dict[str, Any] = field(default_factory=lambda: {"reply": "", "picks": []})  # the latest reply, as data
    rating: list[tuple[str, list[str]]] = field(default_factory=list)  # the word-rating task's films and words


def served(session: Session, reply: Reply) -> dict[str, Any]:
    """What a logged turn records of the arm that served it: its recommender and whether words were shown."""
    return {"recommender": reply.served, "descriptors": session.show_descriptors}


# --- actions -----------------------------------------------------------------------------------------------------


class App:
    """The app's handlers around one shared engine (and, in study mode, one study log)."""

    def __init__(self, engine: Engine, item_map: dict[str, tuple[float, float]], *, title: str = "face-app",
                 study: StudyConfig | None = None, log: StudyLog | None = None,
                 persona_labels: dict[str, str] | None = None, build: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.item_map = item_map
        self.points = catalog_points(engine, item_map)  # the map's static layer, built once
        self.colours = map_colours(engine)
        self.title = title
        self.study = study
        self.log = log
        self.persona_labels = persona_labels or {u: f"User {u}" for u in engine.personas}
        self.build = build or {}  # the bundle's manifest hash and the app's commit, in every logged event
        if study is not None:
            engine.substitute = False  # in a study the arm is the experiment: nothing stands in for it
            for arm in study.arms:
                if arm.recommender not in engine.recommenders:
                    console.warning(f"study: arm {arm.name!r} needs the {arm.recommender} recommender, which this "
                                    "app did not load: nobody will be enrolled into it")
                elif not engine.available(arm.recommender):
                    console.warning(f"study: arm {arm.name!r} waits for the {arm.recommender} recommender to load: "
                                    "nobody is enrolled into it until it has (and never if its load fails)")

    # study bookkeeping

    def _event(self, session: Session, kind: str, **payload: Any) -> None:
        if self.log is None or session.code is None:
            return
        now = time.time()
        payload = {"arm": session.arm, "turn": session.state.turns, "since_last_s": round(now - session.last_event, 3),
                   "build": self.build, **payload}
        session.last_event = now
        self.log.log(session.code, session.session_id, kind, payload)

    def servable(self, arm: Arm) -> bool:
        """Whether a participant may be enrolled into `arm` now: its recommender is loaded (`Engine.available`)."""
        return self.engine.available(arm.recommender)

    def enrol(self, session: Session, arm: Arm) -> None:
        """Put the session in `arm`, exactly: an arm the engine cannot serve is refused, never replaced."""
        if not self.servable(arm):
            raise ArmUnavailable(f"arm {arm.name!r} needs the {arm.recommender} recommender, which is not loaded")
        session.arm = arm.name
        session.show_descriptors = arm.show_descriptors
        session.recommender = arm.recommender

    # outputs

    def panel(self, session: Session) -> tuple:
        """The chat, the descriptors, the history, the map and the session (what most events redraw)."""
        chat, chip_html, history, session = self.turn_panel(session)
        return chat, chip_html, history, self.map(session), session

    def turn_panel(self, session: Session) -> tuple:
        """The panel without the map: what `/chat` returns. The map (a row for every catalog item) follows in
        its own event, so a reply is shown without waiting for it."""
        words = self.engine.user_descriptors(session.state) if session.show_descriptors else []
        chip_html = f"<div><b>Your descriptors</b></div>{chips(words)}" if session.show_descriptors else ""
        return (session.messages, chip_html, history_html(self.engine, session.state, session.show_descriptors),
                session)

    def map(self, session: Session) -> Any:
        """The catalog map for this visitor (`face_app.catalog_map`): its rows as one layered chart."""
        return map_chart(catalog_map(self.engine, self.points, self.item_map, session.state), self.colours)

    def _reply(self, session: Session, reply: Reply) -> None:
        session.turn = {"reply": reply.text, "picks": [picks_row(rec) for rec in reply.recommendations]}
        session.messages.append({"role": "assistant", "content": chat_text(reply.text)})
        for rec in reply.recommendations:
            session.cards[len(session.messages)] = rec.item_id
            session.ranks[len(session.messages)] = rec.rank
            session.messages.append({"role": "assistant", "content": card(rec, session.show_descriptors)})

    def chat(self, message: str, session: Session) -> tuple:
        """One turn: the visitor's message in, the reply and its cards out."""
        message = clean_message(message or "")
        if not message:
            session.messages.append({"role": "assistant", "content": chat_text(EMPTY_MESSAGE_HINT)})
            return ("", *self.turn_panel(session))
        shown = message if len(message) <= MAX_MESSAGE_CHARS else message[:ECHO_CHARS] + " …"
        session.messages.append({"role": "user", "content": chat_text(shown)})
        reply = self.engine.respond(session.state, message, session.recommender)
        self._reply(session, reply)
        self._event(session, "message", text=message[:MAX_MESSAGE_CHARS], length=len(message), reply=reply.text,
                    served=served(session, reply), seconds=round(reply.seconds, 3),
                    recommendations=[{"rank": r.rank, "item_id": r.item_id, "score": r.score, "source": r.source}
                                     for r in reply.recommendations],
                    history=list(session.state.history[-PROMPT_LOG:]))
        return ("", *self.turn_panel(session))

    def picks(self, session: Session) -> dict[str, Any]:
        """The latest reply as data, for programs (the `/picks` endpoint) and the page's JSON panel:
        {"reply": its text, "picks": [{item_id, title, year, rank, source, tokens, descriptors, ...}, ...]}."""
        return session.turn

    def question(self, session: Session) -> dict:
        """The one-click answers to the pending "Did you mean ...?" question: shown only while one is open."""
        if not session.state.pending:
            return gr.Radio(choices=[], value=None, visible=False)
        asked = session.state.pending[0]
        choices = [(self.engine.catalog.item(i).label, i) for i in asked.choices] + [("Neither", NEITHER_CHOICE)]
        return gr.Radio(choices=choices, value=None, visible=True, label=f"Did you mean… (you wrote “{asked.written}”)")

    def choose(self, choice: str | None, session: Session) -> tuple:
        """A click on one of the question's answers: the same turn as answering in words."""
        if not choice or not session.state.pending:
            return self.panel(session)
        item_id = None if choice == NEITHER_CHOICE else choice
        label = "Neither" if item_id is None else self.engine.catalog.item(item_id).label \
            if item_id in self.engine.catalog else "?"
        session.messages.append({"role": "user", "content": chat_text(label)})
        reply = self.engine.answer(session.state, item_id, session.recommender)
        self._reply(session, reply)
        self._event(session, "choice", item_id=item_id, reply=reply.text, served=served(session, reply),
                    recommendations=[{"rank": r.rank, "item_id": r.item_id, "score": r.score, "source": r.source}
                                     for r in reply.recommendations])
        return self.panel(session)

    def feedback(self, session: Session, data: gr.LikeData) -> tuple:
        index = data.index[0] if isinstance(data.index, list | tuple) else data.index
        item_id = session.cards.get(int(index))
        if item_id is None:
            return self.panel(session)
        liked = data.liked is True or data.liked == "Like"
        self.engine.feedback(session.state, item_id, liked)
        self._event(session, "feedback", item_id=item_id, liked=liked, rank=session.ranks.get(int(index)))
        label = self.engine.catalog.item(item_id).label
        note = f"Noted: you like {label}; it joins your history." if liked else \
            f"Noted: no more {label}, or anything you disliked."
        session.messages.append({"role": "assistant", "content": chat_text(note)})
        return self.panel(session)

    def use_persona(self, user_id: str | None, session: Session) -> tuple:
        if not user_id:
            return self.panel(session)
        self.engine.use_persona(session.state, user_id)
        label = self.persona_labels.get(user_id, user_id)
        session.messages.append({"role": "assistant", "content": chat_text(
            f"You are now {label}, with {len(session.state.history)} movies in your history. "
            "Ask for recommendations, or say what you are in the mood for.")})
        self._event(session, "persona", user_id=user_id, history=len(session.state.history))
        reply = self.engine.respond(session.state, "recommend", session.recommender)
        self._reply(session, reply)
        self._event(session, "recommendations", served=served(session, reply), recommendations=[
            {"rank": r.rank, "item_id": r.item_id, "score": r.score, "source": r.source}
            for r in reply.recommendations])
        return self.panel(session)

    def search(self, query: str) -> dict:
        query = clean_message(query or "")
        hits = self.engine.catalog.search(query, k=8) if query else []
        choices = [(self.engine.catalog.item(i).label, i) for i, _ in hits]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    def add_title(self, item_id: str | None, session: Session) -> tuple:
        if item_id:
            added = self.engine.add_titles(session.state, [item_id])
            if added:
                label = self.engine.catalog.item(item_id).label
                session.messages.append({"role": "assistant", "content": chat_text(f"Added {label} to your history.")})
                self._event(session, "add_title", item_id=item_id)
        return self.panel(session)

    def start_over(self, session: Session) -> tuple:
        session.state.reset()
        session.turn = {"reply": "", "picks": []}
        session.messages.append({"role": "assistant", "content": chat_text("Starting over. Tell me a few movies you "
                                                                           "like, or pick a persona.")})
        self._event(session, "start_over")
        return self.panel(session)

    # study screens

    def consent(self, agreed: bool, session: Session) -> tuple:
        if not agreed or self.study is None or self.log is None:
            return (gr.Column(visible=True), gr.Column(visible=False), "Please tick the box to take part.", session)
        try:
            code, arm = self.log.enrol(self.study, servable=self.servable)
        except ArmUnavailable as error:
            console.error(f"study: nobody enrolled: {error}")
            return (gr.Column(visible=True), gr.Column(visible=False),
                    "The study cannot start a session right now (its recommenders are still loading or failed to "
                    "load). Nothing was recorded; please try again in a minute, or tell the researcher.", session)
        session.code = code
        self.enrol(session, arm)
        self._event(session, "consent", recommender=session.recommender, show_descriptors=session.show_descriptors,
                    arms_servable=[a.name for a in self.study.arms if self.servable(a)])
        session.banner = (f"Your participant code: <span class='fa-code'>{esc(code)}</span> (keep it to withdraw "
                          f"later). {esc(self.study.task)}")
        return gr.Column(visible=False), gr.Column(visible=True), "", session

    def finish(self, session: Session) -> tuple:
        if self.study and session.state.turns < self.study.min_turns:
            gr.Warning(f"Please chat for at least {self.study.min_turns} turns first.")
            return gr.Column(visible=True), gr.Column(visible=False)
        self._event(session, "finish_task", liked=list(session.state.liked), disliked=list(session.state.disliked))
        return gr.Column(visible=False), gr.Column(visible=True)

    def submit_answers(self, session: Session, *values: Any) -> tuple:
        assert self.study is not None
        answers = {q.id: v for q, v in zip(self.study.questionnaire, values, strict=True)}
        problems = self.study.check_answers(answers)
        if problems:
            return (gr.Column(visible=True), gr.Column(visible=False), gr.Column(visible=False),
                    "<br>".join(esc(p) for p in problems), "",
                    *[gr.CheckboxGroup(visible=False)] * self.study.word_rating_cards)
        self._event(session, "questionnaire", answers=answers)
        session.rating = self.rating_cards(session)
        if session.rating:
            boxes = [gr.CheckboxGroup(choices=words, value=[], label=self.engine.catalog.item(item_id).label,
                                      visible=True) for item_id, words in session.rating]
            boxes += [gr.CheckboxGroup(choices=[], value=[], visible=False)] * (self.study.word_rating_cards
                                                                               - len(boxes))
            return (gr.Column(visible=False), gr.Column(visible=True), gr.Column(visible=False), "", "", *boxes)
        return (gr.Column(visible=False), gr.Column(visible=False), gr.Column(visible=True), "", self.thanks(session),
                *[gr.CheckboxGroup(visible=False)] * self.study.word_rating_cards)

    def thanks(self, session: Session) -> str:
        return (f"Thank you! Your participant code is <span class='fa-code'>{esc(session.code)}</span>. "
                "To withdraw your data later, enter it in the withdrawal box on the first page.")

    def rating_cards(self, session: Session) -> list[tuple[str, list[str]]]:
        """The films of the word-rating task: up to `word_rating_cards` of the picks the participant was shown, those
        they liked first, then the latest; each with the words its card shows."""
        assert self.study is not None
        state = session.state
        picks = set(state.shown)
        shown = [i for i in [*state.liked, *reversed(state.shown)] if i in picks and i in self.engine.catalog]
        films = list(dict.fromkeys(shown))[: self.study.word_rating_cards]
        return [(item_id, words) for item_id in films if (words := self.engine.item_descriptors(item_id))]

    def submit_ratings(self, session: Session, *ticked: Any) -> tuple:
        """The word-rating task's marks, one per shown word (ticked: it fits the film), logged as one event."""
        marks = [{"item_id": item_id, "word": word, "fits": word in (chosen or [])}
                 for (item_id, words), chosen in zip(session.rating, ticked, strict=False) for word in words]
        self._event(session, "word_ratings", marks=marks)
        return gr.Column(visible=False), gr.Column(visible=True), self.thanks(session)

    def withdraw(self, code: str) -> str:
        if self.log is None:
            return ""
        removed = self.log.withdraw(code or "")
        if removed:
            return f"Withdrawn: every record of {esc(normalise_code(code))} was deleted."
        return "No records under that code."

    def admin_export(self, secret: str, fmt: str) -> tuple:
        if self.log is None or not admin_allowed(secret):
            disabled = not os.environ.get(ADMIN_SECRET_ENV)
            return None, ("Admin download is disabled (no secret set)." if disabled else "Wrong secret.")
        out = Path(tempfile.mkdtemp(prefix="face-app-export-")) / f"study-events.{fmt}"
        out.write_text(self.log.export(fmt))
        return str(out), f"{sum(1 for _ in self.log.events())} events."


def persona_labels(engine: Engine, users: Any) -> dict[str, str]:
    """"User 42 · 120 movies · 25, student" for each persona (demographics when the dataset has them)."""
    labels = {}
    info = {} if users is None else {str(r["user_id"]): r for r in users.to_dict("records")}
    for user_id, history in engine.personas.items():
        parts = [f"User {user_id}", f"{len(history)} movies"]
        row = info.get(user_id, {})
        extra = ", ".join(str(row[k]) for k in ("age", "gender", "occupation") if k in row and str(row[k]) not in
                          ("", "nan", "<NA>"))
        if extra:
            parts.append(extra)
        labels[user_id] = " · ".join(parts)
    return labels


def load_app(bundle_dir: Path, *, study: StudyConfig | None = None, log: StudyLog | None = None,
             load_llm: bool = True, background: bool = False, precision: str = "fp32") -> App:
    """Verify and load a bundle, read its catalog from the dataset, and wrap it in an `App`.

    background: the LLM loads on a background thread while the page is served (`python app.py` does this);
    precision: the LLM's, `fp32` or `bf16` (`face_app.decoder.ItemGenerator.use_precision`)."""
    bundle = Bundle.load(bundle_dir)
    engine = Engine.from_bundle(bundle, load_llm=load_llm, background=background, precision=precision)
    return App(engine, bundle.item_map, title=f"face-app · {bundle.name}", study=study, log=log,
               persona_labels=persona_labels(engine, engine.users), build=build_facts(bundle_dir))
