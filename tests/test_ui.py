"""The Gradio app: escaping, the API through gradio_client on loopback, and a real browser (Playwright
driving Debian's chromium): pick a persona, chat three turns, like an item, screenshot; after each turn the chat
shows it from its top, with thumbs under cards only; at 390 px the history list and its "and N earlier" line do not
overlap.

The app here serves the small invented catalog (tests/catalog_fixture.py); test_app.py serves a real
tiny bundle. Set FACE_APP_SCREENSHOT=path to keep the browser test's screenshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser import CHROMIUM, browser_session, open_app, whole_in_view
from catalog_fixture import ROWS, SmallReadout, items_frame
from PIL import Image

from bench.serving import serve
from face_app.arms import EmbeddingRecommender
from face_app.bundle import pca_2d
from face_app.catalog import Catalog
from face_app.catalog_map import HISTORY_GROUP, PICKS_GROUP, catalog_map
from face_app.dialogue import ConversationState
from face_app.engine import Engine, Recommendation
from face_app.handlers import App, Session
from face_app.render import HISTORY_SHOWN, card, chips, history_html

PERSONAS = {"7": ["1", "2", "4"], "8": ["5", "6", "11"]}
# Eight more dramas, and a persona who has seen every film but the light ones: more than the history list shows.
MORE_ROWS = [(str(12 + k), f"Harbor Lights {k + 1}", 1980 + k, ["Drama"], [0.3, 0.4, 0.1 * k, 0.9],
              ["snow", "family", "rain"]) for k in range(1, 9)]
LONG_PERSONA = {"9": ["1", "2", "3", "4", "8", "9", "10", "12", *(str(i) for i in range(13, 21))]}


def small_app(rows: list[tuple] = ROWS, personas: dict[str, list[str]] = PERSONAS) -> App:
    catalog = Catalog(items_frame(rows), popularity=np.arange(len(rows), 0, -1))
    readout = SmallReadout(rows)
    engine = Engine(catalog, readout, {"lightgcn": EmbeddingRecommender(readout, catalog.popularity)},
                    tokens=lambda i: f"<a_{i}><b_0><c_1>", n=3, pool=12, personas=personas)
    xy = pca_2d(readout.item_embeddings.double().numpy())
    return App(engine, {i: (float(x), float(y)) for i, (x, y) in zip(readout.item_ids, xy, strict=True)},
               persona_labels={u: f"User {u} · {len(items)} movies" for u, items in personas.items()})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[App, str]]:
    app = small_app()
    with serve(app) as url:
        yield app, url


def test_cards_chips_and_history_escape_dataset_and_visitor_text(served) -> None:
    app, _ = served
    rec = Recommendation(item_id="1", title="<script>alert(1)</script>", year=1994, genres=["Crime<b>"],
                         tokens="<a_1><b_2>", descriptors=["<i>x</i>"], score=0.5, reason="because <img>", rank=1,
                         source="lightgcn")
    html = card(rec)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;a_1&gt;&lt;b_2&gt;" in html and "&lt;img&gt;" in html and "Crime&lt;b&gt;" in html
    assert "<i>" not in chips(["<i>x</i>"])
    assert "Glass Harbor" in history_html(app.engine, ConversationState(history=["1"]))
    session = Session()
    app.chat("<b>I loved Glass Harbor</b>", session)
    assert session.messages[0]["content"] == "&lt;b&gt;I loved Glass Harbor&lt;/b&gt;"


def test_the_map_sends_the_static_catalog_once_built_and_the_visitor_on_top(served) -> None:
    app, _ = served
    assert len(app.points) == 12 and set(app.points.columns) == {"x", "y", "title", "group"}
    state = ConversationState(history=["1", "2"], last=["5"])
    rows = catalog_map(app.engine, app.points, app.item_map, state)
    assert rows.iloc[:12].equals(app.points)  # the catalog layer as built at start, unchanged
    on_top = rows.iloc[12:]
    assert list(on_top["group"]) == [HISTORY_GROUP, HISTORY_GROUP, PICKS_GROUP]
    assert list(on_top["title"]) == [app.engine.catalog.item(i).label for i in ("1", "2", "5")]
    assert (on_top[["x", "y"]].to_numpy() == [app.item_map[i] for i in ("1", "2", "5")]).all()


def test_a_chat_turn_answers_without_the_map_and_redraws_it_right_after(served) -> None:
    from face_app.ui import build_demo

    app, _ = served
    config = build_demo(app).config
    types = {c["id"]: c["type"] for c in config["components"]}
    chat = next(d for d in config["dependencies"] if d.get("api_name") == "chat")
    after = [d for d in config["dependencies"] if d.get("trigger_after") == chat["id"]]
    assert "plot" not in {types[o] for o in chat["outputs"]}  # the reply does not carry the catalog's rows
    assert [types[o] for d in after for o in d["outputs"]] == ["plot"]  # the map follows it
    session = Session()
    app.chat("I loved Glass Harbor", session)
    spec = app.map(session).to_dict()
    (rows,) = spec["datasets"].values()
    groups = [row["group"] for row in rows]
    assert len(rows) == len(app.points) + 1 + app.engine.n
    assert groups.count(HISTORY_GROUP) == 1 and groups.count(PICKS_GROUP) == app.engine.n
    # the catalog first, the history over it, the picks on top: filled and outlined, with no axes
    catalog, history, picks = spec["layer"]
    assert history["mark"]["filled"] and picks["mark"]["filled"] and picks["mark"]["stroke"] == "black"
    assert picks["mark"]["size"] > history["mark"]["size"] > catalog["mark"]["size"]
    assert history["encoding"]["x"]["axis"] is None and history["encoding"]["y"]["axis"] is None
    assert spec["layer"][0]["encoding"]["color"]["legend"]["labelLimit"] == 0  # a whole legend


def test_an_empty_message_gets_a_hint_and_a_huge_one_is_echoed_short(served) -> None:
    app, _ = served
    session = Session()

    app.chat("   ", session)
    app.chat("<b>x</b> " * 200_000, session)

    assert "Type a message first" in session.messages[0]["content"]
    echo, answer = session.messages[1]["content"], session.messages[2]["content"]
    assert len(echo) < 1000 and echo.startswith("&lt;b&gt;x&lt;/b&gt;") and "<b>" not in echo
    assert "1,799,999 characters" in answer  # stripped of its trailing space and session.state.history == []


def test_hidden_descriptor_arm_shows_no_descriptors(served) -> None:
    app, _ = served
    session = Session(show_descriptors=False)
    app.chat("I loved Glass Harbor", session)
    cards = [m["content"] for i, m in enumerate(session.messages) if i in session.cards]
    assert cards and not any("fa-chip" in c or "fa-reason" in c for c in cards)
    assert app.panel(session)[1] == ""


def test_gradio_client_chats_and_two_clients_keep_separate_sessions(served) -> None:
    from gradio_client import Client

    _, url = served
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    cleared, chat, descriptors, history = alice.predict("I loved Glass Harbor", api_name="/chat")
    assert cleared == ""
    assert [m["role"] for m in chat][:2] == ["user", "assistant"]
    cards = [m for m in chat if "fa-card" in str(m["content"])]
    assert len(cards) == 3 and "Glass Harbor" in history and "noir" in descriptors
    _, bob_chat, _, bob_history = bob.predict("I loved Kite Club", api_name="/chat")
    assert "Kite Club" in bob_history and "Glass Harbor" not in bob_history
    _, chat, _, history = alice.predict("something lighter", api_name="/chat")
    assert "Kite Club" not in history and len(chat) > len(bob_chat)
    hits = alice.predict("lemonade sumer", api_name="/search")
    assert hits["value"] == "7" if isinstance(hits, dict) else hits == "7"


def test_a_program_reads_a_turns_picks_as_json_and_the_api_names_its_outputs(served) -> None:
    from gradio_client import Client

    app, url = served
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]

    _, chat, *_ = client.predict("I loved Glass Harbor, show me 4", api_name="/chat")
    turn = client.predict(api_name="/picks")

    returns = [r["label"] for r in api["/chat"]["returns"]]
    assert returns[:4] == ["Message", "Chat", "Your descriptors", "Your history"]
    assert not any(label.startswith("value_") for label in returns)
    assert turn["reply"].startswith("Taking this as: 4 picks.")
    picks = turn["picks"]
    cards = [m for m in chat if "fa-card" in str(m["content"])]
    assert [p["rank"] for p in picks] == [1, 2, 3, 4] and len(cards) == 4
    first = picks[0]
    item = app.engine.catalog.item(first["item_id"])
    assert (first["title"], first["year"]) == (item.title, item.year)
    assert first["source"] == "lightgcn" and first["tokens"] == f"<a_{first['item_id']}><b_0><c_1>"
    assert first["descriptors"] == app.engine.item_descriptors(first["item_id"])
    assert "1" not in {p["item_id"] for p in picks}  # Glass Harbor is the history, never a pick
    client.predict("anything but thrillers, just 2", api_name="/chat")
    later = client.predict(api_name="/picks")["picks"]
    assert len(later) == 2 and not any("Thriller" in p["genres"] for p in later)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_browser_persona_three_turns_and_a_like(served, tmp_path: Path) -> None:
    app, url = served
    shot = Path(os.environ.get("FACE_APP_SCREENSHOT") or tmp_path / "screenshot.png")
    messages = ["something lighter", "more like the second one", "why that one?"]
    seen = browser_session(url, "User 7 · 3 movies", messages, shot)
    # the page shows every card the engine gives the same chat (the persona's turn, then each message's); on
    # this 12-film catalog the third turn has only one new light film left, and its headline says so
    state = ConversationState()
    app.engine.use_persona(state, "7")
    replies = [app.engine.respond(state, text) for text in ["recommend", *messages]]
    assert seen["cards"] == sum(len(reply.recommendations) for reply in replies) == 2 * app.engine.n + 1
    assert "Only 1 new film fits" in replies[2].text and "Only 1 new film fits" in seen["chat"]
    assert "Iron Verdict" in seen["history"]
    assert "is described by" in seen["chat"] and "Noted: you like" in seen["chat"]
    assert shot.stat().st_size > 20_000
    # the map as drawn: the history's black marks and the picks' crimson diamonds are there, on top of the catalog
    pixels = np.asarray(Image.open(seen["map_shot"]).convert("RGB")).astype(int).reshape(-1, 3)
    near = lambda colour: int((np.abs(pixels - colour).sum(axis=1) < 60).sum())  # noqa: E731
    assert near((0x11, 0x11, 0x11)) > 40 and near((0xDC, 0x14, 0x3C)) > 40
    for view in seen["turns"]:
        assert_turn_shown_from_its_top(view)


def assert_turn_shown_from_its_top(view: dict) -> None:
    """A turn as the chat shows it (tests/browser.py CHAT_VIEW): the visitor's message at the top of the chat (or as
    near as the chat scrolls), the reply's first message starting inside the visible area, nothing drawn over the
    messages, thumbs on cards only."""
    visible, user, reply = view["visible"], view["user"], view["reply"]
    assert abs(user["top"] - visible["top"]) < 2 or (view["at_end"] and visible["top"] <= user["top"])
    assert visible["top"] <= reply["top"] < visible["bottom"] - 40  # at least a line of the reply shows
    assert view["label"] is None and view["scroll_down"] is None
    assert view["toolbar"]["bottom"] <= visible["top"]
    plain = [bot["thumbs"] for bot in view["bots"] if not bot["card"]]
    cards = [bot["thumbs"] for bot in view["bots"] if bot["card"]]
    assert plain and all(thumbs == [] for thumbs in plain)
    assert cards and all(thumbs == ["Dislike", "Like"] for thumbs in cards)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_browser_at_390_px_shows_the_turn_and_the_history_tail_below_the_list(tmp_path: Path) -> None:
    app = small_app(ROWS + MORE_ROWS, {**PERSONAS, **LONG_PERSONA})
    with serve(app) as url:
        seen = browser_session(url, "User 9 · 16 movies", ["something lighter"], tmp_path / "screenshot.png",
                               viewport=(390, 900))

    assert_turn_shown_from_its_top(seen["turns"][0])
    boxes = seen["history_boxes"]
    rows, listed, tail = boxes["rows"], boxes["list"], boxes["tail"]
    assert len(rows) == HISTORY_SHOWN and boxes["tail_text"] == f"and {16 - HISTORY_SHOWN} earlier"
    assert all(listed["top"] <= row["top"] < row["bottom"] <= listed["bottom"] + 0.5 for row in rows)  # all whole
    assert all(row["bottom"] <= tail["top"] + 0.5 for row in rows) and listed["bottom"] <= tail["top"]
    assert tail["bottom"] - tail["top"] > 10 and tail["right"] <= 390


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_browser_a_click_on_a_choice_adds_the_film(served) -> None:
    from playwright.sync_api import expect, sync_playwright

    _, url = served
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            open_app(page, url)
            expect(page.locator("#title-choice")).to_be_hidden(timeout=60_000)
            page.fill("#message textarea", "I loved kit cb")  # one weak candidate: asked, not added
            page.click("#send")
            expect(page.locator("#chat")).to_contain_text("Did you mean Kite Club (1997)?", timeout=60_000)
            expect(page.locator("#title-choice")).to_be_visible(timeout=60_000)
            assert "Kite Club" not in page.locator("#history").inner_text()

            page.locator("#title-choice").get_by_text("Kite Club (1997)").click()

            expect(page.locator("#history")).to_contain_text("Kite Club (1997)", timeout=60_000)
            expect(page.locator("#chat")).to_contain_text("Added Kite Club (1997) to your history.", timeout=60_000)
            expect(page.locator("#title-choice")).to_be_hidden(timeout=60_000)
        finally:
            browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize(("viewport", "cards"), [((1280, 800), 3), ((390, 844), 1)])
def test_browser_a_turn_shows_its_headline_and_whole_cards_without_scrolling(viewport, cards, tmp_path: Path) -> None:
    """Issue 25: at 1280x800 the reply's headline and at least three whole cards, at 390x844 the headline and the
    first card, inside the chat and inside the window, with no scrolling; the index tokens and the arm's own score
    sit behind the card's disclosure, and the match reads the same way on every card."""
    app = small_app(ROWS + MORE_ROWS, {**PERSONAS, **LONG_PERSONA})
    with serve(app) as url:
        seen = browser_session(url, "User 7 · 3 movies", ["show me 5"], tmp_path / "screenshot.png",
                               viewport=viewport)
    view = seen["turns"][0]
    headline, whole = whole_in_view(view)
    assert headline and whole >= cards, view
    assert 0 <= view["visible"]["top"] and view["visible"]["bottom"] <= viewport[1]  # the chat is in the window
    assert "how the model wrote this" in seen["chat"] and "taste match " in seen["chat"]
    assert "(llm)" not in seen["chat"] and "(lightgcn)" not in seen["chat"]
