"""B9: Chromium to Chromium through a StreamCore node on loopback, beside two Chromium
peers connected directly (no server) in the same run.

- join: from the WHEP POST (direct: from the listener's createOffer) to the first
  decoded audio (`totalSamplesReceived` > 0) and the first painted video frame
  (`requestVideoFrameCallback`), over `--joins` joins;
- mouth to ear: a click scheduled in the publisher's WebAudio graph, detected by an
  AudioWorklet on the listener's received track; both ends on the wall clock
  (`performance.timeOrigin`), so the figure includes both browsers' audio pipelines
  and jitter buffers — a proxy of what a person hears, the same in both setups;
- remote command: the node's pages (listen → pause → phone → state → listen, through
  the API, the event bus and both sockets), beside a command and its answer over a
  data channel between two directly connected pages.

Not a test: run by hand or by benches/run-all.sh (results in docs/benchmarks.md). It starts the node
itself from `--streamcore` (a release build) on free loopback ports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "scripts" / "browser"))

import harness  # noqa: E402
from harness import PHONE, Session, api, api_sign_up, fixtures, serve_page, sign_up, tagged_tone, wait_for  # noqa: E402

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>bench</title>
<script type="module">
import * as sc from '%(node)s/sdk/streamcore.js';
window.sc = sc;
window.ready = true;
</script></head><body></body></html>"""

# The publisher: a quiet tone with a click every second (the click's wall-clock time
# is kept), and a canvas animation as video.
PUBLISHER_JS = """
async () => {
  const ctx = new AudioContext();
  await ctx.resume();
  const out = ctx.createMediaStreamDestination();
  const hum = ctx.createOscillator(); hum.frequency.value = 200;
  const quiet = ctx.createGain(); quiet.gain.value = 0.02;
  hum.connect(quiet).connect(out); hum.start();
  window.clicks = [];
  const clickAt = (t) => {
    const o = ctx.createOscillator(); o.frequency.value = 3000;
    const g = ctx.createGain(); g.gain.value = 0.9;
    o.connect(g).connect(out);
    o.start(t); o.stop(t + 0.01);
    const ts = ctx.getOutputTimestamp();
    window.clicks.push(performance.timeOrigin + ts.performanceTime + (t - ts.contextTime) * 1000);
  };
  let next = ctx.currentTime + 1;
  setInterval(() => { while (next < ctx.currentTime + 0.5) { clickAt(next); next += 1; } }, 100);
  const canvas = document.createElement('canvas'); canvas.width = 640; canvas.height = 360;
  const c2 = canvas.getContext('2d'); let n = 0;
  setInterval(() => { c2.fillStyle = `hsl(${(n++ * 7) % 360} 80% 50%)`; c2.fillRect(0, 0, 640, 360); }, 33);
  const video = canvas.captureStream(30).getVideoTracks()[0];
  window.tracks = [out.stream.getAudioTracks()[0], video];
  return true;
}
"""

# The listener's detector: an AudioWorklet that reports when a click arrives (on the
# wall clock), and the first decoded audio and video after t0.
LISTEN_SETUP_JS = """
async () => {
  const code = `class D extends AudioWorkletProcessor {
    constructor() { super(); this.quietUntil = 0; }
    process(inputs) {
      const x = inputs[0][0];
      if (x) for (let i = 0; i < x.length; i++) {
        if (Math.abs(x[i]) > 0.3 && currentTime + i / sampleRate > this.quietUntil) {
          this.port.postMessage(currentTime + i / sampleRate);
          this.quietUntil = currentTime + 0.5;
          break;
        }
      }
      return true;
    }
  }
  registerProcessor('d', D);`;
  window.lctx = new AudioContext();
  await window.lctx.resume();
  await window.lctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], {type: 'text/javascript'})));
  window.heard = [];
  return true;
}
"""

