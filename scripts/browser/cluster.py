"""The web app of a cluster's control plane, whose rooms live on media nodes of other
origins: a person signs in on the control plane's pages and pairs a phone; the phone
page goes live with a music file (its WHIP goes to the node the device's room is
placed on); the listen page on the control plane hears the tone from that node (WHEP
there). The pages' policy lets them reach the cluster's nodes and nothing else. The
administrator's Servers page lists the three nodes and drains one the room is not on;
it is listed draining, then gone. Another is killed: it is listed down, and removed
from the list with a press."""

import os
import signal
import uuid

from harness import Failure, analyse, fixtures, inbound, phone_live_with_song, run, sign_in, tagged_tone, wait_for


def extra(p):
    p.add_argument("--email", required=True, help="an account to sign in with")
    p.add_argument("--password", required=True)
    p.add_argument("--pids", required=True, help="node=pid,... of the media nodes (one is killed)")


# The URL of the live peer connection's remote side, as the page's client holds it.
PUBLISHER_URL_JS = "() => window.streamcorePhone.publisher()?.url ?? null"
PLAYER_URL_JS = "() => window.streamcoreListen.player()?.url ?? null"


def main(a, s):
    base = a.base
    user = s.person("user")
    sign_in(user, base, a.email, a.password)

    song = tagged_tone(fixtures() / f"cluster-{uuid.uuid4().hex[:6]}.flac", "Node Tone", "The Cluster", "Spread", 440.0, 40.0)
    phone = phone_live_with_song(s, user, song, "Node Tone")
    whip = phone.evaluate(PUBLISHER_URL_JS)

    user.goto(f"{base}/")
    user.locator("#devices li").first.wait_for()
    device_id = user.locator("#devices li").first.get_attribute("data-device")
    user.locator(f"#devices li[data-device='{device_id}']").get_by_role("link", name="Listen").click()
    user.wait_for_url(f"**/listen?device={device_id}")
    user.get_by_role("button", name="Listen live").click()
    wait_for("the live badge", lambda: user.locator("#live-state").inner_text() == "live", 20)
    wait_for(
        "audio packets on the listen page",
        lambda: any(r["kind"] == "audio" and (r["packets"] or 0) > 50 for r in inbound(user, "window.streamcoreListen.player()?.pc")),
        20,
    )
    tone = analyse(user, "#audio", 3000)
    if abs(tone["hz"] - 440) > 5 or tone["rms"] < 0.01:
        raise Failure(f"the listener hears {tone['hz']:.1f} Hz at rms {tone['rms']:.4f}, not the 440 Hz tone")
    whep = user.evaluate(PLAYER_URL_JS)
    policy = user.evaluate(
        """async () => (await fetch(location.href)).headers.get('content-security-policy')"""
    )
    s.screenshot(user, "cluster-listen")

    # The Servers page (administrators only; in the top bar).
    user.get_by_role("link", name="Servers").click()
    user.wait_for_url("**/servers")
    items = user.locator("#servers li")
    wait_for("three servers up", lambda: user.locator("#servers li[data-status='active']").count() == 3, 10)
    room_origin = whip.split("/whip/")[0]
    drained = None
    for i in range(items.count()):
        if room_origin not in items.nth(i).inner_text():
            drained = items.nth(i).get_attribute("data-node")
            break
    if drained is None:
        raise Failure("no server without the room to drain")
    load = user.locator(f"#servers li[data-node='{drained}'] [data-role='load']").inner_text()
    if "connections" not in load:
        raise Failure(f"the server's load is not shown: {load!r}")
    relay = user.locator(f"#servers li[data-node='{drained}'] [data-role='relay']").inner_text()
    if not relay.startswith("relay at 127.0.0.1:"):
        raise Failure(f"the server's relay is not shown: {relay!r}")
    s.screenshot(user, "servers")
    user.once("dialog", lambda d: d.accept())
    user.get_by_role("button", name=f"Drain {drained}").click()
    wait_for("the page to say the server drains", lambda: "is draining" in user.locator("#servers-message").inner_text(), 10)
    wait_for("the drained server to leave the list", lambda: user.locator(f"#servers li[data-node='{drained}']").count() == 0, 20)

    # A server that dies is shown down; the administrator removes it.
    pids = dict(kv.split("=") for kv in a.pids.split(","))
    others = [n for n in pids if n != drained and user.locator(f"#servers li[data-node='{n}']").count() == 1 and room_origin not in user.locator(f"#servers li[data-node='{n}']").inner_text()]
    if not others:
        raise Failure(f"no server left to kill besides the room's: {pids}")
    killed = others[0]
    os.kill(int(pids[killed]), signal.SIGKILL)
    wait_for("the killed server shown down", lambda: user.locator(f"#servers li[data-node='{killed}']").get_attribute("data-status") == "dead", 15)
    s.screenshot(user, "servers-down")
    user.once("dialog", lambda d: d.accept())
    user.get_by_role("button", name=f"Remove {killed}").click()
    wait_for("the removed server to leave the list", lambda: user.locator(f"#servers li[data-node='{killed}']").count() == 0, 10)
    return {
        "whip_url": whip,
        "whep_url": whep,
        "listen_hz": round(tone["hz"], 1),
        "policy": policy,
        "drained": drained,
        "killed": killed,
    }


if __name__ == "__main__":
    run(main, extra)
