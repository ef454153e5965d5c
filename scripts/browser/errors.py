"""Bad input, as people meet it, each with a message they understand and the rest of
the page still working: a wrong and an expired pairing code, a device removed while
its phone page is open, a session that ended and one that expired, a used reset link, a wrong password, a
room that does not exist, a page whose server is slow or failing while it loads,
a microphone the person denied; then a forgotten password reset through the pages,
and signing out."""

import sqlite3
import uuid
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from harness import FLAGS, PHONE, Failure, api, mailed_link, run, sign_up, tab_to, wait_for


def message(page, selector):
    box = page.locator(selector)
    box.wait_for(state="visible")
    return box.inner_text()


def new_code(user):
    before = user.locator("#pair-link").get_attribute("href")
    user.get_by_role("button", name="Pair a phone").click()
    link = wait_for("a fresh code", lambda: (lambda h: h if h and h not in ("#", before) else None)(user.locator("#pair-link").get_attribute("href")))
    return link, user.locator("#pair-code").inner_text().replace(" ", "")


def main(a, s):
    base = a.base
    checks = {}
    email = f"errors-{uuid.uuid4().hex[:8]}@example.com"
    password = "a long password 1"
    user = s.person("user")
    sign_up(user, base, email, password, name="Erin")

    # A wrong code.
    phone = s.person("phone", viewport=PHONE)
    phone.goto(f"{base}/phone?code=WRNGCODE")
    text = message(phone, "#pair-message")
    if "unknown, used or expired" not in text:
        raise Failure(f"a wrong code says {text!r}")
    if not phone.get_by_role("button", name="Pair").is_enabled():
        raise Failure("after a wrong code the form cannot be used")
    checks["wrong_code"] = text
    s.screenshot(phone, "phone-wrong-code")

    # Keyboard only: Tab to "Pair a phone", Enter, and a code is there.
    user.goto(f"{base}/")
    user.locator("#devices-panel").wait_for(state="visible")
    tab_to(user, "Pair a phone")
    user.keyboard.press("Enter")
    wait_for("a pairing code made from the keyboard", lambda: len(user.locator("#pair-code").inner_text().replace(" ", "")) == 8)

    # An expired code (aged in the node's database).
    link, code = new_code(user)
    db = sqlite3.connect(str(Path(a.data_dir) / "streamcore.db"))
    db.execute("UPDATE pairings SET expires_at = 0 WHERE code = ?", (code,))
    db.commit()
    db.close()
    phone.goto(link)
    text = message(phone, "#pair-message")
    if "unknown, used or expired" not in text:
        raise Failure(f"an expired code says {text!r}")
    checks["expired_code"] = text

    # A good code by hand in the same form works after those failures.
    link, code = new_code(user)
    phone.goto(f"{base}/phone")
    phone.get_by_label("Pairing code").fill(code.lower())
    phone.get_by_label("Pairing code").press("Enter")
    phone.locator("#phone").wait_for(state="visible")
    wait_for("the phone online", lambda: phone.locator("#connection").inner_text() == "online")

    # The device is removed while its page is open: the node closes its socket at once
    # and the page says so by itself; so does a reload.
    user.goto(f"{base}/")
    item = user.locator("#devices li").first
    item.get_by_role("button", name="Remove").click()
    user.get_by_role("button", name="Yes, remove").click()
    wait_for("the removal", lambda: "was removed" in user.locator("#devices-message").inner_text())
    text = message(phone, "#pair-message")
    if "no longer paired" not in text:
        raise Failure(f"the open page of a removed device says {text!r}")
    if phone.locator("#phone").is_visible():
        raise Failure("the removed device's player is still shown")
    phone.reload()
    text = message(phone, "#pair-message")
    if "no longer paired" not in text:
        raise Failure(f"reopening a removed device's page says {text!r}")
    checks["removed_device"] = text

    # The session ends (the password changed elsewhere): the open page says so at once
    # (the node closes its socket), and its link leads to signing in.
    user.goto(f"{base}/listen")
    user.locator("#listen-title").wait_for()
    login = api(base, "POST", "/auth/login", {"email": email, "password": password})
    api(base, "POST", "/me/password", {"current_password": password, "new_password": "another long password"}, login["access_token"])
    text = message(user, ".banner")
    if "session has ended" not in text:
        raise Failure(f"an ended session says {text!r}")
    checks["ended_session"] = text
    user.get_by_role("link", name="Sign in again").click()
    user.wait_for_url("**/?next=*")
    # Signing in again brings the person back where they were.
    form = user.locator("#signin")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill("another long password")
    form.get_by_role("button", name="Sign in").click()
    user.wait_for_url("**/listen")

    # The session expires (its refresh token aged in the node's database): the page says
    # "expired", not "ended", and signing in again brings the person back. (Once the
    # page has its session: a reload during its refresh would lose the rotated cookie.)
    wait_for("the listen page ready", lambda: user.locator("#main").get_attribute("inert") is None)
    db = sqlite3.connect(str(Path(a.data_dir) / "streamcore.db"))
    aged = db.execute(
        "UPDATE refresh_tokens SET expires_at = 0 WHERE revoked_at IS NULL AND device_id IS NULL "
        "AND user_id = (SELECT id FROM users WHERE email = ?)",
        (email,),
    ).rowcount
    db.commit()
    db.close()
    if aged < 1:
        raise Failure("no live refresh token to age")
    user.reload()
    user.wait_for_url("**/?next=*")
    text = message(user, "#auth-message")
    if "session has expired" not in text:
        raise Failure(f"an expired session says {text!r}")
    checks["expired_session"] = text
    form = user.locator("#signin")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill("another long password")
    form.get_by_role("button", name="Sign in").click()
    user.wait_for_url("**/listen")

    # A wrong password, and a reset link that was used or has expired.
    other = s.person("other")
    other.goto(f"{base}/")
    form = other.locator("#signin")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill("not the password")
    form.get_by_role("button", name="Sign in").click()
    text = message(other, "#auth-message")
    if "do not match" not in text:
        raise Failure(f"a wrong password says {text!r}")
    s.screenshot(other, "sign-in")
    other.goto(f"{base}/reset-password?token=spent-or-made-up")
    other.get_by_label("New password (at least 10 characters)").fill("a brand new password")
    other.get_by_role("button", name="Set the password").click()
    text = message(other, "#reset-message")
    if "expired or was already used" not in text:
        raise Failure(f"a bad reset link says {text!r}")
    s.screenshot(other, "reset-password")
    checks["reset_token"] = text

    # A room that does not exist.
    user.goto(f"{base}/room?name=no-such-room-{uuid.uuid4().hex[:4]}")
    text = message(user, "#call-message")
    if "no room called" not in text:
        raise Failure(f"a missing room says {text!r}")

    # Over plain HTTP on a LAN name (not localhost) the browser hides the microphone:
    # the phone says how to get it, and music still goes live.
    user.goto(f"{base}/")
    _, code = new_code(user)
    lan = base.replace("127.0.0.1", "phone-lan.test")
    lphone = s.person("lan phone", viewport=PHONE)
    lphone.goto(f"{lan}/phone?code={code}")
    lphone.locator("#phone").wait_for(state="visible")
    lphone.get_by_label("Microphone", exact=True).check()
    lphone.get_by_role("button", name="Go live").click()
    text = message(lphone, "#phone-message")
    if "secure address" not in text or "https://" not in text:
        raise Failure(f"the microphone on an insecure origin says {text!r}")
    checks["insecure_origin"] = text
    lphone.get_by_label("Music player").check()
    s.on_failure = lambda: lphone.locator("#phone-message").inner_text()
    lphone.get_by_role("button", name="Go live").click()
    wait_for("music live over plain HTTP", lambda: lphone.locator("#live-badge").inner_text() == "live", 20)

    # A slow server: until a page has wired its controls they take no input (a click
    # then would be lost: the listen page waits for the devices before it wires
    # "Listen live"), and once it has, the same click works.
    devices = "**/api/v1/devices"
    held = []
    user.route(devices, lambda route: held.append(route))
    user.goto(f"{base}/listen")
    wait_for("the listen page asking for the devices", lambda: user.evaluate("() => true") and held)
    if user.locator("#main").get_attribute("inert") is None:
        raise Failure("the listen page takes input before it is ready")
    try:
        user.locator("#listen").click(trial=True, timeout=1000)
        raise Failure("“Listen live” took a click before the page was ready")
    except PlaywrightTimeout:
        pass
    held[0].continue_()
    user.unroute(devices)
    user.get_by_role("button", name="Listen live").click()
    wait_for("listening after a slow start", lambda: user.evaluate("() => window.streamcoreListen?.player() != null"))
    checks["slow_start"] = user.locator("#live-state").inner_text()

    # A page whose server fails while it loads says so, and a reload brings it back.
    user.route(devices, lambda route: route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "The server is restarting."}}))
    user.goto(f"{base}/listen")
    text = message(user, "#load-failed")
    if "could not load" not in text or "restarting" not in text:
        raise Failure(f"a page that failed to load says {text!r}")
    checks["load_failed"] = text
    s.screenshot(user, "listen-load-failed")
    user.unroute(devices)
    user.get_by_role("link", name="Reload").click()
    wait_for(
        "the reloaded page ready, without the failure",
        lambda: user.locator("#main").get_attribute("inert") is None and user.locator("#load-failed").count() == 0,
    )
    user.get_by_role("button", name="Listen live").wait_for()

    # A denied microphone, in a browser that refuses permission prompts: the message
    # says what to do, and going live with music still works.
    denied = s.other_browser([f for f in FLAGS if f != "--use-fake-ui-for-media-stream"] + ["--deny-permission-prompts"])
    dphone = denied.new_context(viewport=PHONE).new_page()
    dphone.on("console", lambda m: s.logs.append(f"[denied {m.type}] {m.text}"))
    user.goto(f"{base}/")
    link, _ = new_code(user)
    dphone.goto(link)
    dphone.locator("#phone").wait_for(state="visible")
    dphone.get_by_label("Microphone", exact=True).check()
    dphone.get_by_role("button", name="Go live").click()
    text = message(dphone, "#phone-message")
    if "denied" not in text:
        raise Failure(f"a denied microphone says {text!r}")
    if dphone.locator("#live-badge").inner_text() != "not live":
        raise Failure("a denied microphone left the phone half live")
    checks["denied_microphone"] = text
    s.screenshot(dphone, "phone-denied-microphone")
    dphone.get_by_label("Music player").check()
    dphone.get_by_role("button", name="Go live").click()
    wait_for("going live with music after the denial", lambda: dphone.locator("#live-badge").inner_text() == "live", 20)

    # Forgot password, the whole way through the pages (last: a new password ends the
    # person's other sessions): the form, the link from the mail (this node has no
    # SMTP, so it waits in the outbox), the reset page, signing in with the new
    # password; then signing out ends the session for good.
    other.goto(f"{base}/")
    other.get_by_role("tab", name="Forgot password").click()
    other.locator("#forgot").get_by_label("Email").fill(email)
    other.get_by_role("button", name="Send the reset link").click()
    text = message(other, "#auth-message")
    if "on its way" not in text:
        raise Failure(f"asking for a reset link says {text!r}")

    link = wait_for("the reset mail in the outbox", lambda: mailed_link(a.data_dir, email, "/reset-password"))
    other.goto(link)
    other.get_by_label("New password (at least 10 characters)").fill("a third long password")
    other.get_by_role("button", name="Set the password").click()
    other.locator("#done").wait_for(state="visible")
    checks["password_reset"] = other.locator("#reset-message").inner_text()
    other.get_by_role("link", name="Sign in").click()
    form = other.locator("#signin")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill("a third long password")
    form.get_by_role("button", name="Sign in").click()
    other.locator("#devices-panel").wait_for(state="visible")
    other.get_by_role("button", name="Sign out").click()
    other.locator("#signin").wait_for(state="visible")
    other.goto(f"{base}/listen")
    other.wait_for_url("**/?next=*")
    if other.locator("#devices-panel").is_visible():
        raise Failure("signed out, the devices still show")
    checks["signed_out"] = other.url
    return checks


if __name__ == "__main__":
    run(main)
