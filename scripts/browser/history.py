"""Listening history in the pages: a person pairs a phone and opens their history
(empty); the phone plays two short songs through, one after the other, and the
history page shows each play as it is counted (the top tracks, artists and albums of
the period, and the plays, newest first); a song skipped after a second is not a
play; another period and a bad answer from the server are shown as a person
understands them."""

import uuid

from harness import Failure, fixtures, pair_phone, run, sign_up, tagged_tone, wait_for


def texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def main(a, s):
    base = a.base
    user = s.person("user")
    sign_up(user, base, f"history-{uuid.uuid4().hex[:8]}@example.com", name="Hal")
    phone = pair_phone(s, user)

    # The history, reached from the top bar, before anything played.
    user.get_by_role("link", name="History").click()
    user.wait_for_url("**/history")
    wait_for("the empty history", lambda: user.locator("#no-plays").is_visible())
    if user.locator("#totals").inner_text() != "No plays in this period.":
        raise Failure(f"an empty period says {user.locator('#totals').inner_text()!r}")
    s.screenshot(user, "history-empty")

    # Two short songs: a play counts after half of each (2 s and 3 s).
    media = fixtures()
    songs = [
        tagged_tone(media / "morning.flac", "Morning", "The Larks", "Dawn", 440.0, 4.0),
        tagged_tone(media / "evening.flac", "Evening", "The Larks", "Dusk", 550.0, 6.0),
        tagged_tone(media / "skipped.flac", "Skipped", "Somebody Else", "Never", 660.0, 30.0),
    ]
    phone.locator("#files").set_input_files([str(p) for p in songs])
    for title in ("Morning", "Evening", "Skipped"):
        phone.locator("#library li", has_text=title).wait_for()

    # Skipped after a second: not a play.
    phone.locator("#library li", has_text="Skipped").click()
    wait_for("the phone to play", lambda: phone.evaluate("() => !window.streamcorePhone.audio.paused"))
    wait_for("a second of it", lambda: phone.evaluate("() => window.streamcorePhone.audio.currentTime") >= 1.0)
    # Morning plays to its end, and the phone moves on to Evening by itself.
    phone.locator("#library li", has_text="Morning").click()
    wait_for("Morning to end and Evening to begin", lambda: phone.locator("#np-title").inner_text() == "Evening", 20)
    wait_for("half of Evening and more", lambda: phone.evaluate("() => window.streamcorePhone.audio.currentTime") >= 3.5, 20)
    phone.get_by_role("button", name="Pause").click()
    wait_for("the phone to pause", lambda: phone.evaluate("() => window.streamcorePhone.audio.paused"))

    # The page follows without a reload.
    wait_for("two plays on the history page", lambda: user.locator("#totals").inner_text().startswith("2 plays"), 20)
    tracks = texts(user, "#top-tracks li")
    if len(tracks) != 2 or not all(any(t in x and "1 play" in x for x in tracks) for t in ("Morning", "Evening")):
        raise Failure(f"the top tracks are {tracks!r}")
    if any("Skipped" in x for x in tracks):
        raise Failure(f"a song skipped after a second counted: {tracks!r}")
    artists = texts(user, "#top-artists li")
    if len(artists) != 1 or "The Larks" not in artists[0] or "2 plays" not in artists[0]:
        raise Failure(f"the top artists are {artists!r}")
    albums = texts(user, "#top-albums li")
    if len(albums) != 2 or not all(any(al in x for x in albums) for al in ("Dawn", "Dusk")):
        raise Failure(f"the top albums are {albums!r}")
    wait_for("both plays in the list", lambda: user.locator("#plays li").count() == 2)
    recent = texts(user, "#plays li")
    if "Evening" not in recent[0] or "Morning" not in recent[1]:
        raise Failure(f"the plays are not newest first: {recent!r}")
    if not all(" on " in r and "a removed device" not in r for r in recent):
        raise Failure(f"the plays do not name the phone: {recent!r}")
    s.screenshot(user, "history")

    # All time holds the same; a reload shows the same.
    user.locator("#period").select_option("all")
    wait_for("all time", lambda: "in all" in user.locator("#totals").inner_text())
    if not user.locator("#totals").inner_text().startswith("2 plays"):
        raise Failure(f"all time says {user.locator('#totals').inner_text()!r}")
    user.reload()
    wait_for("the history after a reload", lambda: user.locator("#plays li").count() == 2)

    # The server refusing: the page says so in words, and keeps what it showed.
    user.route("**/api/v1/me/stats*", lambda route: route.fulfill(status=503, content_type="application/json", body='{"error":{"code":"unavailable","message":"the database is away"}}'))
    user.locator("#period").select_option("week")
    wait_for("the error message", lambda: user.locator("#hist-message").is_visible())
    message = user.locator("#hist-message").inner_text()
    if "could not be loaded" not in message:
        raise Failure(f"the error reads {message!r}")
    user.unroute("**/api/v1/me/stats*")
    user.locator("#period").select_option("month")
    wait_for("the message to go", lambda: not user.locator("#hist-message").is_visible())
    return {"plays": 2, "tracks": tracks, "recent": recent, "error": message}


if __name__ == "__main__":
    run(main)
