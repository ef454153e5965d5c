"""A network that lets nothing out but TLS: Chromium runs in a network namespace of
its own whose nftables drop every packet to the node except TCP to two ports, the
node's HTTPS and the embedded TURN server's TLS listener (what a strict corporate
firewall leaves open). UDP and ICE-TCP are blocked, so a publisher of camera and
microphone and a player can only connect through TURN over TLS with the ICE servers
the node handed out; the player decodes audio and video, and both selected
candidate pairs are relayed over TLS."""

import uuid

from foreign import STATS_JS
from harness import Failure, api, run, wait_for

START_JS = """
async ([whip, whep]) => {
  const sc = await import('/sdk/streamcore.js');
  window.sc = sc;
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 360}});
  const pub = new sc.WhipPublisher({url: whip.whip_url, token: whip.token, iceServers: whip.ice_servers});
  await pub.publish(stream.getTracks());
  const player = new sc.WhepPlayer({url: whep.whep_url, token: whep.token, iceServers: whep.ice_servers});
  await player.play();
  window.pub = pub; window.player = player;
  const v = document.createElement('video');
  v.playsInline = true; v.autoplay = true; v.muted = false;
  document.body.append(v);
  v.srcObject = player.stream;
  return {publisher: pub.resource, player: player.resource};
}
"""

# The selected pair's local candidate: its type and, for a relay, how the client
# reaches the TURN server.
PATH_JS = """
async (name) => {
  const stats = await window[name].pc.getStats();
  let pair = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  if (!pair || pair.state !== 'succeeded') return null;
  const local = stats.get(pair.localCandidateId);
  return {type: local.candidateType, relayProtocol: local.relayProtocol ?? null, url: local.url ?? null};
}
"""


def main(a, s):
    node = a.base
    email = f"tls-turn-{uuid.uuid4().hex[:8]}@example.com"
    reg = api(node, "POST", "/auth/register", {"email": email, "password": "a long password 1"})
    access = reg["session"]["access_token"]
    room = f"tls-turn-{uuid.uuid4().hex[:6]}"
    api(node, "POST", "/rooms", {"name": room}, access)
    whip = api(node, "POST", f"/rooms/{room}/token", {"publish": True}, access)
    whep = api(node, "POST", f"/rooms/{room}/token", {"subscribe": True}, access)
    urls = [u for server in whep.get("ice_servers") or [] for u in server["urls"]]
    if not any(u.startswith("turns:") for u in urls):
        raise Failure(f"the node handed out no turns: URL: {urls}")

    page = s.person("behind a TLS-only firewall", ignore_https_errors=True)
    page.goto(node + "/healthz")
    page.evaluate(START_JS, [whip, whep])
    s.on_failure = lambda: {
        "player": page.evaluate(STATS_JS, "player"),
        "paths": {n: page.evaluate(PATH_JS, n) for n in ("pub", "player")},
    }
    st = wait_for(
        "audio and video decoded through TURN/TLS",
        lambda: (lambda x: x if x.get("audio", {}).get("energy") and (x.get("audio", {}).get("packets") or 0) > 50 and (x.get("video", {}).get("frames") or 0) > 10 else None)(
            page.evaluate(STATS_JS, "player")
        ),
        40,
    )
    paths = {}
    for name in ("pub", "player"):
        path = wait_for(f"the {name}'s selected path", lambda name=name: page.evaluate(PATH_JS, name))
        if path["type"] != "relay" or path["relayProtocol"] != "tls":
            raise Failure(f"{name} is not relayed over TLS: {path}")
        paths[name] = path
    page.evaluate("() => Promise.all([window.player.stop(), window.pub.stop()])")
    return {
        "paths": paths,
        "audio_packets": st["audio"]["packets"],
        "video_frames": st["video"]["frames"],
        "urls": urls,
    }


if __name__ == "__main__":
    # Chromium checks the TURN server's certificate; the node's is self-signed here.
    run(main, None, ["--ignore-certificate-errors"])
