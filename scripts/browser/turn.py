"""Clients that can only go through TURN: the node hands out an external TURN server
(coturn, started by the test) with time-limited REST credentials, and a Chromium
publisher and player forced to relay (`iceTransportPolicy: 'relay'`) connect through it
and decode audio and video. The credentials are checked by coturn itself: the ones the
node handed out are accepted, expired ones and ones made with another secret are
refused (no relay candidate, a 401 from the TURN server). And it is no open relay: with
the configuration the README gives (every peer address denied but the node's), a TURN
client with valid credentials may relay to the node and is refused (403) anywhere
else."""

import asyncio
import base64
import hashlib
import hmac
import threading
import time
import uuid

from foreign import PAGE, STATS_JS
from harness import Failure, api, api_sign_up, run, serve_page, wait_for

PUBLISH_JS = """
async ([url, token, iceServers]) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 360}});
  const pub = new window.sc.WhipPublisher({url, token, iceServers, iceTransportPolicy: 'relay'});
  await pub.publish(stream.getTracks());
  window.pub = pub;
  return pub.resource;
}
"""

PLAY_JS = """
async ([url, token, iceServers]) => {
  const player = new window.sc.WhepPlayer({url, token, iceServers, iceTransportPolicy: 'relay'});
  window.player = player;
  await player.play();
  // Audio energy is measured on what is played out.
  const v = document.createElement('video');
  v.playsInline = true; v.autoplay = true;
  document.body.append(v);
  v.srcObject = player.stream;
  return player.resource;
}
"""

# The kind of local candidate the connection settled on ('relay' through TURN).
PATH_JS = """
async (name) => {
  const stats = await window[name].pc.getStats();
  let pair = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId);
  return {type: local.candidateType, relayProtocol: local.relayProtocol ?? null, state: pair.state};
}
"""

# Gathers relay-only candidates with these servers; what came of it.
GATHER_JS = """
async (iceServers) => {
  const pc = new RTCPeerConnection({iceServers, iceTransportPolicy: 'relay'});
  const relay = [], errors = [];
  pc.addEventListener('icecandidateerror', e => errors.push({code: e.errorCode, text: e.errorText}));
  const done = new Promise(r => pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') r(); }));
  pc.addEventListener('icecandidate', e => { if (e.candidate && e.candidate.type === 'relay') relay.push(e.candidate.candidate); });
  pc.addTransceiver('audio');
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([done, new Promise(r => setTimeout(r, 10000))]);
  pc.close();
  return {relay: relay.length, errors};
}
"""


def credentials(secret: str, expiry: int, identity: str) -> tuple[str, str]:
    """The TURN REST credential, computed here independently of the node."""
    username = f"{expiry}:{identity}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


def relay_refusals(turn_url: str, username: str, password: str, node: tuple[str, int]) -> dict:
    """Allocates on the TURN server (aioice's client, over UDP) and binds a channel to
    the node and to an address that is not the node's: what each got."""
    from aioice.turn import create_turn_endpoint

    host, port = turn_url.split(":", 1)[1].split("?")[0].rsplit(":", 1)

    class Recorder(asyncio.DatagramProtocol):
        def __init__(self):
            self.errors = []

        def error_received(self, exc):
            self.errors.append(str(exc))

    async def check():
        transport, proto = await create_turn_endpoint(Recorder, (host, int(port)), username, password)
        out = {}
        try:
            for label, peer in (("node", node), ("elsewhere", ("127.0.0.2", node[1]))):
                before = len(proto.errors)
                transport.sendto(b"hello", peer)
                deadline = time.monotonic() + 5
                # The channel binding's answer (or its failure) comes back within the deadline.
                while time.monotonic() < deadline and len(proto.errors) == before:
                    inner = transport._TurnTransport__inner_protocol  # noqa: SLF001 - the bound channels
                    if peer in inner.peer_to_channel:
                        break
                    await asyncio.sleep(0.02)
                out[label] = proto.errors[before:] or ["bound"]
        finally:
            transport.close()
        return out

    result = {}
    # Playwright's sync API owns this thread's event loop; the check gets its own.
    t = threading.Thread(target=lambda: result.update(asyncio.run(check())))
    t.start()
    t.join(30)
    return result


def extra(p):
    p.add_argument("--turn-secret", required=True)


