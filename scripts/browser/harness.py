"""What the browser tests share: Debian's Chromium under Playwright, pages driven as a
person would, conditions waited for with deadlines (never fixed sleeps), console
output kept for failure reports, screenshots at desktop and phone width, and audio
fixtures.

Each scenario (scripts/browser/*.py) takes `--base http://127.0.0.1:PORT` (a running
node), does its checks, writes screenshots under `--shots`, and prints one JSON line
of what it measured. It exits non-zero with a message naming what went wrong.
The Rust tests in tests/browser.rs start the node and run the scenarios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
import wave
from pathlib import Path
from typing import Any, Callable

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = os.environ.get("STREAMCORE_CHROMIUM", "/usr/bin/chromium")

# Flags: fake camera/microphone and an auto-accepted permission prompt, autoplay with
# sound, loopback ICE candidates (tests stay on 127.0.0.1), and no background traffic
# (this machine's network is closed).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Names other than localhost, for a node reached as a phone reaches it on a LAN.
    "--host-resolver-rules=MAP *.test 127.0.0.1",
]

def fake_microphone() -> list[str]:
    """Chromium's fake microphone plays a file: a steady 300 Hz tone, looped. (Its own
    fake input beeps for a moment each second, too briefly for a speaking level to
    hold, which made every audio-level check a matter of luck.)"""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "streamcore-fake-mic-300hz.wav"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tone_wav(tmp, 300.0, 10.0, amplitude=0.25)
        tmp.rename(path)
    return [f"--use-file-for-fake-audio-capture={path}"]


DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


class Failure(Exception):
    """A check that did not hold."""


def args(extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True, help="the node, e.g. http://127.0.0.1:8080")
    p.add_argument("--shots", default="target/browser-screenshots", help="where screenshots go")
    p.add_argument("--data-dir", help="the node's data dir (for checks that read it)")
    if extra:
        extra(p)
    a = p.parse_args()
    Path(a.shots).mkdir(parents=True, exist_ok=True)
    return a


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0, every: float = 0.05) -> Any:
    """Polls `check` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the last one is reported
            last_error = e
        time.sleep(every)
    raise Failure(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class Session:
    """One Chromium with its contexts (each a separate person: cookies, storage)."""

    def __init__(self, shots: str, extra_flags: list[str] | None = None):
        self._pw = sync_playwright().start()
        self.browser: Browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS + fake_microphone() + (extra_flags or []))
        self.shots = Path(shots)
        self.logs: list[str] = []
        self.contexts: list[BrowserContext] = []
        # What a scenario wants reported when it fails (called then).
        self.on_failure: Callable[[], Any] | None = None
        self._others: list[Browser] = []

    def person(self, name: str, viewport: dict | None = None, **kw: Any) -> Page:
        ctx = self.browser.new_context(viewport=viewport or DESKTOP, **kw)
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.on("console", lambda m: self.logs.append(f"[{name} {m.type}] {m.text}"))
        page.on("pageerror", lambda e: self.logs.append(f"[{name} pageerror] {e}"))
        page.set_default_timeout(20_000)
        return page

    def other_browser(self, flags: list[str]) -> Browser:
        """A second Chromium with other flags (closed with this session)."""
        b = self._pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        self._others.append(b)
        return b

    def screenshot(self, page: Page, name: str) -> None:
        """The page at desktop and at phone width: `<name>-desktop.png`, `<name>-phone.png`.
        Each photographed page is also checked for controls without a name and for text
        with too little contrast, and at phone width for anything that makes it scroll
        sideways."""
        assert_labelled(page)
        assert_contrast(page)
        size = page.viewport_size or DESKTOP
        for label, vp in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(vp)
            # Two animation frames: the new layout has been painted.
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            page.screenshot(path=str(self.shots / f"{name}-{label}.png"), full_page=True)
            if label == "phone":
                wide = page.evaluate(OVERFLOW_JS)
                if wide:
                    page.set_viewport_size(size)
                    raise Failure(f"{page.url} is wider than a phone ({PHONE['width']} px): {wide}")
        page.set_viewport_size(size)

    def close(self) -> None:
        for c in self.contexts:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        for b in [self.browser, *self._others]:
            try:
                b.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._pw.stop()


