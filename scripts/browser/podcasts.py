"""Podcasts in the pages: a person uploads a short recording of theirs (a tone), opens
Podcasts from the top bar (no shows yet: the page says what a show is), creates a
show, is told in words why a too-small picture cannot be its artwork, gives it a
proper one, and copies its feed URL. From the upload they make an episode with two
chapters (a mistyped chapter time is pointed out first), listen to it in the page,
and publish it: the feed, checked as podcast apps read it (scripts/interop/
podcast_feed.py: feedparser, then ElementTree, then every link it hands out), holds
the episode with its chapters and audio. A second episode scheduled for the day after
tomorrow is not in the feed; it is unpublished, edited and deleted."""

import struct
import sys
import uuid
import zlib
from datetime import datetime, timedelta
from pathlib import Path

from harness import Failure, fixtures, open_page, run, sign_up, tone_wav, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "interop"))
import podcast_feed  # noqa: E402 - found through the path above

SHOW = "Café Sessions"
FIRST = "Café Sessions — the first one"
SECOND = "Later, maybe"
# The ids of the page's message boxes, reported when the scenario fails.
BOXES = ["pod-message", "pod-status", "new-show-message", "show-message", "show-status", "artwork-message", "artwork-status", "episodes-message", "episodes-status", "new-episode-message"]


def png(path: Path, width: int, height: int) -> Path:
    """An RGB PNG of bands of colour (zlib and struct: no imaging library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = []
    for y in range(height):
        shade = 40 + (y * 160) // height
        rows.append(b"\x00" + bytes((shade, 90, 200 - shade // 2)) * width)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def ready(page) -> None:
    """The page's script has wired it (`<main>` no longer inert)."""
    page.wait_for_function("() => { const m = document.getElementById('main'); return !!m && !m.hasAttribute('inert'); }")


def text(page, selector: str) -> str:
    loc = page.locator(selector)
    return loc.inner_text().strip() if loc.count() and loc.is_visible() else ""


def address(page) -> str:
    """The page's address as the page has it now (after its `history.pushState`).
    Not `page.url`: that is Playwright's copy, which its sync API brings up to date
    only while a Playwright call runs, so a poll that reads it alone between sleeps
    never sees a pushState made after the last call returned (the address stays
    `/podcasts` for as long as the poll lasts)."""
    return page.evaluate("() => location.href")


def state(page) -> dict:
    """What the page shows, for a failure report: the boxes first (their calls also
    bring Playwright's copy of the address up to date), then the address."""
    boxes = {b: text(page, f"#{b}") for b in BOXES}
    try:
        url = address(page)
    except Exception:  # noqa: BLE001 - a page gone or navigating: Playwright's copy
        url = page.url
    return {"url": url, **boxes}


def main(a, s):
    base = a.base
    user = s.person("host")
    s.on_failure = lambda: state(user)
    sign_up(user, base, f"podcaster-{uuid.uuid4().hex[:8]}@example.com", name="Pia")
    media = fixtures()

    # Something to make episodes of: a short upload (24 s), transcoded.
    open_page(user, f"{base}/uploads")
    user.locator("#file").set_input_files(str(tone_wav(media / "cafe-session-1.wav", 330.0, 24.0)))
    job = user.locator("#jobs li[data-job]").first
    job.wait_for()
    wait_for("the upload to be transcoded", lambda: job.get_attribute("data-status") == "completed", 90, 0.1)
    return publish(s, user, base, job.get_attribute("data-job"), media)


