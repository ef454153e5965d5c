"""HTTPS without a proxy: a phone on the LAN reaches the node by a name that is not
localhost (`phone.test`, mapped to 127.0.0.1), over the certificate the node made
for itself (`--tls self-signed`; the phone's browser accepts it as a person would
after checking its fingerprint). There, the page is a secure origin: the phone goes
live with its microphone, and the listen page hears it over the same HTTPS node
(pages, API, WebSockets and WHIP/WHEP on one port)."""

import uuid

from harness import Failure, inbound, listen_to_first_device, pair_phone_over_https, run, wait_for


def main(a, s):
    base = a.base
    if not base.startswith("https://"):
        raise Failure(f"this scenario wants an HTTPS node, got {base}")
    user, phone = pair_phone_over_https(s, base, f"tls-{uuid.uuid4().hex[:8]}@example.com", "Tess")
    if not phone.evaluate("() => window.isSecureContext"):
        raise Failure("the phone page over HTTPS is not a secure context")
    phone.get_by_label("Microphone", exact=True).check()
    phone.get_by_role("button", name="Go live").click()
    wait_for("the phone live with its microphone", lambda: phone.locator("#live-badge").inner_text() == "live", 20)
    s.screenshot(phone, "phone-https")

    listen_to_first_device(user, base)
    s.on_failure = lambda: {
        "listen": inbound(user, "window.streamcoreListen.player()?.pc"),
        "live_state": user.locator("#live-state").inner_text(),
        "listen_message": user.locator("#listen-message").inner_text(),
        "phone_live": phone.locator("#live-badge").inner_text(),
    }
    stats = wait_for(
        "the microphone's audio on the listen page",
        lambda: next((r for r in inbound(user, "window.streamcoreListen.player()?.pc") if r["kind"] == "audio" and (r["packets"] or 0) > 50 and r.get("energy")), None),
        30,
    )
    # The camera instead: the listener's player goes on with the new tracks, video too.
    phone.get_by_role("button", name="Stop").click()
    wait_for("the phone off the air", lambda: phone.locator("#live-badge").inner_text() == "not live")
    phone.get_by_label("Camera and microphone").check()
    phone.get_by_role("button", name="Go live").click()
    wait_for("the phone live with its camera", lambda: phone.locator("#live-badge").inner_text() == "live", 20)
    phone.locator("#preview").wait_for(state="visible")
    video = wait_for(
        "the camera's pictures on the listen page",
        lambda: next((r for r in inbound(user, "window.streamcoreListen.player()?.pc") if r["kind"] == "video" and (r["framesDecoded"] or 0) > 10), None),
        30,
    )
    user.locator("#video").wait_for(state="visible")
    s.screenshot(user, "listen-camera")
    return {"origin": base, "audio_packets": stats["packets"], "audio_energy": stats["energy"], "video_frames": video["framesDecoded"]}


if __name__ == "__main__":
    run(main)
