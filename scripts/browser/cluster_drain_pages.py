"""A node is drained under a phone's live stream and a person listening: the phone page
publishes a music file (WHIP) to the node its room is placed on, and the listen page
on the control plane plays it (WHEP). An administrator drains a node on the Servers
page:

- `--drain publisher`: the room's node, where the listener plays too. Both sessions
  are told to reconnect (the sessions' server-sent events) and open again, with the
  same tokens, on the node the room moved to. The room is recorded (through the
  control API, as its owner) from before the drain: the test checks that the
  recording was handed over.
- `--drain listener`: the room's node is full (the test gives it room for one peer),
  so the listen page plays from another node, which imports the room over the relay
  between nodes; that node is drained, and the listener reconnects to the room's node.

Either way the listener hears the tone again, and no page shows an error; the time
from the press until the listener receives audio again on its new connection is
measured."""

import time
import uuid

from harness import Failure, analyse, api, fixtures, inbound, phone_live_with_song, run, sign_in, tagged_tone, wait_for


def extra(p):
    p.add_argument("--email", required=True, help="an administrator's account to sign in with")
    p.add_argument("--password", required=True)
    p.add_argument("--admin-token", required=True, help="the same administrator's access token, to record the room")
    p.add_argument("--drain", choices=["publisher", "listener"], required=True, help="whose node is drained")


PUBLISHER_URL_JS = "() => window.streamcorePhone.publisher()?.url ?? null"
PLAYER_URL_JS = "() => window.streamcoreListen.player()?.url ?? null"
PLAYER_PC = "window.streamcoreListen.player()?.pc"


def origin(url):
    return url.split("/whip/")[0].split("/whep/")[0]


def audio_packets(page):
    return sum((r["packets"] or 0) for r in inbound(page, PLAYER_PC) if r["kind"] == "audio")


def hears_tone(page):
    tone = analyse(page, "#audio", 2000)
    return abs(tone["hz"] - 440) <= 5 and tone["rms"] >= 0.01, tone


def main(a, s):
    base = a.base
    user = s.person("user")
    sign_in(user, base, a.email, a.password)

    song = tagged_tone(fixtures() / f"drain-{uuid.uuid4().hex[:6]}.flac", "Drain Tone", "The Cluster", "Moving", 440.0, 60.0)
    phone = phone_live_with_song(s, user, song, "Drain Tone")
    whip_before = phone.evaluate(PUBLISHER_URL_JS)
    room = whip_before.split("/whip/")[1]
    recording = None
    if a.drain == "publisher":
        recording = api(base, "POST", f"/rooms/{room}/recordings", {}, a.admin_token)
        if recording.get("status") != "recording":
            raise Failure(f"the recording did not start: {recording}")
    else:
        # The registry counts the phone against its node before anyone listens.
        wait_for(
            "the phone counted against its node",
            lambda: any(
                n["public_url"] == origin(whip_before) and n["peers"] >= 1
                for n in api(base, "GET", "/admin/nodes", None, a.admin_token)
            ),
            10,
        )
    phone.evaluate("() => { window.streamcorePhone.publisher().on('moved', () => { window.moved = (window.moved ?? 0) + 1; }); }")

    user.goto(f"{base}/")
    user.locator("#devices li").first.wait_for()
    device_id = user.locator("#devices li").first.get_attribute("data-device")
    user.goto(f"{base}/listen?device={device_id}")
    user.get_by_role("button", name="Listen live").click()
    wait_for("the live badge", lambda: user.locator("#live-state").inner_text() == "live", 20)
    wait_for("audio packets on the listen page", lambda: audio_packets(user) > 50, 20)
    ok, tone = hears_tone(user)
    if not ok:
        raise Failure(f"before the drain the listener hears {tone}, not the 440 Hz tone")
    whep_before = user.evaluate(PLAYER_URL_JS)
    relayed = origin(whep_before) != origin(whip_before)
    if relayed != (a.drain == "listener"):
        raise Failure(f"the listener plays from {whep_before}, the phone publishes to {whip_before}")
    user.evaluate(
        "() => { window.moved = 0; window.oldPc = window.streamcoreListen.player().pc;"
        " window.streamcoreListen.player().on('moved', () => { window.moved += 1; }); }"
    )

    # The administrator drains the room's node (or the listener's) on the Servers page.
    target = origin(whip_before if a.drain == "publisher" else whep_before)
    phone.evaluate("() => { window.moved = 0; }")
    admin = s.person("admin")
    sign_in(admin, base, a.email, a.password)
    admin.goto(f"{base}/servers")
    wait_for("three servers up", lambda: admin.locator("#servers li[data-status='active']").count() == 3, 10)
    items = admin.locator("#servers li")
    drained = None
    for i in range(items.count()):
        if target in items.nth(i).inner_text():
            drained = items.nth(i).get_attribute("data-node")
    if drained is None:
        raise Failure(f"no server on the Servers page has {target}")
    admin.once("dialog", lambda d: d.accept())
    admin.get_by_role("button", name=f"Drain {drained}").click()
    t0 = time.monotonic()

    wait_for("the listener to move", lambda: user.evaluate("() => window.moved") == 1, 15)
    wait_for(
        "audio on the listener's new connection",
        lambda: user.evaluate(f"() => {PLAYER_PC} !== window.oldPc") and audio_packets(user) > 20,
        15,
    )
    back_ms = round((time.monotonic() - t0) * 1000)
    whep_after = user.evaluate(PLAYER_URL_JS)
    if a.drain == "publisher":
        wait_for("the phone to move", lambda: phone.evaluate("() => window.moved") == 1, 15)
    whip_after = phone.evaluate(PUBLISHER_URL_JS)
    if origin(whep_after) == origin(whep_before):
        raise Failure(f"the listener did not leave the drained node: {whep_after}")
    if a.drain == "publisher" and origin(whip_after) == origin(whip_before):
        raise Failure(f"the phone did not leave the drained node: {whip_after}")
    if a.drain == "listener" and (phone.evaluate("() => window.moved") != 0 or whip_after != whip_before):
        raise Failure(f"the phone moved though its node was not drained: {whip_after}")
    if origin(whip_after) != origin(whep_after):
        raise Failure(f"the phone is on {whip_after}, the listener on {whep_after}")
    heard = wait_for("the listener to hear the tone again", lambda: hears_tone(user)[0], 15, every=0.5)
    tone = analyse(user, "#audio", 2000)
    for page, box in ((user, "#listen-message"), (phone, "#phone-message")):
        text = page.locator(box).inner_text() if page.locator(box).is_visible() else ""
        if text:
            raise Failure(f"the page still says {text!r} after the move")
    if phone.locator("#live-badge").inner_text() != "live":
        raise Failure("the phone is not live after the move")
    s.screenshot(user, "drain-listen")
    wait_for("the drained server to leave the list", lambda: admin.locator(f"#servers li[data-node='{drained}']").count() == 0, 30)
    return {
        "drained": drained,
        "room": room,
        "recording": recording["id"] if recording else None,
        "whip_before": whip_before,
        "whep_before": whep_before,
        "whip_after": whip_after,
        "whep_after": whep_after,
        "receiving_again_ms": back_ms,
        "listen_hz": round(tone["hz"], 1),
        "heard": bool(heard),
    }


if __name__ == "__main__":
    run(main, extra)
