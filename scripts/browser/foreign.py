"""A page on another origin publishes over WHIP and plays over WHEP with the client
library imported from the node (CORS), and the keyframe defect found with Chromium:
Chromium's VP8 encoder sends keyframes only when asked, and a second WHEP player that
joins about 0.5 s after the first must still start decoding at once — in every round.
The control API stays closed to that origin (no CORS by default)."""

import uuid

from harness import Failure, api, api_sign_up, run, serve_page, wait_for

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>another site</title>
<script type="module">
import * as sc from '%(node)s/sdk/streamcore.js';
window.sc = sc;
window.ready = true;
</script></head><body><video id="v" autoplay playsinline muted></video></body></html>"""


PUBLISH_JS = """
async ([url, token]) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 360}});
  const pub = new window.sc.WhipPublisher({url, token});
  await pub.publish(stream.getTracks());
  window.pub = pub;
  return pub.resource;
}
"""

# Starts a WHEP player; resolves with how long until the first decoded audio and
# video (a video element's first painted frame).
PLAY_JS = """
async ([url, token, name]) => {
  const t0 = performance.now();
  const player = new window.sc.WhepPlayer({url, token});
  window[name] = player;
  await player.play();
  const posted = performance.now();
  const v = document.createElement('video');
  v.muted = false; v.playsInline = true; v.autoplay = true;
  document.body.append(v);
  v.srcObject = player.stream;
  const firstFrame = new Promise(r => v.requestVideoFrameCallback(() => r(performance.now() - t0)));
  return {post_ms: posted - t0, first_frame_ms: await Promise.race([firstFrame, new Promise(r => setTimeout(() => r(null), 8000))])};
}
"""

def start(page, grant):
    """Starts a player in the page without waiting for it; its result lands in `window.__res`."""
    page.evaluate(
        "([js, args]) => { window.__res = undefined; (0, eval)(js)(args).then(r => { window.__res = r; }, e => { window.__res = {error: String(e)}; }); }",
        [PLAY_JS, [grant["whep_url"], grant["token"], "player"]],
    )


STATS_JS = """
async (name) => {
  const out = {};
  (await window[name].pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp') out[s.kind] = {packets: s.packetsReceived, frames: s.framesDecoded, keyframes: s.keyFramesDecoded, energy: s.totalAudioEnergy};
  });
  return out;
}
"""


# Restarts ICE on a session (RFC 9725 §4.4, as after a network change) and resolves
# with how long until `restarted`, the ICE ufrags before and after, and the resource.
RESTART_JS = """
async (name) => {
  const session = window[name];
  const ufrag = () => /a=ice-ufrag:(\\S+)/.exec(session.pc.remoteDescription.sdp)[1];
  const before = {ufrag: ufrag(), resource: session.resource, etag: session.etag};
  const t0 = performance.now();
  const restarted = session.once('restarted');
  await session.restartIce();
  await restarted;
  return {before, after: {ufrag: ufrag(), resource: session.resource, etag: session.etag}, ms: performance.now() - t0};
}
"""


def restart_both(s, origin, publisher, play_grant):
    """A player and then the publisher restart ICE on their sessions: new ICE
    credentials both ways, the same resources, and the player keeps decoding."""
    player = s.person("restarting player")
    player.goto(origin + "/")
    wait_for("the client library", lambda: player.evaluate("() => window.ready === true"))
    start(player, play_grant)
    res = wait_for("the player's result", lambda: player.evaluate("() => window.__res"), 20)
    if "error" in res or res["first_frame_ms"] is None:
        raise Failure(f"the restarting player did not start: {res}")
    out = {}
    for label, page, name in (("player", player, "player"), ("publisher", publisher, "pub")):
        r = page.evaluate(RESTART_JS, name)
        if r["before"]["ufrag"] == r["after"]["ufrag"] or r["before"]["etag"] == r["after"]["etag"]:
            raise Failure(f"{label}: the restart did not change the node's ICE credentials: {r}")
        if r["before"]["resource"] != r["after"]["resource"]:
            raise Failure(f"{label}: the restart made a new session: {r}")
        frames = player.evaluate(STATS_JS, "player")["video"]["frames"]
        wait_for(
            f"video decoded after the {label}'s restart",
            lambda frames=frames: player.evaluate(STATS_JS, "player")["video"]["frames"] > frames + 10,
            10,
        )
        state = page.evaluate(f"() => window.{name}.pc.connectionState")
        if state != "connected":
            raise Failure(f"{label}: connection {state} after the restart")
        out[f"{label}_ms"] = round(r["ms"])
    player.evaluate("() => window.player.stop()")
    player.context.close()
    return out


def main(a, s):
    node = a.base
    srv, origin = serve_page(PAGE % {"node": node})
    try:
        # An account and a room, through the API (this test is about the other site).
        email = f"cors-{uuid.uuid4().hex[:8]}@example.com"
        reg = api_sign_up(node, email)
        access = reg["session"]["access_token"]
        room = f"cors-{uuid.uuid4().hex[:6]}"
        api(node, "POST", "/rooms", {"name": room}, access)
        pub_grant = api(node, "POST", f"/rooms/{room}/token", {"publish": True}, access)
        play_grant = api(node, "POST", f"/rooms/{room}/token", {"subscribe": True}, access)

        publisher = s.person("publisher")
        publisher.goto(origin + "/")
        wait_for("the client library from the node", lambda: publisher.evaluate("() => window.ready === true"))
        resource = publisher.evaluate(PUBLISH_JS, [pub_grant["whip_url"], pub_grant["token"]])
        if not resource or not resource.startswith(node):
            raise Failure(f"no Location for the WHIP session (exposed by CORS?): {resource!r}")

        # The API is not open to this origin: the browser refuses to read it.
        blocked = publisher.evaluate(
            """async ([node, token]) => {
              try { await fetch(node + '/api/v1/me', {headers: {authorization: 'Bearer ' + token}}); return false; }
              catch (e) { return true; }
            }""",
            [node, access],
        )
        if not blocked:
            raise Failure("a page of another origin could read /api/v1 (no cors_origins configured)")

        rounds = []
        for r in range(3):
            first = s.person(f"player{r}a")
            second = s.person(f"player{r}b")
            for p in (first, second):
                p.goto(origin + "/")
                wait_for("the client library", lambda p=p: p.evaluate("() => window.ready === true"))
            start(first, play_grant)
            # The second player about half a second after the first (the scenario's
            # timing, not a wait for a condition).
            first.wait_for_timeout(500)
            start(second, play_grant)
            ra, rb = (wait_for("a player's result", lambda p=p: p.evaluate("() => window.__res"), 20) for p in (first, second))
            for res in (ra, rb):
                if "error" in res:
                    raise Failure(f"round {r}: a player failed: {res['error']}")
            for label, res, page in (("first", ra, first), ("second", rb, second)):
                if res["first_frame_ms"] is None:
                    raise Failure(f"round {r}: the {label} player decoded no frame in 8 s: {page.evaluate(STATS_JS, 'player')}")
                st = wait_for(
                    f"round {r}: the {label} player's audio",
                    lambda page=page: (lambda x: x if x.get("audio", {}).get("energy") else None)(page.evaluate(STATS_JS, "player")),
                )
                if not st.get("video", {}).get("keyframes"):
                    raise Failure(f"round {r}: the {label} player decoded no keyframe: {st}")
            rounds.append({"first_ms": round(ra["first_frame_ms"]), "second_ms": round(rb["first_frame_ms"])})
            for p in (first, second):
                p.evaluate("() => window.player.stop()")
                p.context.close()
        restart = restart_both(s, origin, publisher, play_grant)
        # Teardown by DELETE, cross-origin too.
        publisher.evaluate("() => window.pub.stop()")
        return {"rounds": rounds, "origin": origin, "restart": restart}
    finally:
        srv.shutdown()


if __name__ == "__main__":
    run(main)
