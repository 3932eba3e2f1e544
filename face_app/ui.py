"""The Gradio 6 app: a chat whose recommendations are cards, a side panel with the visitor's descriptors,
their history, a title search, a persona picker and a map of the catalog; optional study mode.

`build_demo(engine, item_map, study=...)` returns the Blocks; `main(argv)` (what `app.py` calls)
loads a bundle and launches it. Every per-visitor fact lives in a `Session` held in `gr.State`, so a
second tab is a second session. All text from the dataset or the visitor is HTML-escaped before it is
put in a card, a chip or the history; a chat message's text is also made markdown-inert (`chat_text`), so
what a visitor types is shown as typed and never becomes a link, an image or markup.

From code (gradio_client): `/chat` takes a message and returns the cleared box, the chat, the descriptors, the
history and the map (each named by its label); `/picks`, called next in the same client, returns the turn as
data, {"reply": text, "picks": [{item_id, title, year, rank, source, tokens, descriptors, genres, score,
reason}]}, so no program has to read the cards' HTML.
"""


import os
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from face_app.catalog_map import catalog_map, catalog_points, map_colours
from face_app.dialogue import ConversationState, clean_message
from face_app.engine import EMPTY_MESSAGE_HINT, MAX_MESSAGE_CHARS, Engine, Reply
from face_app.render import card, chat_text, chips, esc, history_html, picks_row
from face_app.study import ADMIN_SECRET_ENV, Arm, StudyConfig, StudyLog, admin_allowed, normalise_code

# Two vCPUs: two turns at a time, a bounded queue behind them.
CONCURRENCY = 2
QUEUE_SIZE = 64
PROMPT_LOG = 50  # history items logged with each study message
ECHO_CHARS = 200  # how much of an over-long message is echoed back in the chat
NEITHER_CHOICE = "neither"  # the question's "none of these" answer (item ids never take this value)

CSS = """
.fa-card {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 8px 10px; margin: 0;}
.fa-card .fa-title {font-weight: 600; font-size: 1.02em;}
.fa-card .fa-meta {opacity: 0.75; font-size: 0.88em;}
.fa-card .fa-tokens {font-family: var(--font-mono); font-size: 0.8em; opacity: 0.7; word-break: break-all;}
.fa-card .fa-reason {margin-top: 4px; font-size: 0.92em;}
.fa-chip {display: inline-block; padding: 1px 9px; margin: 2px 3px 2px 0; border-radius: 999px;
  background: var(--color-accent-soft); border: 1px solid var(--border-color-accent); font-size: 0.86em;}
.fa-history {list-style: none; padding-left: 0; margin: 0; max-height: 340px; overflow-y: auto;}
.fa-history li {padding: 3px 0; border-bottom: 1px dashed var(--border-color-primary);}
.fa-muted {opacity: 0.7; font-size: 0.88em;}
.fa-code {font-family: var(--font-mono); font-size: 1.3em; letter-spacing: 0.08em;}
"""


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


# --- actions -----------------------------------------------------------------------------------------------------