def main(a, s):
    node = a.base
    srv, origin = serve_page(PAGE % {"node": node})
    try:
        email = f"turn-{uuid.uuid4().hex[:8]}@example.com"
        reg = api_sign_up(node, email)
        access = reg["session"]["access_token"]
        room = f"turn-{uuid.uuid4().hex[:6]}"
        api(node, "POST", "/rooms", {"name": room}, access)
        pub_grant = api(node, "POST", f"/rooms/{room}/token", {"publish": True}, access)
        play_grant = api(node, "POST", f"/rooms/{room}/token", {"subscribe": True}, access)

        servers = play_grant.get("ice_servers") or []
        turn = [x for x in servers if any(u.startswith("turn:") for u in x["urls"])]
        if len(turn) != 1 or not turn[0].get("username") or not turn[0].get("credential"):
            raise Failure(f"the join-token response names no TURN server with credentials: {servers}")
        expiry = int(turn[0]["username"].split(":", 1)[0])
        if not time.time() + 3000 < expiry < time.time() + 2 * 86400:
            raise Failure(f"the TURN credential's expiry is not in the configured lifetime: {turn[0]}")
        # Independent of the node: the same HMAC, as coturn computes it.
        identity = turn[0]["username"].split(":", 1)[1]
        if credentials(a.turn_secret, expiry, identity)[1] != turn[0]["credential"]:
            raise Failure("the TURN password is not HMAC-SHA1(secret, username)")

        publisher = s.person("relayed publisher")
        player = s.person("relayed player")
        for p in (publisher, player):
            p.goto(origin + "/")
            wait_for("the client library", lambda p=p: p.evaluate("() => window.ready === true"))
        publisher.evaluate(PUBLISH_JS, [pub_grant["whip_url"], pub_grant["token"], pub_grant["ice_servers"]])
        player.evaluate(PLAY_JS, [play_grant["whep_url"], play_grant["token"], play_grant["ice_servers"]])
        s.on_failure = lambda: {"player": player.evaluate(STATS_JS, "player"), "player_path": player.evaluate(PATH_JS, "player"), "publisher_path": publisher.evaluate(PATH_JS, "pub")}
        st = wait_for(
            "relayed audio and video decoded",
            lambda: (lambda x: x if x.get("audio", {}).get("energy") and (x.get("video", {}).get("frames") or 0) > 10 else None)(
                player.evaluate(STATS_JS, "player")
            ),
            30,
        )
        paths = {}
        for label, page, name in (("publisher", publisher, "pub"), ("player", player, "player")):
            path = wait_for(f"the {label}'s selected path", lambda page=page, name=name: page.evaluate(PATH_JS, name))
            if path["type"] != "relay":
                raise Failure(f"the {label} is not connected through TURN: {path}")
            paths[label] = path

        # coturn checks the credentials: fresh ones work, expired ones and ones made
        # with another secret do not.
        url = turn[0]["urls"]
        fresh = credentials(a.turn_secret, int(time.time()) + 600, "checker")
        expired = credentials(a.turn_secret, int(time.time()) - 60, "checker")
        forged = credentials("not the secret", int(time.time()) + 600, "checker")
        checks = {}
        for label, (u, c) in (("fresh", fresh), ("expired", expired), ("forged", forged)):
            checks[label] = player.evaluate(GATHER_JS, [{"urls": url, "username": u, "credential": c}])
        if checks["fresh"]["relay"] == 0:
            raise Failure(f"fresh credentials got no relay candidate: {checks}")
        for label in ("expired", "forged"):
            if checks[label]["relay"] != 0:
                raise Failure(f"{label} credentials were accepted by the TURN server: {checks}")
            if not any(e["code"] == 401 for e in checks[label]["errors"]):
                raise Failure(f"{label} credentials: no 401 from the TURN server: {checks}")

        node_media = [
            line.split()[4:6]
            for line in player.evaluate("() => window.player.pc.remoteDescription.sdp").splitlines()
            if line.startswith("a=candidate:") and " udp " in line
        ][0]
        udp_url = next(u for u in url if "transport=udp" in u)
        refusals = relay_refusals(udp_url, fresh[0], fresh[1], (node_media[0], int(node_media[1])))
        if refusals.get("node") != ["bound"]:
            raise Failure(f"the TURN server would not relay to the node: {refusals}")
        if not any("403" in e for e in refusals.get("elsewhere", [])):
            raise Failure(f"the TURN server relays to an address that is not the node's: {refusals}")

        for page, name in ((player, "player"), (publisher, "pub")):
            page.evaluate(f"() => window.{name}.stop()")
        return {
            "paths": paths,
            "audio_packets": st["audio"]["packets"],
            "video_frames": st["video"]["frames"],
            "credential_checks": {k: {"relay": v["relay"], "codes": sorted({e["code"] for e in v["errors"]})} for k, v in checks.items()},
            "relay_refusals": refusals,
        }
    finally:
        srv.shutdown()


if __name__ == "__main__":
    run(main, extra)
