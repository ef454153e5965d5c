"""The seed use case, in two browser contexts: a user signs up and pairs a phone by
its code; the phone page goes live with a music file (played through WebAudio into
the stream); the listen page hears it (the tone's frequency measured in the page),
mirrors what plays, browses the phone's library, and its remote commands reach the
phone's player."""

import re
import uuid

from harness import PHONE, Failure, analyse, fixtures, inbound, run, sign_up, tagged_tone, tone_wav, wait_for


def main(a, s):
    base = a.base
    email = f"listener-{uuid.uuid4().hex[:8]}@example.com"
    user = s.person("user")
    sign_up(user, base, email, name="Lee")
    s.screenshot(user, "devices-empty")

    # Pair: the code and QR appear; the phone opens the link the QR encodes.
    user.get_by_role("button", name="Pair a phone").click()
    user.locator("#pair-code").wait_for()
    link = user.locator("#pair-link").get_attribute("href")
    code = user.locator("#pair-code").inner_text().replace(" ", "")
    if not link or code not in link:
        raise Failure(f"the pairing link {link!r} does not carry the code {code!r}")
    wait_for("the QR code's picture", lambda: user.locator("#pair-qr").evaluate("i => i.complete && i.naturalWidth >= 100"))
    s.screenshot(user, "pairing")

    phone = s.person("phone", viewport=PHONE)
    phone.goto(link)
    phone.locator("#phone").wait_for(state="visible")
    wait_for("the phone's device socket", lambda: phone.locator("#connection").inner_text() == "online")
    wait_for("the pairing page to see the phone", lambda: "Paired" in user.locator("#pair-status").inner_text())
    if "code=" in phone.url:
        raise Failure("the claimed code stayed in the phone's address bar")
    # The devices list shows the phone online with what it can use (Chromium's fake
    # microphone and camera).
    entry = user.locator("#devices li").first
    wait_for("the phone in the devices list, online", lambda: entry.locator("[data-online]").get_attribute("data-online") == "true")
    if "Can use: microphone, camera" not in entry.inner_text():
        raise Failure(f"the device's capabilities are not shown: {entry.inner_text()!r}")

    # The phone reads a music file into its library (tags from the file) and syncs it.
    media = fixtures()
    song = tagged_tone(media / "tone-440.flac", "Concert A", "The Tuning Forks", "Reference Pitches", 440.0, 40.0)
    phone.locator("#files").set_input_files(str(song))
    phone.locator("#library li", has_text="Concert A").wait_for()
    track_text = phone.locator("#library li").first.inner_text()
    if "The Tuning Forks — Reference Pitches" not in track_text:
        raise Failure(f"the library entry lacks the artist and album tags: {track_text!r}")
    if not re.search(r"\b0:(39|40)\b", track_text):
        raise Failure(f"the library entry lacks the 40 s duration: {track_text!r}")
    # Files in the other formats a phone's music comes in: their tags are read too.
    others = [
        tagged_tone(media / f"tone{suffix}", f"Song in {suffix[1:]}", f"Artist {suffix[1:]}", "Formats", hz, 20.0)
        for suffix, hz in ((".mp3", 550.0), (".m4a", 660.0), (".opus", 770.0))
    ]
    phone.locator("#files").set_input_files([str(p) for p in others])
    for suffix in ("mp3", "m4a", "opus"):
        entry = phone.locator("#library li", has_text=f"Song in {suffix}")
        entry.wait_for()
        if f"Artist {suffix}" not in entry.inner_text():
            raise Failure(f"the {suffix} file's artist tag was not read: {entry.inner_text()!r}")
    # A whole folder, as a phone's music folder is chosen; a file without tags is
    # named after its file.
    folder = media / "Music"
    folder.mkdir()
    tagged_tone(folder / "b-side.flac", "B Side", "The Folders", "Directory", 330.0, 10.0)
    tone_wav(folder / "02 - Untagged Demo.wav", 220.0, 5.0)
    phone.locator("#folder").set_input_files(str(folder))
    phone.locator("#library li", has_text="B Side").wait_for()
    phone.locator("#library li", has_text="Untagged Demo").wait_for()
    wait_for("the folder's tracks synced", lambda: "2 tracks added and synced" in phone.locator("#phone-message").inner_text())
    if not phone.locator("#lib-status").inner_text().startswith("6 tracks"):
        raise Failure(f"the library holds {phone.locator('#lib-status').inner_text()!r}")

    # Live with the music player, playing the file.
    phone.locator("#library li", has_text="Concert A").click()
    wait_for("the phone's player to play", lambda: phone.evaluate("() => !window.streamcorePhone.audio.paused"))
    phone.get_by_role("button", name="Go live").click()
    wait_for("the phone to be live", lambda: phone.locator("#live-badge").inner_text() == "live", 20)
    s.screenshot(phone, "phone")

    # The listen page: pick the phone, hear it.
    user.goto(f"{base}/")
    user.locator("#devices li").first.wait_for()
    device_id = user.locator("#devices li").first.get_attribute("data-device")
    wait_for("the phone to show online", lambda: user.locator(f"#devices li[data-device='{device_id}'] .badge").inner_text() == "online")
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
    if abs(tone["hz"] - 440) > 5:
        raise Failure(f"the listener hears {tone['hz']:.1f} Hz, not 440 Hz")
    if tone["rms"] < 0.01:
        raise Failure(f"the listener hears silence (rms {tone['rms']:.4f})")
    stats = [r for r in inbound(user, "window.streamcoreListen.player().pc") if r["kind"] == "audio"][0]
    if not stats.get("energy"):
        raise Failure(f"getStats shows no audio energy: {stats}")

    # What plays is mirrored.
    wait_for("now playing on the listen page", lambda: user.locator("#np-title").inner_text() == "Concert A")
    wait_for("the playing status", lambda: user.locator("#np-status").get_attribute("data-status") == "playing")
    s.screenshot(user, "listen")

    # Pause on the listen page → the phone's player pauses → the listen page shows it.
    mirrored_ms = user.evaluate(
        """() => new Promise((resolve, reject) => {
          const el = document.querySelector('#np-status');
          const t0 = performance.now();
          const obs = new MutationObserver(() => {
            if (el.getAttribute('data-status') === 'paused') { obs.disconnect(); resolve(performance.now() - t0); }
          });
          obs.observe(el, {attributes: true});
          setTimeout(() => { obs.disconnect(); reject(new Error('no paused state within 5 s')); }, 5000);
          document.querySelector('#playpause').click();
        })"""
    )
    if not phone.evaluate("() => window.streamcorePhone.audio.paused"):
        raise Failure("the phone's player did not pause")
    if mirrored_ms > 500:
        raise Failure(f"the pause showed on the listen page after {mirrored_ms:.0f} ms (over 500 ms)")

    # Silence while paused; the tone again after resume.
    quiet = analyse(user, "#audio", 1000)
    user.locator("#playpause").click()
    wait_for("playing again", lambda: user.locator("#np-status").get_attribute("data-status") == "playing")
    wait_for("the phone to play again", lambda: phone.evaluate("() => !window.streamcorePhone.audio.paused"))

    # Volume from the listen page reaches the phone.
    user.locator("#volume").fill("35")
    user.locator("#volume").dispatch_event("change")
    wait_for("the phone's volume", lambda: phone.locator("#volume").input_value() == "35")

    # The phone's library, searched from the listen page; a track played from there.
    user.locator("#search").fill("tuning")
    user.locator("#library li", has_text="Concert A").wait_for()
    user.locator("#search").fill("no such thing")
    wait_for("an empty search", lambda: user.locator("#library li").count() == 0)
    user.locator("#search").fill("concert")
    user.locator("#library li", has_text="Concert A").click()
    wait_for("the phone to play the chosen track", lambda: phone.locator("#np-title").inner_text() == "Concert A")

    # A seek from the listen page.
    user.locator("#seek").fill("20")
    user.locator("#seek").dispatch_event("change")
    wait_for("the phone to seek", lambda: phone.evaluate("() => window.streamcorePhone.audio.currentTime") >= 19)

    # Previous restarts a track that has played a while; next and previous move on the
    # phone's queue, and the listen page follows.
    user.get_by_role("button", name="Previous track").click()
    wait_for("the track to restart", lambda: phone.evaluate("() => window.streamcorePhone.audio.currentTime") < 3)
    user.get_by_role("button", name="Next track").click()
    wait_for("the next track", lambda: user.locator("#np-title").inner_text() not in ("Concert A", "Nothing playing"))
    moved_to = user.locator("#np-title").inner_text()
    if phone.locator("#np-title").inner_text() != moved_to:
        raise Failure(f"the listen page shows {moved_to!r}, the phone plays {phone.locator('#np-title').inner_text()!r}")
    user.get_by_role("button", name="Previous track").click()
    wait_for("back to the first track", lambda: user.locator("#np-title").inner_text() == "Concert A")

    # The device can be renamed from the devices page.
    user.goto(f"{base}/")
    user.locator("#devices li").first.get_by_role("button", name="Rename").click()
    user.get_by_label("New name for").fill("Lee's phone")
    user.get_by_role("button", name="Save").click()
    user.locator("#devices .device-name", has_text="Lee's phone").wait_for()
    s.screenshot(user, "devices")

    return {
        "hz": round(tone["hz"], 1),
        "rms": round(tone["rms"], 4),
        "paused_rms": round(quiet["rms"], 4),
        "audio_packets": stats["packets"],
        "audio_energy": stats["energy"],
        "mirrored_ms": round(mirrored_ms),
    }


if __name__ == "__main__":
    run(main)