def run(main: Callable[[argparse.Namespace, Session], dict], extra=None, flags: list[str] | None = None) -> None:
    """Runs a scenario; prints its result as JSON, or the failure with the pages' logs."""
    a = args(extra)
    global NODE_DATA_DIR
    NODE_DATA_DIR = a.data_dir
    s = Session(a.shots, flags)
    try:
        result = main(a, s)
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        print("\n".join(s.logs[-200:]), file=sys.stderr)
        if s.on_failure:
            try:
                print(f"state at failure: {json.dumps(s.on_failure(), default=str)}", file=sys.stderr)
            except Exception as e2:  # noqa: BLE001 - the report must not hide the failure
                print(f"(no state: {e2})", file=sys.stderr)
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        s.close()
        sys.exit(1)
    s.close()
    print(json.dumps(result))


# ---- the node's API and a page of another origin ------------------------------------


def api(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """A JSON call to `/api/v1` from the test itself (not a page)."""
    import ssl
    import urllib.request

    req = urllib.request.Request(
        f"{base}/api/v1{path}", method=method, data=json.dumps(body).encode() if body is not None else None
    )
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    # A node under test over HTTPS has made its own certificate.
    context = ssl._create_unverified_context() if base.startswith("https://") else None  # noqa: S323
    with urllib.request.urlopen(req, context=context) as r:
        return json.loads(r.read() or b"null")


def api_sign_up(base: str, email: str, password: str = "a long password 1") -> Any:
    """Signs up through the API and the mail's link (read from the node's outbox);
    returns the new account and its session, as `/auth/register/complete` answers."""
    if NODE_DATA_DIR is None:
        raise Failure("api_sign_up needs the node's data dir (--data-dir, or harness.NODE_DATA_DIR)")
    api(base, "POST", "/auth/register", {"email": email})
    link = wait_for("the sign-up mail", lambda: mailed_link(NODE_DATA_DIR, email.strip().lower(), "/sign-up"))
    token = link.split("token=", 1)[1]
    return api(base, "POST", "/auth/register/complete", {"token": token, "password": password})


def serve_page(html: str) -> tuple[Any, str]:
    """A web server of another origin (another port) with one page; returns the server
    (to `shutdown()`) and its origin."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):  # quiet
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


# ---- accessibility basics ------------------------------------------------------------

UNLABELLED_JS = """
() => [...document.querySelectorAll('input, select, textarea, button, a[href], [role=button]')]
  .filter(e => e.offsetParent !== null || e.type === 'file')
  .filter(e => {
    const name = (e.getAttribute('aria-label') || '').trim()
      || (e.getAttribute('aria-labelledby') ? 'x' : '')
      || (e.labels && [...e.labels].map(l => l.textContent.trim()).join(''))
      || (['BUTTON', 'A'].includes(e.tagName) || e.getAttribute('role') === 'button' ? e.textContent.trim() : '')
      || (e.getAttribute('title') || '').trim();
    return !name;
  })
  .map(e => e.outerHTML.slice(0, 120))
"""


# What sticks out sideways at the current width (the page then scrolls horizontally).
OVERFLOW_JS = """
() => {
  const w = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= w) return null;
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > w + 1)
    .slice(0, 5)
    .map(e => e.outerHTML.slice(0, 100));
}
"""


# Text whose colour does not stand out enough from its background (WCAG 2 AA: 4.5:1,
# 3:1 for large text); disabled controls and text over pictures or video are exempt.
LOW_CONTRAST_JS = """
() => {
  const parse = (c) => {
    const m = /^rgba?\\(([^)]+)\\)$/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const backdrop = (e) => {
    for (let n = e; n; n = n.parentElement) {
      if (['VIDEO', 'IMG', 'CANVAS'].includes(n.tagName) || getComputedStyle(n).backgroundImage !== 'none') return null;
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const bad = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.getClientRects().length === 0 || e.closest(':disabled, [aria-disabled=true], .tile')) continue;
    const text = [...e.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join('');
    if (!text) continue;
    const st = getComputedStyle(e);
    if (st.visibility === 'hidden') continue;
    const fg = parse(st.color);
    const bg = backdrop(e);
    if (!fg || !bg) continue;
    const seen = { r: fg.r * fg.a + bg.r * (1 - fg.a), g: fg.g * fg.a + bg.g * (1 - fg.a), b: fg.b * fg.a + bg.b * (1 - fg.a) };
    const [hi, lo] = [lum(seen), lum(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(st.fontSize);
    const large = size >= 24 || (Number(st.fontWeight) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${e.tagName.toLowerCase()} "${text.slice(0, 30)}" ${ratio.toFixed(2)}:1`);
  }
  return bad.slice(0, 8);
}
"""


def assert_contrast(page: Page) -> None:
    """Every visible text stands out from its background (WCAG AA)."""
    low = page.evaluate(LOW_CONTRAST_JS)
    if low:
        raise Failure(f"text with too little contrast on {page.url}: {low}")


def assert_labelled(page: Page) -> None:
    """Every visible control has a name a screen reader can read."""
    missing = page.evaluate(UNLABELLED_JS)
    if missing:
        raise Failure(f"controls without an accessible name on {page.url}: {missing}")


def tab_to(page: Page, name: str, presses: int = 40) -> None:
    """Moves the keyboard focus with Tab alone to the control whose text or label is
    `name` (keyboard use: every control is reachable in order)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement; return e ? (e.getAttribute('aria-label') || e.textContent || '').trim() : ''; }"
        )
        if focused == name:
            return
    raise Failure(f"{name!r} cannot be reached with Tab on {page.url}")


# ---- accounts through the pages ----------------------------------------------------


def open_page(page: Page, url: str, attempts: int = 3) -> None:
    """Opens a page and waits until its script has wired it (`<main>` no longer inert).
    Chromium in a network namespace set up moments before can see the network change
    while a page loads (ERR_NETWORK_CHANGED: a script fails, the page never wires):
    then, as a person would, it loads the page again."""
    for attempt in range(attempts):
        page.goto(url)
        try:
            page.wait_for_function(
                "() => { const m = document.getElementById('main'); return !!m && !m.hasAttribute('inert'); }",
                timeout=10_000,
            )
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise Failure(f"{url} never became ready ({attempts} loads)")


def mailed_link(data_dir: str, to: str, path: str) -> str | None:
    """The newest link to `path` (`/reset-password`, `/verify-email`) in the mail waiting
    for `to` in the node's outbox (the test node has no SMTP; SQLite under its data dir)."""
    import re
    import sqlite3

    db = sqlite3.connect(str(Path(data_dir) / "streamcore.db"))
    rows = db.execute("SELECT body FROM mail_outbox WHERE to_addr = ? ORDER BY created_at DESC", (to,)).fetchall()
    db.close()
    pattern = re.compile(r"https?://\S+" + re.escape(path) + r"\?token=[\w-]+")
    found = [m.group(0) for (body,) in rows for m in [pattern.search(body)] if m]
    return found[0] if found else None


# The data directory of the node under test: sign-up links are read from its outbox.
NODE_DATA_DIR: str | None = None


def sign_up(page: Page, base: str, email: str, password: str = "a long password 1", name: str = "") -> None:
    """Creates an account as a person would: asks for it on `/`, opens the link of the
    mail (from the node's outbox: the test node has no SMTP), chooses the password
    there, and waits for the devices page (or the page the sign-up began on)."""
    if NODE_DATA_DIR is None:
        raise Failure("sign_up needs the node's data dir (--data-dir, or harness.NODE_DATA_DIR)")
    open_page(page, f"{base}/")
    page.get_by_role("tab", name="Create account").click()
    form = page.locator("#signup")
    if name:
        form.get_by_label("Your name").fill(name)
    form.get_by_label("Email").fill(email)
    form.get_by_role("button", name="Create account").click()
    wait_for("the page to say a mail is on its way", lambda: "Check your mail" in page.locator("#auth-message").inner_text())
    link = wait_for("the sign-up mail", lambda: mailed_link(NODE_DATA_DIR, email.strip().lower(), "/sign-up"))
    # (the link names the node's public URL; the test opens its path on the address it uses)
    page.goto(base + link[link.index("/sign-up"):])
    # The token must not linger in the address bar or the history.
    wait_for("the sign-up token to leave the address bar", lambda: "token" not in page.url)
    page.get_by_label("Choose a password").fill(password)
    page.get_by_role("button", name="Make my account").click()
    page.wait_for_url(lambda u: "/sign-up" not in u)
    if "/room" not in page.url:
        page.locator("#devices-panel").wait_for(state="visible")


def sign_in(page: Page, base: str, email: str, password: str = "a long password 1") -> None:
    open_page(page, f"{base}/")
    form = page.locator("#signin")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    page.locator("#devices-panel").wait_for(state="visible")


# ---- audio --------------------------------------------------------------------------


def pair_phone_over_https(s: "Session", base: str, email: str, name: str) -> tuple[Page, Page]:
    """On an HTTPS node with its own certificate: a person signs up and pairs a phone;
    the phone page is open and its device socket online. (user page, phone page)."""
    user = s.person("user", ignore_https_errors=True)
    sign_up(user, base, email, name=name)
    user.get_by_role("button", name="Pair a phone").click()
    link = wait_for("the pairing link", lambda: (lambda h: h if h and h.startswith("https://") else None)(user.locator("#pair-link").get_attribute("href")))
    phone = s.person("phone", viewport=PHONE, ignore_https_errors=True)
    phone.goto(link)
    phone.locator("#phone").wait_for(state="visible")
    wait_for("the device socket over wss", lambda: phone.locator("#connection").inner_text() == "online")
    return user, phone


def pair_phone(s: "Session", user: Page) -> Page:
    """`user` (signed in, on the devices page) pairs a phone: the phone page, open on
    the link of the pairing code, its device socket online."""
    user.get_by_role("button", name="Pair a phone").click()
    user.locator("#pair-code").wait_for()
    link = user.locator("#pair-link").get_attribute("href")
    phone = s.person("phone", viewport=PHONE)
    phone.goto(link)
    phone.locator("#phone").wait_for(state="visible")
    wait_for("the phone's device socket", lambda: phone.locator("#connection").inner_text() == "online")
    return phone


def phone_live_with_song(s: "Session", user: Page, song: Path, title: str) -> Page:
    """`user` (signed in, on the devices page) pairs a phone; the phone page adds
    `song` to its library, plays it (the entry named `title`) and goes live with it.
    The phone page."""
    phone = pair_phone(s, user)
    phone.locator("#files").set_input_files(str(song))
    phone.locator("#library li", has_text=title).click()
    wait_for("the phone's player to play", lambda: phone.evaluate("() => !window.streamcorePhone.audio.paused"))
    phone.get_by_role("button", name="Go live").click()
    wait_for("the phone to be live", lambda: phone.locator("#live-badge").inner_text() == "live", 20)
    return phone


def listen_to_first_device(user: Page, base: str) -> None:
    """From the devices page, the first device's listen page, listening live."""
    user.goto(f"{base}/")
    device = user.locator("#devices li").first
    device.wait_for()
    device.get_by_role("link", name="Listen").click()
    user.get_by_role("button", name="Listen live").click()


def fixtures() -> Path:
    """A fresh directory for the media files a scenario makes."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="sc-browser-"))


def tone_wav(path: Path, freq: float = 440.0, seconds: float = 30.0, rate: int = 48_000, amplitude: float = 0.5) -> Path:
    """A mono 16-bit WAV of a sine."""
    n = int(seconds * rate)
    frames = bytearray()
    for i in range(n):
        v = amplitude * math.sin(2 * math.pi * freq * i / rate)
        frames += struct.pack("<h", int(v * 32767))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return path


# Container and encoder for each tagged fixture, by file suffix: the tag formats a
# phone's music comes in (Vorbis comments, ID3v2, MP4 `ilst`, OpusTags).
ENCODERS = {".flac": ("flac", "flac"), ".mp3": ("mp3", "libmp3lame"), ".m4a": ("ipod", "aac"), ".opus": ("ogg", "libopus")}


def tagged_tone(path: Path, title: str, artist: str, album: str, freq: float = 440.0, seconds: float = 30.0) -> Path:
    """An audio file of a tone with title, artist and album tags, in the format its
    suffix names (encoded by FFmpeg through PyAV)."""
    import av
    import numpy as np

    fmt, codec = ENCODERS[path.suffix]
    rate = 48_000
    with av.open(str(path), "w", format=fmt) as out:
        out.metadata.update({"title": title, "artist": artist, "album": album})
        stream = out.add_stream(codec, rate=rate, layout="mono")
        t = np.arange(int(seconds * rate)) / rate
        pcm = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        for start in range(0, len(pcm), 4800):
            frame = av.AudioFrame.from_ndarray(pcm[start : start + 4800].reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            for f in resampler.resample(frame):
                for p in stream.encode(f):
                    out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


# In-page measurement of what a media element receives: the dominant frequency of its
# audio (WebAudio analyser on the received stream) and its RMS level.
ANALYSE_JS = """
async ([selector, ms]) => {
  const el = document.querySelector(selector);
  const stream = el.srcObject;
  if (!stream || stream.getAudioTracks().length === 0) return {error: 'no audio track on ' + selector};
  const ctx = new AudioContext();
  await ctx.resume();
  const src = ctx.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
  const an = ctx.createAnalyser();
  an.fftSize = 16384;
  src.connect(an);
  const bins = new Float32Array(an.frequencyBinCount);
  const acc = new Float32Array(an.frequencyBinCount);
  const td = new Float32Array(an.fftSize);
  let rms = 0, n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise(r => setTimeout(r, 100));
    an.getFloatFrequencyData(bins);
    for (let i = 0; i < bins.length; i++) acc[i] += Math.pow(10, bins[i] / 20);
    an.getFloatTimeDomainData(td);
    let s = 0; for (const x of td) s += x * x; rms += Math.sqrt(s / td.length); n++;
  }
  let best = 1;
  for (let i = 2; i < acc.length; i++) if (acc[i] > acc[best]) best = i;
  // Parabolic interpolation between bins.
  const a = acc[best - 1], b = acc[best], c = acc[best + 1] ?? 0;
  const p = (a - c) / (2 * (a - 2 * b + c) || 1);
  const hz = (best + p) * ctx.sampleRate / an.fftSize;
  await ctx.close();
  return {hz, rms: rms / n};
}
"""


def analyse(page: Page, selector: str, ms: int = 2000) -> dict:
    """Dominant frequency (Hz) and RMS of the audio a media element receives."""
    r = page.evaluate(ANALYSE_JS, [selector, ms])
    if "error" in r:
        raise Failure(r["error"])
    return r


INBOUND_JS = """
async (pcExpr) => {
  const pc = eval(pcExpr);
  if (!pc) return null;
  const out = [];
  (await pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp') out.push({kind: s.kind, mid: s.mid, packets: s.packetsReceived, bytes: s.bytesReceived,
      frameWidth: s.frameWidth, frameHeight: s.frameHeight, framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded,
      energy: s.totalAudioEnergy, audioLevel: s.audioLevel});
  });
  return out;
}
"""


def inbound(page: Page, pc_expr: str) -> list[dict]:
    """The inbound RTP stats of the peer connection `pc_expr` evaluates to in the page."""
    return page.evaluate(INBOUND_JS, pc_expr) or []
