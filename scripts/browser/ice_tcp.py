"""A network that drops UDP, and a client that changes address. Chromium runs in a
network namespace of its own (the test makes it: a veth pair to the node, nftables
dropping every UDP packet the namespace sends). A publisher of a 440 Hz tone and a
player in that namespace connect to the node over ICE-TCP, and the player's page
hears 440 Hz. Then the namespace's address changes (10.x.y.2 → 10.x.y.3, the old one
removed): both sessions restart ICE over WHIP/WHEP PATCH by themselves, keep their
resources (no new session), and the tone comes back. Then two room participants
(`/rtc`) in that namespace, one hearing the other's tone, move again: both resume with
an ICE restart, nobody sees anyone leave, and the tone comes back."""

import subprocess
import sys
import time
import uuid
from pathlib import Path

from harness import Failure, analyse, api, api_sign_up, run, tone_wav, wait_for


def base_arg() -> str:
    return sys.argv[sys.argv.index("--base") + 1]


def flags() -> list[str]:
    tone = Path("/tmp/streamcore-fake-mic-440hz.wav")
    if not tone.exists():
        tmp = tone.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tone_wav(tmp, 440.0, 10.0, amplitude=0.25)
        tmp.rename(tone)
    # The node is reached at 10.x.y.1, not localhost: the page may use the
    # microphone only if that origin counts as secure.
    return [f"--use-file-for-fake-audio-capture={tone}", f"--unsafely-treat-insecure-origin-as-secure={base_arg()}"]


START_JS = """
async ([whip, whep]) => {
  const sc = await import('/sdk/streamcore.js');
  window.sc = sc;
  window.events = [];
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const pub = new sc.WhipPublisher({url: whip.whip_url, token: whip.token});
  await pub.publish(stream.getTracks());
  const player = new sc.WhepPlayer({url: whep.whep_url, token: whep.token});
  await player.play({video: false});
  for (const [name, s] of [['publisher', pub], ['player', player]]) {
    s.on('restarted', () => window.events.push({name, what: 'restarted', at: performance.now()}));
    s.on('error', (e) => window.events.push({name, what: 'error ' + e.message, at: performance.now()}));
    s.on('state', (st) => window.events.push({name, what: st, at: performance.now()}));
  }
  window.pub = pub; window.player = player;
  const a = document.createElement('audio');
  a.id = 'heard'; a.autoplay = true; a.srcObject = player.stream;
  document.body.append(a);
  return {publisher: pub.resource, player: player.resource};
}
"""

# The transport of each session's selected candidate pair.
PATH_JS = """
async () => {
  const out = {};
  for (const name of ['pub', 'player']) {
    const stats = await window[name].pc.getStats();
    let pair = null;
    stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    out[name] = {protocol: local.protocol, tcpType: local.tcpType ?? null, local: local.address, remote: remote.address + ':' + remote.port};
  }
  return out;
}
"""

PACKETS_JS = """
async () => {
  let n = 0;
  (await window.player.pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') n = s.packetsReceived; });
  return n;
}
"""


ROOM_JS = """
async ([tokA, tokB]) => {
  const sc = window.sc;
  const mic = (await navigator.mediaDevices.getUserMedia({audio: true})).getAudioTracks()[0];
  const alice = new sc.Room({tokenProvider: async () => tokA});
  const bob = new sc.Room({tokenProvider: async () => tokB});
  window.revents = [];
  for (const [n, r] of [['alice', alice], ['bob', bob]]) {
    for (const what of ['reconnecting', 'reconnected', 'disconnected', 'participantLeft']) {
      r.on(what, () => window.revents.push({n, what, at: performance.now()}));
    }
  }
  bob.on('trackSubscribed', (t) => {
    const a = document.createElement('audio');
    a.id = 'roomheard'; a.autoplay = true; a.srcObject = new MediaStream([t.mediaStreamTrack]);
    document.body.append(a);
  });
  await alice.connect();
  await bob.connect();
  await alice.publish(mic, {source: 'microphone'});
  window.alice = alice; window.bob = bob;
  return {alice: alice.local.sid, bob: bob.local.sid};
}
"""

ROOM_PACKETS_JS = """
async () => {
  let n = 0;
  (await window.bob.pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'audio') n += s.packetsReceived; });
  return n;
}
"""


def move(a, node: str, old: str, new: str) -> None:
    """The namespace's address changes: the new one added, the old one removed."""
    ns = ["ip", "netns", "exec", a.netns]
    subprocess.run([*ns, "ip", "addr", "add", f"{new}/24", "dev", a.client_if], check=True)
    subprocess.run([*ns, "ip", "addr", "del", f"{old}/24", "dev", a.client_if], check=True)
    # The default route goes with the old address when it was the only one using it.
    subprocess.run([*ns, "ip", "route", "replace", "default", "via", node.split("//")[1].split(":")[0]], check=True)


