"""A room's node drains: a publisher and a subscriber (the client library in two pages,
with tokens the test made) are in a room on one media node; an operator drains that
node through the admin API; both are told to move, join the room again on the node
it moved to, and the subscriber decodes the publisher's audio and video again. The
time from the drain request until the subscriber decodes new video is measured."""

import time

from harness import Failure, api, inbound, open_page, run, wait_for


def extra(p):
    p.add_argument("--rtc-url", required=True, help="the room's /rtc on its node")
    p.add_argument("--publish-token", required=True)
    p.add_argument("--subscribe-token", required=True)
    p.add_argument("--admin-token", required=True)
    p.add_argument("--node", required=True, help="the id of the room's node")


# Joins the room with the client library; publishing the fake camera and microphone
# when asked to. The room is kept as `window.room`.
JOIN_JS = """async ([url, token, publish]) => {
  const { Room } = await import('/sdk/streamcore.js');
  const room = new Room({ url, tokenProvider: async () => token });
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
    if pub.evaluate(JOIN_JS, [a.rtc_url, a.publish_token, True]) != "connected":
        raise Failure("the publisher did not connect")
    if sub.evaluate(JOIN_JS, [a.rtc_url, a.subscribe_token, False]) != "connected":
        raise Failure("the subscriber did not connect")
    wait_for("the subscriber to decode the publisher", lambda: decoding(sub), 30)
    pc_before = sub.evaluate("() => { window.oldPc = window.room.pc; return true; }")

    t0 = time.monotonic()
    api(a.base, "POST", f"/admin/nodes/{a.node}/drain", {}, a.admin_token)
    wait_for(
        "both to be told to move",
        lambda: pub.evaluate("() => window.moves") == 1 and sub.evaluate("() => window.moves") == 1,
        10,
    )
    wait_for(
        "the subscriber to decode the publisher again, on a new connection",
        lambda: sub.evaluate("() => window.room.pc !== window.oldPc && window.room.state === 'connected'") and decoding(sub, 5),
        30,
    )
    back_ms = round((time.monotonic() - t0) * 1000)
    urls = [p.evaluate("() => window.room.url") for p in (pub, sub)]
    if urls[0] != urls[1] or urls[0] == a.rtc_url:
        raise Failure(f"the two did not move to one new node: {urls} (was {a.rtc_url})")
    return {"moved_to": urls[0], "receiving_again_ms": back_ms, "pc_replaced": bool(pc_before)}


if __name__ == "__main__":
    run(main, extra)
