"""A real browser session against a served app: Playwright driving Debian's chromium (never a downloaded one)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# The thumbs that follow a card's message (one chat row per message).
CARD_LIKE = ("xpath=//div[contains(@class, 'message ')][.//div[contains(@class, 'fa-card')]]"
             "/following-sibling::div[contains(@class, 'message-buttons')][1]//button[@aria-label='Like']")


def browser_session(url: str, persona: str, messages: list[str], screenshot: Path,
                    viewport: tuple[int, int] = (1280, 1100)) -> dict:
    """Pick `persona`, send `messages` one turn at a time, like the last card, save a screenshot.

    Returns what the page showed: number of cards before the like, the chat's and the history's text.
    """
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.goto(url)
            page.locator("#persona input").click()
            page.get_by_role("option", name=persona).click()
            page.click("#use-persona")
            expect(page.locator(".fa-card").first).to_be_visible(timeout=60_000)
            bot = "#chat [data-testid='bot']"
            for turn, text in enumerate(messages, start=1):
                replies = page.locator(bot).count()
                page.fill("#message textarea", text)
                page.click("#send")
                expect(page.locator("#chat [data-testid='user']")).to_have_count(turn, timeout=60_000)
                page.wait_for_function(f"document.querySelectorAll(\"{bot}\").length > {replies}", timeout=60_000)
            cards = page.locator(".fa-card").count()
            page.locator(CARD_LIKE).last.click()
            expect(page.locator("#chat")).to_contain_text("Noted: you like", timeout=60_000)
            page.wait_for_timeout(500)
            # Show the last turn from the visitor's message on, not just the chat's tail.
            page.locator("#chat [data-testid='user']").last.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(screenshot), full_page=True)
            return {"cards": cards, "chat": page.locator("#chat").inner_text(),
                    "history": page.locator("#history").inner_text()}
        finally:
            browser.close()
