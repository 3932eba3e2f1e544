"""The Gradio 6 layout: a chat whose recommendations are cards, a side panel with the visitor's descriptors,
their history, a title search, a persona picker and a map of the catalog; optional study screens.

`build_demo(app)` lays out the Blocks around an `App` (`face_app.handlers`: what each event does);
`launch(app)` queues and serves it (what `python app.py`, `face_app.cli`, calls). HTML of the pieces:
`face_app.render`; the map's rows: `face_app.catalog_map`.

From code (gradio_client): `/chat` takes a message and returns the cleared box, the chat, the descriptors, the
history and the map (each named by its label); `/picks`, called next in the same client, returns the turn as
data, {"reply": text, "picks": [{item_id, title, year, rank, source, tokens, descriptors, genres, score,
reason}]}, so no program has to read the cards' HTML.
"""

from __future__ import annotations

import warnings
from typing import Any

import gradio as gr

from face_app.batching import MAX_BATCH
from face_app.catalog_map import MAP_CAPTION
from face_app.handlers import App, Session
from face_app.render import esc

# Turns handled at once: two of the LLM arm's batches (face_app.batching.MAX_BATCH), so that the turns of the
# next batch parse, plan and prepare their prompts while one batch searches, with a worker thread each (anyio lends
# gradio 40 by default); a bounded queue behind them. Under 64 sessions (`python -m bench.serving --sessions 64
# --turns 5`, three runs each, AMD EPYC AVX2, 2 cores, round 3 session 7) the median turn read 2.44-2.70 s against
# 2.82-3.32 s at MAX_BATCH, and the turns after the openings 2.92-3.22 s at the 95th percentile against 3.12-3.97 s;
# the openings, all 64 sent at once, read 4.14-4.97 s against 4.00-4.49 s.
CONCURRENCY = 2 * MAX_BATCH
QUEUE_SIZE = 64
THREADS = CONCURRENCY + 16

CSS = """
.fa-card {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 8px 10px; margin: 0;}
.fa-card .fa-title {font-weight: 600; font-size: 1.0em; line-height: 1.3;}
.fa-card .fa-meta {font-weight: 400; opacity: 0.75; font-size: 0.86em;}
.fa-card .fa-about {opacity: 0.8; font-size: 0.84em; line-height: 1.3;}
.fa-card .fa-words {line-height: 1.2;}
.fa-card .fa-reason {margin-top: 2px; font-size: 0.9em; line-height: 1.3;}
.fa-card .fa-how {font-size: 0.8em; opacity: 0.75;}
.fa-card .fa-how summary {cursor: pointer;}
.fa-card .fa-how code {word-break: break-all;}
.fa-chip {display: inline-block; padding: 0 8px; margin: 1px 3px 1px 0; border-radius: 999px;
  background: var(--color-accent-soft); border: 1px solid var(--border-color-accent); font-size: 0.86em;}
/* The history's rows are shown whole (HISTORY_SHOWN of them), not in a scroll box of their own: on a phone its
   clipped last row ran into the "and N earlier" line under the list. */
.fa-history {list-style: none; padding-left: 0; margin: 0;}
.fa-history li {padding: 3px 0; border-bottom: 1px dashed var(--border-color-primary);}
.fa-history + .fa-muted {margin-top: 4px;}
.fa-muted {opacity: 0.7; font-size: 0.88em;}
.fa-code {font-family: var(--font-mono); font-size: 1.3em; letter-spacing: 0.08em;}
/* Gradio floats the chat's toolbar (share, clear, copy) over the messages: a row above them instead. Its "scroll
   down" arrow would float over the cards once a turn is shown from its top (SHOW_TURN): not drawn. */
#chat .top-panel {position: static; align-self: flex-end;}
#chat .scroll-down-button-container {display: none;}
/* Gradio 6 puts thumbs under every assistant message (feedback is per chat, not per message): only cards keep them.
   They are the last two buttons of a message's row (dislike, like, after copy): labels are translated, order not. */
#chat .bot-row:not(:has(.fa-card)) .message-buttons button:nth-last-of-type(-n+2) {display: none;}
/* A turn in view (issue 25): at 1280x800 the reply's headline and three whole cards fit the chat. Rows are packed,
   the copy button goes from the visitor's messages and the replies' text (it stays on cards), and a card's copy
   and thumbs sit inside its bottom-right corner rather than on a row of their own. */
#chat .message-row {padding-top: 4px; padding-bottom: 4px;}
#chat .user-row .message {padding-top: 6px; padding-bottom: 6px;}
#chat .bot-row .message-content p {margin-top: 0; margin-bottom: 0;}
#chat .user-row .message-buttons, #chat .bot-row:not(:has(.fa-card)) .message-buttons {display: none;}
#chat .bot-row:has(.fa-card) {position: relative;}
#chat .bot-row:has(.fa-card) .message-buttons {position: absolute; right: 26px; bottom: 12px;}
"""

