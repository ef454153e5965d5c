"""The recordings and uploads pages: two people in a Chromium room are recorded from
the recordings page; the recording is stored, each track plays in the page, and its
files decode with FFmpeg (PyAV); a podcast mixdown is asked for, its progress shows,
and the episode and stems download and decode. An audio file dropped on the uploads
page shows its progress, then plays with its waveform."""

import base64
import io
import urllib.error
import urllib.request
import uuid

import av

from harness import Failure, fixtures, run, sign_up, tone_wav, wait_for


def fetch(url: str) -> tuple[bytes, str]:
    """A signed link, opened without any credential (as a media element does)."""
    with urllib.request.urlopen(url) as r:
        return r.read(), r.headers.get("content-type", "")


def decode(data: bytes) -> dict:
    """What FFmpeg decodes from a file: seconds of audio, and video frames."""
    out = {"audio_s": 0.0, "video_frames": 0}
    with av.open(io.BytesIO(data)) as c:
        for frame in c.decode(*c.streams):
            if isinstance(frame, av.AudioFrame):
                out["audio_s"] += frame.samples / frame.sample_rate
            else:
                out["video_frames"] += 1
    return out


def absolute(base: str, url: str) -> str:
    return url if url.startswith("http") else base + url


def main(a, s):
    base = a.base
    room = f"podcast-{uuid.uuid4().hex[:6]}"
    host = s.person("host")
    sign_up(host, base, f"host-{uuid.uuid4().hex[:6]}@example.com", name="Hana")
    guest = s.person("guest")
    sign_up(guest, base, f"guest-{uuid.uuid4().hex[:6]}@example.com", name="Gus")

    host.goto(f"{base}/room")
    form = host.locator("#create-form")
    form.get_by_label("Name").fill(room)
    # Open to whoever has the link; the host hands it to the guest.
    form.get_by_label("Who may join").select_option("link")
    form.get_by_role("button", name="Create and join").click()
    host.wait_for_url("**/room?id=*")
    wait_for("the share link", lambda: "key=" in host.locator("#share-url").input_value())
    link = host.locator("#share-url").input_value()
    guest.goto(base + link[link.index("/room?"):])
    s.on_failure = lambda: {n: [p.url, p.locator("#call-message").inner_text(), p.locator("#room-state").inner_text(), p.locator("#camera").get_attribute("aria-pressed")] for n, p in (("host", host), ("guest", guest))}
    for p in (host, guest):
        wait_for("both connected and publishing", lambda p=p: p.locator("#camera").get_attribute("aria-pressed") == "true", 30)
    wait_for("the host to hear the guest", lambda: host.locator(".tile", has_text="Gus").count() == 1, 20)

    # A chapter marked in the room before anything records is refused in words.
    host.get_by_label("Chapter title").fill("Too early")
    host.get_by_role("button", name="Mark a chapter").click()
    wait_for("the room page's refusal", lambda: "not being recorded" in host.locator("#chapter-said").inner_text())

    # The recordings page, in another tab of the host's browser.
    rec = host.context.new_page()
    rec.goto(f"{base}/recordings?room={room}")
    rec.get_by_role("button", name="Start recording").click()
    wait_for("the recording to run", lambda: rec.locator("#rec-state").inner_text() == "recording")
    item = rec.locator("#recordings li[data-recording]").first
    item.wait_for()
    # Record for a while: until the room has sent some seconds of media.
    started = rec.evaluate("() => performance.now()")
    wait_for("two seconds of recording", lambda: rec.evaluate("() => performance.now()") - started > 2000, 15, 0.25)
    # A chapter marked while recording: the page says where, and the recording keeps it.
    rec.get_by_label("Chapter title").fill("The interview")
    rec.get_by_role("button", name="Mark a chapter here").click()
    wait_for("the marker said", lambda: rec.locator("#marker-said").inner_text().startswith("Marked “The interview” at 0:0"))
    # And one from the call itself (the room socket's `marker` message).
    host.get_by_label("Chapter title").fill("Questions")
    host.get_by_role("button", name="Mark a chapter").click()
    wait_for("the room page's marker", lambda: host.locator("#chapter-said").inner_text() == "Marked “Questions”.")
    wait_for("six seconds of recording", lambda: rec.evaluate("() => performance.now()") - started > 6000, 15, 0.25)
    rec.get_by_role("button", name="Stop recording").click()
    wait_for("the recording stored", lambda: item.locator("[data-status]").first.get_attribute("data-status") == "uploaded", 60)
    s.screenshot(rec, "recordings")
    # The page shows the chapters it marked; the call's arrives with a reload.
    def chapters_shown():
        rec.reload()
        rec.locator("#recordings li[data-recording]").first.wait_for()
        shown = rec.locator("#recordings li[data-recording] [data-role=markers]")
        return shown.count() > 0 and "Questions" in shown.first.inner_text()

    wait_for("both chapters on the recording", chapters_shown, 15, 0.5)
    item = rec.locator("#recordings li[data-recording]").first
    chapters = item.locator("[data-role=markers]").inner_text()
    if "The interview" not in chapters or "Questions" not in chapters:
        raise Failure(f"the recording's chapters are {chapters!r}")
    # A chapter the host forgot, added afterwards at a time inside the recording; a time
    # past its end is refused in words before anything is sent.
    later = item.locator("[data-role=later-marker]")
    later.get_by_label("Chapter starts at (m:ss)").fill("9:59")
    later.get_by_label("New chapter title").fill("Outro")
    later.get_by_role("button", name="Add chapter").click()
    wait_for("a time past the end explained", lambda: "long: pick a time inside it" in later.locator("[data-role=later-marker-said]").inner_text())
    later.get_by_label("Chapter starts at (m:ss)").fill("0:03")
    later.get_by_role("button", name="Add chapter").click()
    wait_for("the later chapter shown", lambda: "0:03 Outro" in rec.locator("#recordings li[data-recording]").first.locator("[data-role=markers]").inner_text())
    item = rec.locator("#recordings li[data-recording]").first

    # Every track plays in the page from its signed link, and decodes with FFmpeg.
    tracks = item.locator("li[data-file]")
    wait_for("the tracks listed", lambda: tracks.count() >= 4)
    decoded = {}
    for i in range(tracks.count()):
        t = tracks.nth(i)
        name = t.get_attribute("data-file")
        media = t.locator("audio, video")
        src = media.get_attribute("src")
        if not src or "sig=" not in src:
            raise Failure(f"{name}: no signed link in the player ({src!r})")
        ready = media.evaluate("m => new Promise(r => { if (m.readyState >= 1) r(m.duration); m.onloadedmetadata = () => r(m.duration); m.onerror = () => r(-1); })")
        if ready == -1:
            raise Failure(f"{name}: the page's player cannot load it")
        data, ctype = fetch(absolute(base, src))
        d = decode(data)
        decoded[name] = d
        if name.endswith(".ogg") and d["audio_s"] < 4:
            raise Failure(f"{name} ({ctype}) decodes to {d['audio_s']:.1f} s of audio")
        if name.endswith(".webm") and d["video_frames"] < 30:
            raise Failure(f"{name} ({ctype}) decodes to {d['video_frames']} frames")
    if sum(1 for n in decoded if n.endswith(".ogg")) < 2 or sum(1 for n in decoded if n.endswith(".webm")) < 2:
        raise Failure(f"not every speaker's audio and video was recorded: {sorted(decoded)}")

    # A podcast episode: progress, then the episode and one stem per speaker.
    item.get_by_role("button", name="Make a podcast episode").click()
    wait_for("the mixdown's progress", lambda: item.locator("[data-mixdown]").count() == 1)
    mix = item.locator("[data-mixdown]")
    wait_for("the episode", lambda: mix.get_attribute("data-status") == "completed", 120, 0.25)
    episode = mix.locator("audio").first
    ep_src = episode.get_attribute("src")
    # A waveform picture for the episode and for each speaker's stem, every one drawn.
    pictures = mix.locator("img.waveform")
    wait_for(
        "the episode's and every stem's waveform picture",
        lambda: pictures.count() >= 3 and pictures.evaluate_all("is => is.every(i => i.complete && i.naturalWidth > 0)"),
    )
    ep = decode(fetch(absolute(base, ep_src))[0])
    if ep["audio_s"] < 4:
        raise Failure(f"the episode decodes to {ep['audio_s']:.1f} s")
    stems = mix.locator("a[download]")
    if stems.count() < 3:
        raise Failure(f"{stems.count()} downloads: the episode and a stem per speaker were expected")
    for i in range(stems.count()):
        d = decode(fetch(absolute(base, stems.nth(i).get_attribute("href")))[0])
        if d["audio_s"] < 4:
            raise Failure(f"download {i} decodes to {d['audio_s']:.1f} s")
    s.screenshot(rec, "recordings-episode")

    # The room keeps raw tracks only until a mixdown: they go (the node sweeps each
    # second in this test), the episode stays; then the whole recording is deleted.
    track_link = absolute(base, tracks.first.locator("audio, video").get_attribute("src"))
    rec.get_by_label("Raw tracks").select_option("0")
    rec.get_by_role("button", name="Save").click()
    wait_for("the retention saved", lambda: rec.locator("#retention-said").inner_text().startswith("Saved"))

    def swept():
        rec.reload()
        rec.locator("#recordings li[data-recording]").first.wait_for()
        return rec.locator("[data-role=tracks-deleted]").count() == 1

    wait_for("the raw tracks deleted", swept, 30, 1.0)
    if rec.get_by_label("Raw tracks").input_value() != "0":
        raise Failure("the retention is not shown after a reload")
    item = rec.locator("#recordings li[data-recording]").first
    if item.locator("li[data-file]").count() != 0:
        raise Failure(f"deleted tracks are still listed: {item.inner_text()!r}")
    if item.locator("[data-mixdown] audio").count() == 0:
        raise Failure("the episode went with the raw tracks")
    try:
        urllib.request.urlopen(track_link)
        raise Failure("a deleted raw track still opens")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise Failure(f"a deleted raw track answers {e.code}, not 404") from e
    rec.once("dialog", lambda d: d.accept())
    item.locator("button[data-role=delete]").click()
    wait_for("the recording to leave the page", lambda: rec.locator("#recordings li[data-recording]").count() == 0)
    try:
        urllib.request.urlopen(ep_src if ep_src.startswith("http") else absolute(base, ep_src))
        raise Failure("the deleted recording's episode still opens")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise Failure(f"the deleted recording's episode answers {e.code}, not 404") from e

    # Uploads: a file in, progress live, the result plays with its waveform.
    up = host.context.new_page()
    up.goto(f"{base}/uploads")
    wav = tone_wav(fixtures() / "upload-330.wav", 330.0, 60.0)
    # Every progress text the page shows on the way, as it shows them.
    up.evaluate(
        """() => {
          window.__seen = new Set();
          const note = () => document.querySelectorAll('#jobs [data-role=status], #sending .small')
            .forEach(e => window.__seen.add(e.textContent));
          new MutationObserver(note).observe(document.querySelector('main'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    up.locator("#file").set_input_files(str(wav))
    job = up.locator("#jobs li[data-job]").first
    job.wait_for()
    wait_for("the upload's job to complete", lambda: job.get_attribute("data-status") == "completed", 90, 0.1)
    seen = up.evaluate("() => [...window.__seen]")
    if not any(x.startswith("uploading") for x in seen):
        raise Failure(f"the upload's bytes showed no progress: {seen}")
    if not any("%" in x for x in seen):
        raise Failure(f"the job showed no progress: {seen}")
    player = job.locator("audio")
    played = player.evaluate(
        """a => new Promise((resolve) => {
          a.muted = true;
          a.play().catch(e => resolve({error: String(e)}));
          const t0 = performance.now();
          const check = () => a.currentTime > 0.5 ? resolve({t: a.currentTime}) : performance.now() - t0 > 10000 ? resolve({error: 'no progress'}) : setTimeout(check, 100);
          check();
        })"""
    )
    if "error" in played:
        raise Failure(f"the upload's result does not play: {played}")
    wait_for("the upload's waveform", lambda: job.locator("img.waveform").evaluate("i => i.complete && i.naturalWidth > 0"))

    # A file dragged onto the drop area goes the same way (the browser's own drag
    # events, with the file in their DataTransfer).
    dropped_wav = tone_wav(fixtures() / "upload-dropped-550.wav", 550.0, 3.0)
    transfer = up.evaluate_handle(
        """([b64, name]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const dt = new DataTransfer();
          dt.items.add(new File([bytes], name, { type: 'audio/wav' }));
          return dt;
        }""",
        [base64.b64encode(dropped_wav.read_bytes()).decode(), dropped_wav.name],
    )
    area = up.locator("#drop")
    area.dispatch_event("dragenter", {"dataTransfer": transfer})
    area.dispatch_event("dragover", {"dataTransfer": transfer})
    area.dispatch_event("drop", {"dataTransfer": transfer})
    dropped = up.locator("#jobs li[data-job]", has_text=dropped_wav.name)
    dropped.wait_for()
    wait_for("the dropped file's job to complete", lambda: dropped.get_attribute("data-status") == "completed", 90, 0.1)
    wait_for("the dropped file's waveform", lambda: dropped.locator("img.waveform").evaluate("i => i.complete && i.naturalWidth > 0"))
    s.screenshot(up, "uploads")

    # Deleting the dropped file's upload: asked first, then gone from the page and
    # from the server, its file link with it.
    link = absolute(base, dropped.locator("a[download]").get_attribute("href"))
    up.once("dialog", lambda d: d.accept())
    dropped.get_by_role("button", name=f"Delete {dropped_wav.name}").click()
    wait_for("the deleted upload to leave the page", lambda: up.locator("#jobs li[data-job]", has_text=dropped_wav.name).count() == 0)
    if "was deleted" not in up.locator("#up-message").inner_text():
        raise Failure(f"the page says {up.locator('#up-message').inner_text()!r} after deleting")
    try:
        urllib.request.urlopen(link)
        raise Failure("the deleted upload's file still opens")
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise Failure(f"the deleted upload's file answers {e.code}, not 404") from e
    up.reload()
    up.locator("#jobs li[data-job]").first.wait_for()
    if up.locator("#jobs li[data-job]", has_text=dropped_wav.name).count():
        raise Failure("the deleted upload is back after a reload")
    return {"tracks": {k: v for k, v in decoded.items()}, "episode_s": round(ep["audio_s"], 1), "upload_progress": sorted(seen)}


if __name__ == "__main__":
    run(main)