def room_moves(a, s, page, node: str, access: str) -> dict:
    room = f"tcp-room-{uuid.uuid4().hex[:6]}"
    api(node, "POST", "/rooms", {"name": room}, access)
    grant = {"publish": True, "subscribe": True, "publish_data": True}
    tok_a = api(node, "POST", f"/rooms/{room}/token", {**grant, "identity": "alice"}, access)["token"]
    tok_b = api(node, "POST", f"/rooms/{room}/token", {**grant, "identity": "bob"}, access)["token"]
    sids = page.evaluate(ROOM_JS, [tok_a, tok_b])
    wait_for("bob hears alice in the room", lambda: page.evaluate(ROOM_PACKETS_JS) > 50, 20)
    heard = analyse(page, "#roomheard")
    if abs(heard["hz"] - 440.0) > 5.0:
        raise Failure(f"in the room bob heard {heard['hz']:.1f} Hz, not 440 Hz")
    moved = page.evaluate("() => performance.now()")
    old = a.new_ip
    new = old.rsplit(".", 1)[0] + ".4"
    move(a, node, old, new)
    back = wait_for(
        "both participants to resume",
        lambda: (lambda ev: ev if {e["n"] for e in ev if e["what"] == "reconnected"} == {"alice", "bob"} else None)(
            page.evaluate("() => window.revents")
        ),
        40,
    )
    resumed_at = max(e["at"] for e in back if e["what"] == "reconnected")
    before = page.evaluate(ROOM_PACKETS_JS)
    wait_for("room audio after the move", lambda: page.evaluate(ROOM_PACKETS_JS) > before + 25, 10)
    media_at = page.evaluate("() => performance.now()")
    events = page.evaluate("() => window.revents")
    if any(e["what"] in ("participantLeft", "disconnected") for e in events):
        raise Failure(f"someone saw a participant leave: {events}")
    if page.evaluate("() => ({alice: window.alice.local.sid, bob: window.bob.local.sid})") != sids:
        raise Failure("a participant re-joined instead of resuming")
    after = analyse(page, "#roomheard")
    if abs(after["hz"] - 440.0) > 5.0:
        raise Failure(f"after the move bob heard {after['hz']:.1f} Hz")
    page.evaluate("() => Promise.all([window.alice.leave(), window.bob.leave()])")
    return {
        "hz": round(heard["hz"], 1),
        "hz_after": round(after["hz"], 1),
        "resumed_after_move_ms": round(resumed_at - moved),
        "media_back_after_resume_ms": round(media_at - resumed_at),
        "events": [f"{e['n']} {e['what']} +{round(e['at'] - moved)}ms" for e in events],
    }


def extra(p):
    p.add_argument("--netns", required=True, help="the client's network namespace")
    p.add_argument("--client-if", required=True, help="its end of the veth pair")
    p.add_argument("--new-ip", required=True, help="the address it moves to (/24)")
    p.add_argument("--old-ip", required=True)


def main(a, s):
    node = a.base
    email = f"tcp-{uuid.uuid4().hex[:8]}@example.com"
    reg = api_sign_up(node, email)
    access = reg["session"]["access_token"]
    room = f"tcp-{uuid.uuid4().hex[:6]}"
    api(node, "POST", "/rooms", {"name": room}, access)
    whip = api(node, "POST", f"/rooms/{room}/token", {"publish": True}, access)
    whep = api(node, "POST", f"/rooms/{room}/token", {"subscribe": True}, access)

    page = s.person("behind a firewall")
    page.goto(node + "/healthz")
    resources = page.evaluate(START_JS, [whip, whep])
    s.on_failure = lambda: {"events": page.evaluate("() => window.events"), "paths": page.evaluate(PATH_JS)}
    paths = wait_for("both sessions connected", lambda: page.evaluate(PATH_JS), 20)
    for name, p in paths.items():
        if p["protocol"] != "tcp":
            raise Failure(f"{name} is not on ICE-TCP with UDP blocked: {paths}")
    wait_for("audio packets", lambda: page.evaluate(PACKETS_JS) > 50, 20)
    heard = analyse(page, "#heard")
    if abs(heard["hz"] - 440.0) > 5.0:
        raise Failure(f"the player heard {heard['hz']:.1f} Hz, not 440 Hz")

    # The client's address changes.
    moved = page.evaluate("() => performance.now()")
    move(a, node, a.old_ip, a.new_ip)
    restarted = wait_for(
        "both sessions to restart ICE",
        lambda: (lambda ev: ev if {e["name"] for e in ev if e["what"] == "restarted"} == {"publisher", "player"} else None)(
            page.evaluate("() => window.events")
        ),
        30,
    )
    restart_at = max(e["at"] for e in restarted if e["what"] == "restarted")
    before = page.evaluate(PACKETS_JS)
    wait_for("audio after the move", lambda: page.evaluate(PACKETS_JS) > before + 25, 10)
    back_at = page.evaluate("() => performance.now()")
    after = wait_for("both sessions connected again", lambda: page.evaluate(PATH_JS), 10)
    for name, p in after.items():
        if p["local"] != a.new_ip:
            raise Failure(f"{name} is not on the new address: {after}")
    if page.evaluate("() => [window.pub.resource, window.player.resource]") != [resources["publisher"], resources["player"]]:
        raise Failure("a session was created anew instead of restarted")
    heard_after = analyse(page, "#heard")
    if abs(heard_after["hz"] - 440.0) > 5.0:
        raise Failure(f"after the move the player heard {heard_after['hz']:.1f} Hz")
    page.evaluate("() => Promise.all([window.player.stop(), window.pub.stop()])")
    room = room_moves(a, s, page, node, access)
    return {
        "room": room,
        "paths": paths,
        "paths_after": after,
        "hz": round(heard["hz"], 1),
        "hz_after": round(heard_after["hz"], 1),
        "restart_after_move_ms": round(restart_at - moved),
        "media_back_after_restart_ms": round(back_at - restart_at),
        "events": [f"{e['name']} {e['what']} +{round(e['at'] - moved)}ms" for e in page.evaluate("() => window.events") if e["at"] >= moved],
    }


if __name__ == "__main__":
    run(main, extra, flags())