# After each update of the chat, the first message it added (the visitor's, or the reply's first) is scrolled to the
# top of the chat, so the visitor reads the reply from its headline down; Gradio's autoscroll would show its tail.
# Rows counted are those already shown in this tab, kept on `window`.
SHOW_TURN = """
async () => {
  const frame = () => new Promise(resolve => requestAnimationFrame(resolve));
  await frame();
  const rows = document.querySelectorAll("#chat .message-row");
  const seen = window.faRowsShown || 0;
  window.faRowsShown = Math.max(seen, rows.length);
  const first = rows[seen];
  if (!first) return;
  const log = first.closest("[role=log]");
  // On a phone the page had scrolled to the message box under the chat: bring the chat back into the window.
  const chat = log.getBoundingClientRect();
  if (chat.top < 0 || chat.bottom > window.innerHeight) window.scrollBy(0, chat.top - 4);
  // The new cards may still be laying out: place the row again until it sits at the top (or the chat ends).
  for (let tries = 0; tries < 20; tries++) {
    const offset = first.getBoundingClientRect().top - log.getBoundingClientRect().top;
    const before = log.scrollTop;
    log.scrollTop += offset;
    if (Math.abs(offset) < 1 || (log.scrollTop === before && tries > 2)) return;
    await frame();
  }
}
"""


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
                    # No floating label over the messages; no autoscroll to the tail (SHOW_TURN shows the turn).
                    chatbot = gr.Chatbot(label="Chat", show_label=False, height=580, elem_id="chat", layout="panel",
                                         group_consecutive_messages=False, autoscroll=False,
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
                    plot = gr.Plot(label="Where you are in the catalog (CF item map)", elem_id="map")
                    gr.Markdown(f"<span class='fa-muted'>{esc(MAP_CAPTION)}</span>", elem_id="map-caption")
                    with gr.Accordion("This turn's picks as data", open=False):
                        picks = gr.JSON(label="Picks", elem_id="picks")
        if study is not None:
            with gr.Column(visible=False) as questionnaire_screen:
                gr.Markdown("### A few questions")
                fields = []
                for q in study.questionnaire:
                    if q.kind == "likert":
                        fields.append(gr.Radio([str(v) for v in range(1, q.scale + 1)], label=q.text,
                                               info=f"1 = disagree … {q.scale} = agree", elem_id=f"q-{q.id}"))
                    elif q.kind == "choice":
                        fields.append(gr.Radio(list(q.options), label=q.text, elem_id=f"q-{q.id}"))
                    else:
                        fields.append(gr.Textbox(label=q.text, lines=2, elem_id=f"q-{q.id}"))
                submit = gr.Button("Submit", variant="primary")
                problems = gr.Markdown()
            with gr.Column(visible=False) as rating_screen:
                gr.Markdown("### One last thing: the words\nFor each film, tick the words that describe it (its "
                            "content, setting, characters, mood, themes, era or audience). Leave the rest unticked.")
                word_boxes = [gr.CheckboxGroup(choices=[], visible=False, elem_id=f"rate-{k}")
                              for k in range(study.word_rating_cards)]
                send_ratings = gr.Button("Send", variant="primary", elem_id="send-ratings")
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
        # `/chat` returns the cleared message box, the chat, the descriptors and the history (clients unpack four
        # outputs); the catalog map follows in its own event, so the reply never waits for it. The turn as data
        # is `/picks` (JSON: the reply and each pick's id, title, year, rank, source, index tokens,
        # descriptors), called after it in the same client session.
        turn_outputs = [chatbot, descriptor_box, history, session]
        send.click(app.chat, [message, session], [message, *turn_outputs], api_name="chat") \
            .then(app.map, [session], [plot], **private) \
            .then(app.question, [session], [choice], **private) \
            .then(app.picks, [session], [picks], api_name="picks")
        message.submit(app.chat, [message, session], [message, *turn_outputs], **private) \
            .then(app.map, [session], [plot], **private) \
            .then(app.question, [session], [choice], **private).then(app.picks, [session], [picks], **private)
        choice.input(app.choose, [choice, session], outputs, **private) \
            .then(app.question, [session], [choice], **private).then(app.picks, [session], [picks], **private)
        chatbot.like(app.feedback, [session], outputs, **private)
        chatbot.change(None, None, None, js=SHOW_TURN, **private)
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
                         [questionnaire_screen, rating_screen, thanks_screen, problems, thanks, *word_boxes],
                         api_visibility="private")
            send_ratings.click(app.submit_ratings, [session, *word_boxes], [rating_screen, thanks_screen, thanks],
                               api_visibility="private")
            download.click(app.admin_export, [secret, fmt], [export_file, export_note], api_visibility="private")
    return demo


def launch(app: App, **kwargs: Any) -> gr.Blocks:
    """Queue sized for 2 vCPUs, then launch (no host or port unless given: a Space sets them)."""
    # Gradio's queue asks pandas 3 for deprecated options on every event; nothing for us to act on.
    warnings.filterwarnings("ignore", message=r".*(no_silent_downcasting|copy keyword is deprecated).*")
    demo = build_demo(app)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(theme=gr.themes.Soft(), css=CSS, max_threads=THREADS, **kwargs)
    return demo