WATCH_JS = """
async ([pcExpr, streamExpr, t0]) => {
  const pc = eval(pcExpr);
  const stream = eval(streamExpr);
  const node = new AudioWorkletNode(window.lctx, 'd');
  node.port.onmessage = (e) => {
    const ts = window.lctx.getOutputTimestamp();
    window.heard.push(performance.timeOrigin + ts.performanceTime + (e.data - ts.contextTime) * 1000);
  };
  window.lctx.createMediaStreamSource(new MediaStream(stream.getAudioTracks())).connect(node);
  const v = document.createElement('video'); v.muted = true; v.autoplay = true; v.playsInline = true;
  v.srcObject = stream; document.body.append(v);
  const frame = new Promise(r => v.requestVideoFrameCallback(() => r(performance.now() - t0)));
  const audio = (async () => {
    for (;;) {
      const s = await pc.getStats();
      let n = 0; s.forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'audio') n = r.totalSamplesReceived || 0; });
      if (n > 0) return performance.now() - t0;
      await new Promise(r => setTimeout(r, 5));
    }
  })();
  const timeout = new Promise(r => setTimeout(() => r(null), 10000));
  return {audio_ms: await Promise.race([audio, timeout]), video_ms: await Promise.race([frame, timeout])};
}
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50": round(pct(xs, 0.5), 1), "p95": round(pct(xs, 0.95), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def mouth_to_ear(pub, lis, seconds: float = 12) -> list[float]:
    """Click-to-detection delays over `seconds` (each click matched to the first
    detection after it)."""
    start = time.monotonic()
    wait_for("clicks", lambda: time.monotonic() - start > seconds, seconds + 5, 0.5)
    clicks = pub.evaluate("() => window.clicks")
    heard = lis.evaluate("() => window.heard")
    out = []
    for c in clicks:
        after = [h - c for h in heard if 0 <= h - c < 900]
        if after:
            out.append(min(after))
    return out


def through_node(s: Session, node: str, origin: str, joins: int) -> dict:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    access = api_sign_up(node, email)["session"]["access_token"]
    room = f"bench-{uuid.uuid4().hex[:6]}"
    api(node, "POST", "/rooms", {"name": room}, access)
    pub_tok = api(node, "POST", f"/rooms/{room}/token", {"publish": True}, access)
    play_tok = api(node, "POST", f"/rooms/{room}/token", {"subscribe": True}, access)
    pub = s.person("node-publisher")
    pub.goto(origin)
    wait_for("sdk", lambda: pub.evaluate("() => window.ready === true"))
    pub.evaluate(PUBLISHER_JS)
    pub.evaluate("async ([u, t]) => { window.pub = new window.sc.WhipPublisher({url: u, token: t}); await window.pub.publish(window.tracks); }", [pub_tok["whip_url"], pub_tok["token"]])
    audio, video, m2e = [], [], []
    for i in range(joins):
        lis = s.person(f"node-listener{i}")
        lis.goto(origin)
        wait_for("sdk", lambda: lis.evaluate("() => window.ready === true"))
        lis.evaluate(LISTEN_SETUP_JS)
        r = lis.evaluate(
            """async ([u, t, watch]) => {
              const t0 = performance.now();
              window.player = new window.sc.WhepPlayer({url: u, token: t});
              await window.player.play();
              return await (0, eval)(watch)(['window.player.pc', 'window.player.stream', t0]);
            }""",
            [play_tok["whep_url"], play_tok["token"], WATCH_JS],
        )
        if r["audio_ms"] is not None:
            audio.append(r["audio_ms"])
        if r["video_ms"] is not None:
            video.append(r["video_ms"])
        if i == joins - 1:
            m2e = mouth_to_ear(pub, lis)
        lis.evaluate("() => window.player.stop()")
        lis.context.close()
    pub.evaluate("() => window.pub.stop()")
    return {"join_audio_ms": summary(audio), "join_video_ms": summary(video), "mouth_to_ear_ms": summary(m2e), "failed_joins": joins - min(len(audio), len(video))}


def direct(s: Session, origin: str, joins: int) -> dict:
    """The same measures with no server: the listener offers (as a WHEP player does),
    the publisher answers; SDP passes through this script (complete gathering, no
    trickle), candidates on loopback."""
    pub = s.person("direct-publisher")
    pub.goto(origin)
    wait_for("page", lambda: pub.evaluate("() => window.ready === true"))
    pub.evaluate(PUBLISHER_JS)
    audio, video, m2e = [], [], []
    for i in range(joins):
        lis = s.person(f"direct-listener{i}")
        lis.goto(origin)
        wait_for("page", lambda: lis.evaluate("() => window.ready === true"))
        lis.evaluate(LISTEN_SETUP_JS)
        # The offer, gathered.
        lis.evaluate(
            """async () => {
              window.t0 = performance.now();
              window.pc = new RTCPeerConnection();
              window.stream = new MediaStream();
              window.pc.ontrack = (e) => window.stream.addTrack(e.track);
              window.pc.addTransceiver('audio', {direction: 'recvonly'});
              window.pc.addTransceiver('video', {direction: 'recvonly'});
              await window.pc.setLocalDescription(await window.pc.createOffer());
              await new Promise(r => { if (window.pc.iceGatheringState === 'complete') r(); window.pc.onicegatheringstatechange = () => window.pc.iceGatheringState === 'complete' && r(); });
            }"""
        )
        offer = lis.evaluate("() => window.pc.localDescription.sdp")
        answer = pub.evaluate(
            """async (sdp) => {
              if (window.pc) window.pc.close();
              window.pc = new RTCPeerConnection();
              window.tracks.forEach(t => window.pc.addTrack(t, new MediaStream(window.tracks)));
              await window.pc.setRemoteDescription({type: 'offer', sdp});
              await window.pc.setLocalDescription(await window.pc.createAnswer());
              await new Promise(r => { if (window.pc.iceGatheringState === 'complete') r(); window.pc.onicegatheringstatechange = () => window.pc.iceGatheringState === 'complete' && r(); });
              return window.pc.localDescription.sdp;
            }""",
            offer,
        )
        r = lis.evaluate(
            """async ([sdp, watch]) => {
              await window.pc.setRemoteDescription({type: 'answer', sdp});
              return await (0, eval)(watch)(['window.pc', 'window.stream', window.t0]);
            }""",
            [answer, WATCH_JS],
        )
        if r["audio_ms"] is not None:
            audio.append(r["audio_ms"])
        if r["video_ms"] is not None:
            video.append(r["video_ms"])
        if i == joins - 1:
            m2e = mouth_to_ear(pub, lis)
        lis.context.close()
    return {"join_audio_ms": summary(audio), "join_video_ms": summary(video), "mouth_to_ear_ms": summary(m2e), "failed_joins": joins - min(len(audio), len(video))}


def command_round_trips(s: Session, node: str, n: int) -> list[float]:
    """Pause/resume pressed on the node's listen page until the phone's new state shows
    there (the pages, the API, the bus, both sockets)."""
    user = s.person("cmd-user")
    sign_up(user, node, f"cmd-{uuid.uuid4().hex[:8]}@example.com")
    user.get_by_role("button", name="Pair a phone").click()
    link = wait_for("link", lambda: (lambda h: h if h and h != "#" else None)(user.locator("#pair-link").get_attribute("href")))
    phone = s.person("cmd-phone", viewport=PHONE)
    phone.goto(link)
    wait_for("online", lambda: phone.locator("#connection").inner_text() == "online")
    song = tagged_tone(fixtures() / "bench-tone.flac", "Bench", "Bench", "Bench", 440.0, 120.0)
    phone.locator("#files").set_input_files(str(song))
    phone.locator("#library li").first.click()
    device = user.locator("#devices li").first
    device.wait_for()
    device.get_by_role("link", name="Listen").click()
    wait_for("playing", lambda: user.locator("#np-status").get_attribute("data-status") == "playing")
    out = []
    for i in range(n):
        want = "paused" if i % 2 == 0 else "playing"
        out.append(
            user.evaluate(
                """(want) => new Promise((resolve, reject) => {
                  const el = document.querySelector('#np-status');
                  const t0 = performance.now();
                  const obs = new MutationObserver(() => { if (el.getAttribute('data-status') === want) { obs.disconnect(); resolve(performance.now() - t0); } });
                  obs.observe(el, {attributes: true});
                  setTimeout(() => reject(new Error('no state')), 5000);
                  document.querySelector('#playpause').click();
                })""",
                want,
            )
        )
    return out


def direct_command_round_trips(s: Session, origin: str, n: int) -> list[float]:
    """A command and the state it causes, over a data channel between two pages
    connected directly: the floor of a remote control with no server."""
    a = s.person("dc-browser")
    b = s.person("dc-phone")
    for p in (a, b):
        p.goto(origin)
        wait_for("page", lambda p=p: p.evaluate("() => window.ready === true"))
    offer = a.evaluate(
        """async () => {
          window.pc = new RTCPeerConnection();
          window.dc = window.pc.createDataChannel('control');
          await window.pc.setLocalDescription(await window.pc.createOffer());
          await new Promise(r => { if (window.pc.iceGatheringState === 'complete') r(); window.pc.onicegatheringstatechange = () => window.pc.iceGatheringState === 'complete' && r(); });
          return window.pc.localDescription.sdp;
        }"""
    )
    answer = b.evaluate(
        """async (sdp) => {
          window.pc = new RTCPeerConnection();
          const audio = new Audio(); window.audio = audio;
          window.pc.ondatachannel = (e) => { const dc = e.channel; dc.onmessage = (m) => {
            const c = JSON.parse(m.data); if (c.action === 'pause') audio.pause();
            dc.send(JSON.stringify({status: c.action === 'pause' ? 'paused' : 'playing', command: c.id}));
          }; };
          await window.pc.setRemoteDescription({type: 'offer', sdp});
          await window.pc.setLocalDescription(await window.pc.createAnswer());
          await new Promise(r => { if (window.pc.iceGatheringState === 'complete') r(); window.pc.onicegatheringstatechange = () => window.pc.iceGatheringState === 'complete' && r(); });
          return window.pc.localDescription.sdp;
        }""",
        offer,
    )
    a.evaluate("async (sdp) => { await window.pc.setRemoteDescription({type: 'answer', sdp}); await new Promise(r => window.dc.readyState === 'open' ? r() : window.dc.onopen = r); }", answer)
    out = []
    for i in range(n):
        out.append(
            a.evaluate(
                """(i) => new Promise((resolve) => {
                  const t0 = performance.now();
                  window.dc.onmessage = () => resolve(performance.now() - t0);
                  window.dc.send(JSON.stringify({id: i, action: i % 2 ? 'resume' : 'pause'}));
                })""",
                i,
            )
        )
    return out


def start_node(binary: str) -> tuple[subprocess.Popen, str, str]:
    data = tempfile.mkdtemp(prefix="sc-bench-")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--http", "127.0.0.1:0", "--media-port", "0", "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    url = line.split("open ", 1)[1].split("/ ", 1)[0]
    return proc, url, data


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--streamcore", default="target/release/streamcore")
    p.add_argument("--joins", type=int, default=20)
    p.add_argument("--commands", type=int, default=20)
    p.add_argument("--shots", default="target/bench-results")
    p.add_argument("--json", default="target/bench-results/b9-browser.json")
    a = p.parse_args()
    Path(a.shots).mkdir(parents=True, exist_ok=True)
    proc, node, data = start_node(a.streamcore)
    harness.NODE_DATA_DIR = data
    srv, origin = serve_page(PAGE % {"node": node})
    s = Session(a.shots)
    try:
        result = {
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "chromium": s.browser.version,
            "through_node": through_node(s, node, origin + "/", a.joins),
            "direct": direct(s, origin + "/", a.joins),
            "command_through_node_ms": summary(command_round_trips(s, node, a.commands)),
            "command_direct_ms": summary(direct_command_round_trips(s, origin + "/", a.commands)),
        }
    finally:
        s.close()
        srv.shutdown()
        proc.terminate()
        proc.wait(timeout=40)
    Path(a.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
