"""The web app of a cluster's control plane, whose rooms live on media nodes of other
origins: a person signs in on the control plane's pages and pairs a phone; the phone
page goes live with a music file (its WHIP goes to the node the device's room is
placed on); the listen page on the control plane hears the tone from that node (WHEP
there). The pages' policy lets them reach the cluster's nodes and nothing else."""

import uuid

from harness import PHONE, Failure, analyse, fixtures, inbound, run, sign_in, tagged_tone, wait_for


def extra(p):
    p.add_argument("--email", required=True, help="an account to sign in with")
    p.add_argument("--password", required=True)


# The URL of the live peer connection's remote side, as the page's client holds it.
PUBLISHER_URL_JS = "() => window.streamcorePhone.publisher()?.url ?? null"
PLAYER_URL_JS = "() => window.streamcoreListen.player()?.url ?? null"


def main(a, s):
    base = a.base
    user = s.person("user")
    sign_in(user, base, a.email, a.password)

    user.get_by_role("button", name="Pair a phone").click()
    user.locator("#pair-code").wait_for()
    link = user.locator("#pair-link").get_attribute("href")
    phone = s.person("phone", viewport=PHONE)
    phone.goto(link)
    phone.locator("#phone").wait_for(state="visible")
    wait_for("the phone's device socket", lambda: phone.locator("#connection").inner_text() == "online")

    song = tagged_tone(fixtures() / f"cluster-{uuid.uuid4().hex[:6]}.flac", "Node Tone", "The Cluster", "Spread", 440.0, 40.0)
    phone.locator("#files").set_input_files(str(song))
    phone.locator("#library li", has_text="Node Tone").click()
    wait_for("the phone's player to play", lambda: phone.evaluate("() => !window.streamcorePhone.audio.paused"))
    phone.get_by_role("button", name="Go live").click()
    wait_for("the phone to be live", lambda: phone.locator("#live-badge").inner_text() == "live", 20)
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
    return {"whip_url": whip, "whep_url": whep, "listen_hz": round(tone["hz"], 1), "policy": policy}


if __name__ == "__main__":
    run(main, extra)