def publish(s, user, base: str, job_id: str, media: Path) -> dict:
    """From a page with the top bar, with the finished upload `job_id`: the podcast
    part of the scenario."""
    # Podcasts, from the top bar: no show yet, and the page says what one is.
    user.get_by_role("link", name="Podcasts", exact=True).click()
    user.wait_for_url("**/podcasts")
    ready(user)
    wait_for("the empty list of shows", lambda: user.locator("#no-shows").is_visible())
    if "A show is your podcast" not in user.locator("#no-shows").inner_text():
        raise Failure(f"the empty state says {user.locator('#no-shows').inner_text()!r}")
    s.screenshot(user, "podcasts-empty")

    # A show.
    form = user.locator("#new-show")
    form.get_by_label("Title").fill(SHOW)
    form.get_by_label("Description").fill("Tunes and talk from the café on the corner.")
    form.get_by_label("Author").fill("Pia Example")
    form.get_by_label("Language").fill("en")
    categories = form.get_by_label("Category").locator("option").all_inner_texts()
    if "Music" not in categories or "Technology" not in categories:
        raise Failure(f"the categories offered are {categories!r}")
    form.get_by_label("Category").select_option("Music")
    form.get_by_role("button", name="Create the show").click()
    wait_for("the new show, open", lambda: "show=" in address(user) and user.locator("#show-view").is_visible())
    if user.locator("#show-title").inner_text() != SHOW:
        raise Failure(f"the open show is called {user.locator('#show-title').inner_text()!r}")
    if user.locator("#show-form").get_by_label("Category").input_value() != "Music":
        raise Failure("the show's form does not show its category")

    # Artwork: too small first (the server's reason, in words), then a proper one.
    user.locator("#artwork").set_input_files(str(png(media / "small.png", 600, 600)))
    wait_for("the artwork's error", lambda: user.locator("#artwork-message").is_visible())
    artwork_error = user.locator("#artwork-message").inner_text()
    if "1400" not in artwork_error:
        raise Failure(f"a 600 px picture is refused with {artwork_error!r}")
    if user.locator("#artwork-preview").is_visible():
        raise Failure("a refused picture shows as the artwork")
    user.locator("#artwork").set_input_files(str(png(media / "cover.png", 1400, 1400)))
    wait_for("the artwork saved", lambda: "saved" in text(user, "#artwork-status"), 30)
    if user.locator("#artwork-message").is_visible():
        raise Failure(f"an error stays after the artwork was saved: {user.locator('#artwork-message').inner_text()!r}")
    wait_for(
        "the artwork's preview",
        lambda: user.locator("#artwork-preview").evaluate("i => i.complete && i.naturalWidth") == 1400,
    )

    # The feed's address: shown, linked and copied.
    feed_url = user.locator("#feed-url").input_value()
    if not feed_url.startswith("http") or user.locator("#feed-link").get_attribute("href") != feed_url:
        raise Failure(f"the feed URL is {feed_url!r}, its link {user.locator('#feed-link').get_attribute('href')!r}")
    user.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    user.get_by_role("button", name="Copy the feed URL").click()
    wait_for("the feed URL copied", lambda: "copied" in text(user, "#show-status"))
    copied = user.evaluate("() => navigator.clipboard.readText()")
    if copied != feed_url:
        raise Failure(f"the clipboard holds {copied!r}, not the feed URL {feed_url!r}")

    # An episode from the upload, with two chapters; a mistyped time is pointed out.
    new = user.locator("#new-episode")
    new.get_by_label("Made from").select_option(job_id)
    if not new.get_by_label("Title", exact=True).input_value():
        raise Failure("choosing the upload did not fill in a title")
    new.get_by_label("Title", exact=True).fill(FIRST)
    new.get_by_label("Description").fill("Two tunes and a hello.")
    new.get_by_label("Season").fill("1")
    new.get_by_label("Episode", exact=True).fill("1")
    new.get_by_role("button", name="Add a chapter").click()
    new.get_by_role("button", name="Add a chapter").click()
    new.get_by_label("Start of chapter 1").fill("0:00")
    new.get_by_label("Title of chapter 1").fill("Hello")
    new.get_by_label("Start of chapter 2").fill("0:75")
    new.get_by_label("Title of chapter 2").fill("The tune")
    new.get_by_role("button", name="Create the draft").click()
    wait_for("the bad chapter time pointed out", lambda: "is not a time" in text(user, "#new-episode-message"))
    chapter_error = user.locator("#new-episode-message").inner_text()
    if new.get_by_label("Start of chapter 2").get_attribute("aria-invalid") != "true":
        raise Failure("the mistyped chapter time is not marked invalid")
    s.screenshot(user, "podcasts-chapters")
    new.get_by_label("Start of chapter 2").fill("0:10")
    new.get_by_role("button", name="Create the draft").click()
    first = user.locator("#episodes li[data-episode]", has_text=FIRST)
    wait_for("the draft episode", lambda: first.count() == 1 and first.get_attribute("data-status") == "draft")
    if first.locator("[data-role=status]").inner_text() != "Draft":
        raise Failure(f"a draft reads {first.locator('[data-role=status]').inner_text()!r}")
    if first.locator(".chapter-list li").all_inner_texts() != ["0:00 Hello", "0:10 The tune"]:
        raise Failure(f"the draft's chapters read {first.locator('.chapter-list li').all_inner_texts()!r}")

    # It plays in the page, then it is published.
    duration = first.locator("audio").evaluate(
        """a => new Promise((resolve) => {
          if (a.readyState >= 1) return resolve(a.duration);
          a.onloadedmetadata = () => resolve(a.duration);
          a.onerror = () => resolve(-1);
          a.preload = 'metadata';
          a.load();
        })"""
    )
    if not isinstance(duration, (int, float)) or not 20 <= duration <= 30:
        raise Failure(f"the episode's player cannot load it (duration {duration})")
    first.locator("[data-role=publish]").click()
    wait_for("the episode published", lambda: first.get_attribute("data-status") == "published")
    published_text = first.locator("[data-role=status]").inner_text()
    if not published_text.startswith("Published"):
        raise Failure(f"a published episode reads {published_text!r}")
    s.screenshot(user, "podcasts-show")

    # The feed, as podcast apps read it.
    feed = podcast_feed.validate(feed_url)
    if feed["title"] != SHOW or feed["artwork"]["width"] != 1400:
        raise Failure(f"the feed's show: {feed['title']!r}, artwork {feed['artwork']}")
    if [e["title"] for e in feed["episodes"]] != [FIRST]:
        raise Failure(f"the feed's episodes are {[e['title'] for e in feed['episodes']]!r}")
    episode = feed["episodes"][0]
    if [(c["startTime"], c["title"]) for c in episode["chapter_list"]] != [(0, "Hello"), (10, "The tune")]:
        raise Failure(f"the feed's chapters are {episode['chapter_list']!r}")

    # A second episode, scheduled for the day after tomorrow: not in the feed yet.
    new.get_by_label("Made from").select_option(job_id)
    new.get_by_label("Title", exact=True).fill(SECOND)
    new.get_by_role("button", name="Create the draft").click()
    second = user.locator("#episodes li[data-episode]", has_text=SECOND)
    wait_for("the second draft", lambda: second.count() == 1 and second.get_attribute("data-status") == "draft")
    if user.locator("#episodes li[data-episode]").first.get_attribute("data-episode") != second.get_attribute("data-episode"):
        raise Failure("the newest episode is not on top")
    when = second.locator("[data-role=publish-at]")
    when.fill((datetime.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    second.locator("[data-role=schedule]").click()
    wait_for("a time passed refused", lambda: "passed" in text(user, "#episodes-message"))
    when.fill((datetime.now() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"))
    second.locator("[data-role=schedule]").click()
    wait_for("the episode scheduled", lambda: second.get_attribute("data-status") == "scheduled")
    scheduled_text = second.locator("[data-role=status]").inner_text()
    if not scheduled_text.startswith("Scheduled for"):
        raise Failure(f"a scheduled episode reads {scheduled_text!r}")
    s.screenshot(user, "podcasts-scheduled")
    later = podcast_feed.validate(feed_url)
    if [e["title"] for e in later["episodes"]] != [FIRST]:
        raise Failure(f"with one episode scheduled, the feed holds {[e['title'] for e in later['episodes']]!r}")

    # Back to a draft, edited, deleted.
    second.locator("[data-role=unpublish]").click()
    wait_for("the scheduled episode a draft again", lambda: second.get_attribute("data-status") == "draft")
    second.locator("[data-role=edit]").click()
    editor = second.locator("form[data-role=editor]")
    editor.get_by_label("Title", exact=True).fill(SECOND + " (edited)")
    editor.get_by_role("button", name="Save the episode").click()
    edited = user.locator("#episodes li[data-episode]", has_text=SECOND + " (edited)")
    wait_for("the edited title", lambda: edited.count() == 1)
    user.once("dialog", lambda d: d.accept())
    edited.locator("[data-role=delete]").click()
    wait_for("the deleted episode gone", lambda: edited.count() == 0)

    # The list of shows counts what is left.
    user.get_by_role("link", name="All shows").click()
    wait_for("the list of shows", lambda: user.locator("#shows li[data-show]").count() == 1)
    listed = user.locator("#shows li[data-show]").inner_text()
    if SHOW not in listed or "1 episode" not in listed:
        raise Failure(f"the show is listed as {listed!r}")
    s.screenshot(user, "podcasts")
    return {
        "episodes_in_feed": len(feed["episodes"]),
        "chapters": episode["chapters"],
        "enclosure_bytes": episode["length"],
        "enclosure_type": episode["type"],
        "scheduled_in_feed": len(later["episodes"]) != 1,
        "feed_content_type": feed["content_type"],
        "artwork": feed["artwork"],
        "artwork_error": artwork_error,
        "chapter_error": chapter_error,
        "published": published_text,
        "scheduled": scheduled_text,
    }


if __name__ == "__main__":
    run(main)
