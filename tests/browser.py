"""A real browser session against a served app: Playwright driving Debian's chromium (never a downloaded one)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# The thumbs that follow a card's message (one chat row per message).
CARD_LIKE = ("xpath=//div[contains(@class, 'message ')][.//div[contains(@class, 'fa-card')]]"
             "/following-sibling::div[contains(@class, 'message-buttons')][1]//button[@aria-label='Like']")

# What the chat shows once a turn is in, as boxes in viewport pixels: the chat's visible area (its scroll container)
# and whether it is scrolled to its end; the visitor's last message and the first bot message after it (the reply's
# headline), with its text; the label, toolbar and scroll-down arrow Gradio may draw on the chat (null when not
# shown); per bot message, whether it is a card and which of its thumbs are visible.
CHAT_VIEW = """() => {
  const box = el => { if (!el || !el.checkVisibility()) return null;
                      const r = el.getBoundingClientRect(); return {top: r.top, bottom: r.bottom}; };
  const log = document.querySelector("#chat [role=log]");
  const users = document.querySelectorAll("#chat .user-row");
  const user = users[users.length - 1] || null;
  let reply = user && user.nextElementSibling;
  while (reply && !reply.classList.contains("bot-row")) reply = reply.nextElementSibling;
  return {
    visible: box(log),
    at_end: log.scrollTop + log.clientHeight >= log.scrollHeight - 1,
    user: box(user), reply: box(reply), reply_text: reply ? reply.innerText.trim() : "",
    label: box(document.querySelector("#chat [data-testid=block-label]")),
    toolbar: box(document.querySelector("#chat .top-panel")),
    scroll_down: box(document.querySelector("#chat .scroll-down-button-container")),
    bots: [...document.querySelectorAll("#chat .bot-row")].map(row => ({
      card: row.querySelector(".fa-card") !== null, box: box(row.querySelector(".message") || row),
      after_user: user !== null && (user.compareDocumentPosition(row) & Node.DOCUMENT_POSITION_FOLLOWING) > 0,
      thumbs: [...row.querySelectorAll(".message-buttons button")]
        .filter(b => ["Like", "Dislike"].includes(b.getAttribute("aria-label")) && b.checkVisibility())
        .map(b => b.getAttribute("aria-label"))})),
  };
}"""

# The history panel's boxes: the list, each of its rows, and the "and N earlier" line after it (null if none).
HISTORY_VIEW = """() => {
  const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
                      return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const list = document.querySelector("#history ul");
  return {list: box(list), rows: [...list.querySelectorAll("li")].map(box),
          tail: box(document.querySelector("#history ul + div")),
          tail_text: document.querySelector("#history ul + div")?.innerText ?? ""};
}"""


def browser_session(url: str, persona: str, messages: list[str], screenshot: Path,
                    viewport: tuple[int, int] = (1280, 1100)) -> dict:
    """Pick `persona`, send `messages` one turn at a time, like the last card, save a screenshot.

    Returns what the page showed: number of cards before the like, the chat's and the history's text, the chat's
    boxes after each turn (`turns`, one CHAT_VIEW per message) and the history's boxes (`history_boxes`,
    HISTORY_VIEW) after the last turn.
    """
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            open_app(page, url)
            page.locator("#persona input").click()
            page.get_by_role("option", name=persona).click()
            page.click("#use-persona")
            expect(page.locator(".fa-card").first).to_be_visible(timeout=60_000)
            turns = []
            for turn, text in enumerate(messages, start=1):
                send_and_wait(page, text, turn)
                turns.append(page.evaluate(CHAT_VIEW))
            history_boxes = page.evaluate(HISTORY_VIEW)
            map_shot = screenshot.with_name(screenshot.stem + "-map.png")
            expect(page.locator("#map canvas, #map svg").first).to_be_visible(timeout=60_000)
            page.wait_for_timeout(500)
            page.locator("#map").screenshot(path=str(map_shot))
            cards = page.locator(".fa-card").count()
            page.locator(CARD_LIKE).last.click()
            expect(page.locator("#chat")).to_contain_text("Noted: you like", timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(screenshot), full_page=True)
            return {"cards": cards, "chat": page.locator("#chat").inner_text(),
                    "history": page.locator("#history").inner_text(), "turns": turns,
                    "history_boxes": history_boxes, "map_shot": map_shot}
        finally:
            browser.close()


def open_app(page: Page, url: str) -> None:
    """Go to the app and wait for the page's load event (`demo.load`) to have drawn a new visitor's side panel
    (render.history_html's "Nothing yet"): an event sent before it could be drawn over by the load's empty panel
    on a busy machine."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#history")).to_contain_text("Nothing yet", timeout=120_000)


def send_and_wait(page: Page, text: str, turn: int) -> None:
    """Send `text` as the visitor's `turn`-th message; return once its reply is shown and the chat has settled
    (the app scrolls the turn into view after the reply is drawn)."""
    from playwright.sync_api import expect

    bot = "#chat [data-testid='bot']"
    replies = page.locator(bot).count()
    page.fill("#message textarea", text)
    page.click("#send")
    expect(page.locator("#chat [data-testid='user']")).to_have_count(turn, timeout=60_000)
    page.wait_for_function(f"document.querySelectorAll(\"{bot}\").length > {replies}", timeout=60_000)
    wait_until_still(page, "#chat [role=log]")


def wait_until_still(page: Page, selector: str, polls: int = 5) -> None:
    """Wait until the scroll position and height of `selector` stay the same for `polls` reads 0.1 s apart."""
    last, still = None, 0
    for _ in range(100):
        now = page.evaluate("s => { const el = document.querySelector(s); return [el.scrollTop, el.scrollHeight]; }",
                            selector)
        still = still + 1 if now == last else 0
        if still >= polls:
            return
        last = now
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector} kept scrolling for 10 s")


def whole_in_view(view: dict) -> tuple[bool, int]:
    """After a turn (CHAT_VIEW): whether the reply's headline is whole inside the chat's visible area, and how many
    of the turn's cards are."""
    visible = view["visible"]

    def inside(box: dict | None) -> bool:
        return box is not None and visible["top"] - 1 <= box["top"] and box["bottom"] <= visible["bottom"] + 1

    cards = [bot["box"] for bot in view["bots"] if bot["card"] and bot["after_user"]]
    return inside(view["reply"]), sum(inside(box) for box in cards)
