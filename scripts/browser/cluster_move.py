"""A room's node goes away: a publisher and a subscriber (the client library in two
pages) are in a room on one media node, then either

- `--how drain`: an operator drains that node through the admin API; both are told to
  `move`, and join the room again on the node it moved to; or
- `--how kill`: the test kills the node (SIGKILL) when this script says `ready` on
  stdout, and writes a line to its stdin when it did; both clients lose the node, ask
  their token provider for a fresh pass, which names the node the room was placed on
  once the dead one was declared dead, and join there.

Either way the subscriber decodes the publisher's audio and video again on a new
connection; the time from the drain request (or the kill) until then is measured.
The token provider is the control plane's token endpoint, called with the test's
access token as the room's owner (who chooses each client's identity)."""

import json
import sys
import time

from harness import Failure, api, inbound, open_page, run, wait_for


def extra(p):
    p.add_argument("--how", choices=["drain", "kill"], required=True)
    p.add_argument("--room", required=True, help="the room's id")
    p.add_argument("--admin-token", required=True, help="an access token of the room's owner, an admin")
    p.add_argument("--node", required=True, help="the id of the room's node")


# Joins the room with the client library (its passes from the control plane's token
# endpoint, as the room page gets them); publishing the fake camera and microphone
# when asked to. The room is kept as `window.room`.
JOIN_JS = """async ([room_id, access, identity, publish]) => {
  const { Room } = await import('/sdk/streamcore.js');
  const pass = async () => {
    const r = await fetch(`/api/v1/rooms/${room_id}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${access}` },
      body: JSON.stringify({ identity, publish, subscribe: true }),
    });
    if (!r.ok) throw new Error(`token: HTTP ${r.status}`);
    const g = await r.json();
    return { token: g.token, url: g.rtc_url };
  };
  const first = await pass();
  const room = new Room({ url: first.url, tokenProvider: pass });
  window.room = room;
  window.moves = 0;
  room.on('reconnecting', (e) => { if (e.reason === 'moved') window.moves += 1; });
  await room.connect();
  if (publish) {
    const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    await room.publish(media.getAudioTracks()[0], { source: 'microphone' });
    await room.publish(media.getVideoTracks()[0], { source: 'camera' });
  }
  return room.state;
}"""


def decoding(page, frames=10):
    """The subscriber's current peer connection decodes video and receives audio."""
    stats = inbound(page, "window.room.pc")
    video = [r for r in stats if r["kind"] == "video" and (r["framesDecoded"] or 0) > frames]
    audio = [r for r in stats if r["kind"] == "audio" and (r["packets"] or 0) > 20]
    return bool(video and audio)


def main(a, s):
    pub = s.person("publisher")
    sub = s.person("subscriber")
    for p in (pub, sub):
        open_page(p, f"{a.base}/")
    if pub.evaluate(JOIN_JS, [a.room, a.admin_token, "pub", True]) != "connected":
        raise Failure("the publisher did not connect")
    if sub.evaluate(JOIN_JS, [a.room, a.admin_token, "sub", False]) != "connected":
        raise Failure("the subscriber did not connect")
    wait_for("the subscriber to decode the publisher", lambda: decoding(sub), 30)
    first_url = sub.evaluate("() => window.room.url")
    pc_before = sub.evaluate("() => { window.oldPc = window.room.pc; return true; }")

    if a.how == "drain":
        t0 = time.monotonic()
        api(a.base, "POST", f"/admin/nodes/{a.node}/drain", {}, a.admin_token)
        wait_for(
            "both to be told to move",
            lambda: pub.evaluate("() => window.moves") == 1 and sub.evaluate("() => window.moves") == 1,
            10,
        )
    else:
        print(json.dumps({"event": "ready"}), flush=True)
        if not sys.stdin.readline():
            raise Failure("the test never said it killed the node")
        t0 = time.monotonic()
    wait_for(
        "the subscriber to decode the publisher again, on a new connection",
        lambda: sub.evaluate("() => window.room.pc !== window.oldPc && window.room.state === 'connected'") and decoding(sub, 5),
        30,
    )
    back_ms = round((time.monotonic() - t0) * 1000)
    urls = [p.evaluate("() => window.room.url") for p in (pub, sub)]
    if urls[0] != urls[1] or urls[0] == first_url:
        raise Failure(f"the two did not move to one new node: {urls} (was {first_url})")
    return {"moved_to": urls[0], "receiving_again_ms": back_ms, "pc_replaced": bool(pc_before)}


if __name__ == "__main__":
    run(main, extra)
