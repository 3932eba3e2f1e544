"""A simulated user study, end to end, through the served app: participants consent, chat, like, answer the
questionnaire, rate the words, and some withdraw; then the report is written from the log.

    python -m bench.study_sim --bundle assets/ml-100k --participants 40 --browsers 2 --out runs/study-sim

The app runs as `python app.py --study` in its own process (`bench.serving.AppProcess`, the LLM loaded: nobody is
enrolled into an LLM arm before it is), logging to `OUT/study.sqlite`. Most participants are `gradio_client`
clients: every chat turn through the public `/chat` endpoint; a study's own steps (consent, a like, done,
questionnaire, word ratings, withdrawal) are private events, which gradio_client refuses by design
(tests/test_hardening.py), so the same session takes them through the page's protocol (`bench.serving.PageSession`
on the client's session hash: the calls a browser tab makes). Several run at once. `--browsers` of them go through
the real page in Chromium (Playwright), clicking the consent box, typing, liking a card with its thumb, answering
and ticking words.

The answers are drawn at random (seeded), the same way for every arm: the report of a simulated study shows its
machinery, never an effect. Writes `OUT/report.md` and its plots (`python -m face_app.study report`), and
`OUT/timings.json` (the machine, the load average, seconds per participant).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.serving import AppProcess, PageSession, client

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [
    ["I loved Toy Story and Babe", "something light and funny", "from the 90s"],
    ["I hated Scream but loved Fargo", "something darker", "more like the second one"],
    ["I loved Star Wars and Alien", "from the 70s", "why that one?"],
    ["Casablanca was lovely, another romantic one please", "no musicals", "show me 3"],
    ["I liked Jurassic Park and Twister", "something epic", "not that"],
    ["The Godfather is a favourite", "nothing scary please", "older"],
]
LIKERT = [str(v) for v in range(1, 6)]
QUESTIONS = ["satisfied", "understood", "control", "would_watch"]  # configs/study.yaml's, in order
WATCH = ["none", "one", "two or three", "more than three"]
LLM_LOADED = "the llm arm is loaded"


def answers(rng: random.Random) -> list[str]:
    """satisfied, understood, control (1-5), would_watch, comments: drawn alike for every arm."""
    return [rng.choice(LIKERT), rng.choice(LIKERT), rng.choice(LIKERT), rng.choice(WATCH), ""]


def client_participant(url: str, seed: int, withdraw: bool) -> dict[str, Any]:
    """One participant as a program: consent, three turns through gradio_client, a like, done, questionnaire,
    word ratings (module docstring: the study's steps through the page's protocol, in the same session)."""
    rng = random.Random(seed)
    start = time.perf_counter()
    api = client(url)
    tab = PageSession(url, api.session_hash)
    tab.call("consent", True, None)
    for text in MESSAGES[seed % len(MESSAGES)]:
        _, chat, _, _ = api.predict(text, api_name="/chat")
        if not chat or chat[-1]["role"] != "assistant":
            raise AssertionError(f"no reply to {text!r} in the participant's session")
    # a thumb up on the newest card (a message of its own: its index is the message's)
    card = max(n for n, m in enumerate(chat) if "fa-card" in str(m["content"]))
    liked = tab.call("feedback", None, event_data={"index": card, "value": chat[card]["content"], "liked": True})
    if "you like" not in str(liked[0]):  # the note, its punctuation as HTML entities
        raise AssertionError("the like was not noted in the participant's session")
    tab.call("finish", None)
    out = tab.call("submit_answers", None, *answers(rng))
    boxes = out[5:]  # the rating screen's checkbox groups (their choices are the card's words)
    ticks = []
    for box in boxes:
        words = [choice[0] for choice in (box or {}).get("choices", [])] if isinstance(box, dict) else []
        ticks.append([w for w in words if rng.random() < 0.5])
    done = tab.call("submit_ratings", None, *ticks)
    code = next(part for part in str(done[-1]).split("'fa-code'>")[1:]).split("<")[0]
    if withdraw:
        tab.call("withdraw", code)
    return {"seconds": time.perf_counter() - start, "code": code, "withdrawn": withdraw, "via": "gradio_client"}


def browser_participant(url: str, seed: int) -> dict[str, Any]:
    """One participant in Chromium: the consent box, three typed turns, a like, "I'm done", the questionnaire's
    radio buttons, the word boxes."""
    from playwright.sync_api import expect, sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from browser import CARD_LIKE, CHROMIUM, send_and_wait  # the tests' page helpers (tests/browser.py)

    rng = random.Random(seed)
    start = time.perf_counter()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_label("I have read this and agree to take part.").check()
            page.get_by_role("button", name="Start").click()
            expect(page.locator(".fa-code").first).to_be_visible(timeout=120_000)
            code = page.locator(".fa-code").first.inner_text()
            for turn, text in enumerate(MESSAGES[seed % len(MESSAGES)], start=1):
                send_and_wait(page, text, turn)
            page.locator(CARD_LIKE).first.click()
            expect(page.locator("#chat")).to_contain_text("Noted: you like", timeout=60_000)
            page.get_by_role("button", name="I'm done").click()
            for question, value in zip(QUESTIONS, answers(rng), strict=False):
                choice = page.locator(f"#q-{question}").get_by_label(value, exact=True)
                choice.check()
                expect(choice).to_be_checked()
            page.wait_for_timeout(300)  # the radios' change events reach the server before the submit does
            page.get_by_role("button", name="Submit").click()
            expect(page.locator("#send-ratings")).to_be_visible(timeout=60_000)
            boxes = page.locator("[id^=rate-] input[type=checkbox]")
            for index in range(boxes.count()):
                if rng.random() < 0.5:
                    boxes.nth(index).check()
            page.locator("#send-ratings").click()
            expect(page.get_by_text("Thank you!")).to_be_visible(timeout=60_000)
        finally:
            browser.close()
    return {"seconds": time.perf_counter() - start, "code": code, "withdrawn": False, "via": "chromium"}


def simulate(bundle: Path, out: Path, participants: int, browsers: int, parallel: int, seed: int,
             extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the study (module docstring); returns the timings record (also written to OUT/timings.json)."""
    from face_app.hardware import machine

    out.mkdir(parents=True, exist_ok=True)
    db = out / "study.sqlite"
    for stale in out.glob("study.sqlite*"):
        stale.unlink()
    load = os.getloadavg()
    rng = random.Random(seed)
    withdrawing = set(rng.sample(range(participants - browsers), k=max(1, (participants - browsers) // 10)))
    with AppProcess(bundle, "--study", *extra_args, env={"FACE_APP_STUDY_DB": str(db)}) as app:
        served = app.wait_until_served()
        if "--lightgcn-only" not in extra_args:
            deadline = time.time() + 900
            while LLM_LOADED not in app.output() and time.time() < deadline:
                time.sleep(1)
            if LLM_LOADED not in app.output():
                raise SystemExit(f"the LLM did not load; the app said:\n{app.output()[-2000:]}")
        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            programs = list(pool.map(lambda k: client_participant(app.url, seed + k, k in withdrawing),
                                  range(participants - browsers)))
        chromium = [browser_participant(app.url, seed + 1000 + k) for k in range(browsers)]
        seconds = time.perf_counter() - start
    report = subprocess.run([sys.executable, "-m", "face_app.study", "report", "--db", str(db), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    if report.returncode != 0:
        raise SystemExit(report.stderr)
    runs = programs + chromium
    record = {"command": "python -m bench.study_sim " + " ".join(sys.argv[1:]), "machine": machine(),
              "load_average_at_start": load, "bundle": str(bundle), "participants": len(runs),
              "through_chromium": len(chromium), "withdrawn": sum(r["withdrawn"] for r in runs),
              "through_gradio_client": len(programs), "parallel_clients": parallel, "app_served_after_s": served,
              "seconds_all": seconds,
              "seconds_per_participant": {"gradio_client_median": sorted(r["seconds"] for r in programs)[
                  len(programs) // 2],
                                          "chromium": [r["seconds"] for r in chromium]}}
    (out / "timings.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.study_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "assets" / "ml-100k")
    parser.add_argument("--participants", type=int, default=40)
    parser.add_argument("--browsers", type=int, default=2, help="of the participants, how many use Chromium")
    parser.add_argument("--parallel", type=int, default=8, help="gradio_client participants at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lightgcn-only", action="store_true", help="serve without the LLM (its arms enrol nobody)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "study-sim")
    args = parser.parse_args(argv)
    record = simulate(args.bundle, args.out, args.participants, args.browsers, args.parallel, args.seed,
                      ("--lightgcn-only",) if args.lightgcn_only else ())
    print(json.dumps(record, indent=1))
    print(f"wrote {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
