"""The app's screenshots in docs/app.md: `python docs/screenshots.py` (needs Debian's chromium and Playwright, as
the browser tests do).

Serves the shipped bundle (`assets/ml-100k`, the tuned LLM included) on loopback, has one three-turn conversation
in a 1280 px and in a 390 px wide Chromium, and saves what the visitor sees after the third reply:
`docs/screenshot-1280.png` (the whole page) and `docs/screenshot-390.png` (a phone's screen, 390 x 844). A page
whose latest reply's headline is not inside the chat's visible area (and the screen) is not saved: it stops with an
AssertionError.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the app, and the browser helpers the tests use

from browser import CHAT_VIEW, CHROMIUM, open_app, send_and_wait, whole_in_view  # noqa: E402

from bench.serving import serve  # noqa: E402

CONVERSATION = ["I loved Star Wars, The Empire Strikes Back and Alien", "something from the 70s",
                "more like the second one"]
# (width, height, whole page?): a desktop window, whose page is shown whole, and a phone's screen.
# Issue 25's sizes: at 1280x800 the reply's headline and three whole cards must be in view, at 390x844 the headline
# and the first card.
VIEWS = {ROOT / "docs" / "screenshot-1280.png": (1280, 800, True, 3),
         ROOT / "docs" / "screenshot-390.png": (390, 844, False, 1)}


def screenshot(url: str, out: Path, width: int, height: int, full_page: bool, cards: int) -> str:
    """Chat CONVERSATION in a fresh page of `width` x `height`, save the page after the last reply to `out`;
    returns the latest reply's headline (its first message). AssertionError if the headline and `cards` whole
    cards are not in view in the chat, inside the window."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            open_app(page, url)
            for turn, text in enumerate(CONVERSATION, start=1):
                send_and_wait(page, text, turn)
            view = page.evaluate(CHAT_VIEW)
            headline, whole = whole_in_view(view)
            visible = view["visible"]
            assert headline and whole >= cards and 0 <= visible["top"] and visible["bottom"] <= height, view
            page.screenshot(path=str(out), full_page=full_page)
            return view["reply_text"]
        finally:
            browser.close()


def main() -> int:
    from face_app.handlers import load_app

    app = load_app(ROOT / "assets" / "ml-100k")
    with serve(app) as url:
        for out, (width, height, full_page, cards) in VIEWS.items():
            headline = screenshot(url, out, width, height, full_page, cards)
            print(f"{out.relative_to(ROOT)}: {width} px wide, the latest reply opens with “{headline}”")
    return 0


if __name__ == "__main__":
    sys.exit(main())