class App:
    """The app's handlers around one shared engine (and, in study mode, one study log)."""

    def __init__(self, engine: Engine, item_map: dict[str, tuple[float, float]], *, title: str = "face-app",
                 study: StudyConfig | None = None, log: StudyLog | None = None,
                 persona_labels: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.item_map = item_map
        self.points = catalog_points(engine, item_map)  # the map's static layer, built once
        self.title = title
        self.study = study
        self.log = log
        self.persona_labels = persona_labels or {u: f"User {u}" for u in engine.personas}

    # study bookkeeping

    def _event(self, session: Session, kind: str, **payload: Any) -> None:
        if self.log is None or session.code is None:
            return
        now = time.time()
        payload = {"arm": session.arm, "turn": session.state.turns, "since_last_s": round(now - session.last_event, 3),
                   **payload}
        session.last_event = now
        self.log.log(session.code, session.session_id, kind, payload)

    def enrol(self, session: Session, arm: Arm) -> None:
        session.arm = arm.name
        session.show_descriptors = arm.show_descriptors
        session.recommender = arm.recommender if arm.recommender in self.engine.recommenders else "lightgcn"

    # outputs

    def panel(self, session: Session) -> tuple:
        words = self.engine.user_descriptors(session.state) if session.show_descriptors else []
        chip_html = f"<div><b>Your descriptors</b></div>{chips(words)}" if session.show_descriptors else ""
        return (session.messages, chip_html, history_html(self.engine, session.state, session.show_descriptors),
                catalog_map(self.engine, self.points, self.item_map, session.state), session)

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
            return ("", *self.panel(session))
        shown = message if len(message) <= MAX_MESSAGE_CHARS else message[:ECHO_CHARS] + " …"
        session.messages.append({"role": "user", "content": chat_text(shown)})
        reply = self.engine.respond(session.state, message, session.recommender)
        self._reply(session, reply)
        self._event(session, "message", text=message[:MAX_MESSAGE_CHARS], length=len(message), reply=reply.text,
                    seconds=round(reply.seconds, 3),
                    recommendations=[{"rank": r.rank, "item_id": r.item_id, "score": r.score, "source": r.source}
                                     for r in reply.recommendations],
                    history=list(session.state.history[-PROMPT_LOG:]))
        return ("", *self.panel(session))

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
        self._event(session, "choice", item_id=item_id, reply=reply.text,
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
        self._event(session, "recommendations", recommendations=[
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
        code, arm = self.log.enrol(self.study)
        session.code = code
        self.enrol(session, arm)
        self._event(session, "consent", recommender=session.recommender, show_descriptors=session.show_descriptors)
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
            return gr.Column(visible=True), gr.Column(visible=False), "<br>".join(esc(p) for p in problems), ""
        self._event(session, "questionnaire", answers=answers)
        thanks = (f"Thank you! Your participant code is <span class='fa-code'>{esc(session.code)}</span>. "
                  "To withdraw your data later, enter it in the withdrawal box on the first page.")
        return gr.Column(visible=False), gr.Column(visible=True), "", thanks

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



# --- layout ------------------------------------------------------------------------------------------------------


def build_demo(app: App) -> gr.Blocks:
    """The Blocks (call `.queue(...)` and `.launch(theme=..., css=CSS)` on it, as `launch` does)."""
    study = app.study
    with gr.Blocks(title=app.title) as demo:
        session = gr.State(Session())
        gr.Markdown(f"## {esc(app.title)}\nA movie recommender you talk to. It explains itself with a few words "
                    "(FACE descriptors) and writes each pick as its item index (LC-Rec).")
        with gr.Column(visible=study is not None) as consent_screen:
            if study is not None:
                gr.Markdown(esc(study.consent))
                agree = gr.Checkbox(label="I have read this and agree to take part.")
                start = gr.Button("Start", variant="primary")
                consent_note = gr.Markdown()
                with gr.Accordion("Withdraw my data", open=False):
                    code_box = gr.Textbox(label="Participant code")
                    withdraw_btn = gr.Button("Withdraw")
                    withdraw_note = gr.Markdown()
        with gr.Column(visible=study is None) as main_screen:
            banner = gr.Markdown()
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=320):
                    # One row per message, so a like's index is the message's index (grouped rows report the group's).
                    chatbot = gr.Chatbot(label="Chat", height=560, elem_id="chat", layout="panel",
                                         group_consecutive_messages=False,
                                         placeholder="Say what you liked: *I loved Toy Story and Fargo*")
                    with gr.Row():
                        message = gr.Textbox(label="Message", show_label=False, placeholder="Type a message…",
                                             scale=5, elem_id="message")
                        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="send")
                    # One-click answers to "Did you mean ...?", shown only while a question is open.
                    choice = gr.Radio(choices=[], visible=False, elem_id="title-choice")
                    with gr.Row():
                        restart = gr.Button("Start over", size="sm", elem_id="start-over")
                        if study is not None:
                            done = gr.Button("I'm done", size="sm", variant="secondary")
                    gr.Markdown("<span class='fa-muted'>Try: “more like the second one”, “something darker”, "
                                "“from the 60s or 70s”, “no musicals”, “show me 10”, “seen it”, “not that”, "
                                "“why that one?”, “start over”. "
                                "The thumbs under a card like or dislike it.</span>")
                with gr.Column(scale=2, min_width=280):
                    with gr.Group():
                        persona = gr.Dropdown(label="Start as a real test user",
                                              choices=[(label, u) for u, label in app.persona_labels.items()],
                                              value=None, elem_id="persona")
                        use_persona = gr.Button("Use this persona", size="sm", elem_id="use-persona")
                    with gr.Group():
                        query = gr.Textbox(label="Add a title to your history", placeholder="e.g. fargo",
                                           elem_id="title-search")
                        matches = gr.Dropdown(label="Matches", choices=[], elem_id="title-matches")
                        add = gr.Button("Add to history", size="sm", elem_id="add-title")
                    descriptor_box = gr.HTML(label="Your descriptors", elem_id="user-descriptors")
                    gr.Markdown("**Your history** (newest first)")
                    history = gr.HTML(label="Your history", elem_id="history")
                    plot = gr.ScatterPlot(x="x", y="y", color="group", color_map=map_colours(app.engine),
                                          tooltip=["title", "group"], x_title=" ", y_title=" ",
                                          x_axis_labels_visible="hidden", height=320,
                                          label="Where you are in the catalog (CF item map)", elem_id="map")
                    with gr.Accordion("This turn's picks as data", open=False):
                        picks = gr.JSON(label="Picks", elem_id="picks")
        if study is not None:
            with gr.Column(visible=False) as questionnaire_screen:
                gr.Markdown("### A few questions")
                fields = []
                for q in study.questionnaire:
                    if q.kind == "likert":
                        fields.append(gr.Radio([str(v) for v in range(1, q.scale + 1)], label=q.text,
                                               info=f"1 = disagree … {q.scale} = agree"))
                    elif q.kind == "choice":
                        fields.append(gr.Radio(list(q.options), label=q.text))
                    else:
                        fields.append(gr.Textbox(label=q.text, lines=2))
                submit = gr.Button("Submit", variant="primary")
                problems = gr.Markdown()
            with gr.Column(visible=False) as thanks_screen:
                thanks = gr.Markdown()
            with gr.Accordion("Admin", open=False):
                secret = gr.Textbox(label="Admin secret", type="password")
                fmt = gr.Radio(["csv", "jsonl"], value="csv", label="Format")
                download = gr.Button("Export events")
                export_file = gr.File(label="Export")
                export_note = gr.Markdown()

        outputs = [chatbot, descriptor_box, history, plot, session]
        private = {"api_visibility": "private"}
        # `/chat` keeps its five outputs (clients unpack them); the turn as data is `/picks` (JSON: the reply and
        # each pick's id, title, year, rank, source, index tokens, descriptors), called after it in the same
        # client session.
        send.click(app.chat, [message, session], [message, *outputs], api_name="chat") \
            .then(app.question, [session], [choice], **private) \
            .then(app.picks, [session], [picks], api_name="picks")
        message.submit(app.chat, [message, session], [message, *outputs], **private) \
            .then(app.question, [session], [choice], **private).then(app.picks, [session], [picks], **private)
        choice.input(app.choose, [choice, session], outputs, **private) \
            .then(app.question, [session], [choice], **private).then(app.picks, [session], [picks], **private)
        chatbot.like(app.feedback, [session], outputs, **private)
        use_persona.click(app.use_persona, [persona, session], outputs, api_name="persona") \
            .then(app.question, [session], [choice], **private).then(app.picks, [session], [picks], **private)
        query.submit(app.search, [query], [matches], api_name="search")
        add.click(app.add_title, [matches, session], outputs, api_name="add_title")
        restart.click(app.start_over, [session], outputs, api_name="start_over") \
            .then(app.question, [session], [choice], **private)
        demo.load(app.panel, [session], outputs, **private)
        if study is not None:
            start.click(app.consent, [agree, session], [consent_screen, main_screen, consent_note, session],
                        api_visibility="private").then(lambda s: s.banner, [session], [banner],
                                                          api_visibility="private")
            withdraw_btn.click(app.withdraw, [code_box], [withdraw_note], api_visibility="private")
            done.click(app.finish, [session], [main_screen, questionnaire_screen], api_visibility="private")
            submit.click(app.submit_answers, [session, *fields],
                         [questionnaire_screen, thanks_screen, problems, thanks], api_visibility="private")
            download.click(app.admin_export, [secret, fmt], [export_file, export_note], api_visibility="private")
    return demo


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
             load_llm: bool = True) -> App:
    """Verify and load a bundle, read its catalog from the dataset, and wrap it in an `App`."""
    from face_app.bundle import Bundle

    bundle = Bundle.load(bundle_dir)
    engine = Engine.from_bundle(bundle, load_llm=load_llm)
    return App(engine, bundle.item_map, title=f"face-app · {bundle.name}", study=study, log=log,
               persona_labels=persona_labels(engine, engine.users))


def launch(app: App, **kwargs: Any) -> gr.Blocks:
    """Queue sized for 2 vCPUs, then launch (no host or port unless given: a Space sets them)."""
    # Gradio's queue asks pandas 3 for deprecated options on every event; nothing for us to act on.
    warnings.filterwarnings("ignore", message=r".*(no_silent_downcasting|copy keyword is deprecated).*")
    demo = build_demo(app)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(theme=gr.themes.Soft(), css=CSS, **kwargs)
    return demo
