"""A WHIP/WHEP session moved by hand (`moveTo`, what a node's `reconnect` event
triggers) in the client library, on one node, each way it can go:

- to a reachable endpoint (here the same node): a new session carries the media, the
  old one is ended (its resource answers 404), `moved` is emitted;
- to an endpoint nobody answers: after its tries, `error` with `move_failed`, and the
  old session goes on as it was (same connection, same resource, media flowing);
- `stop()` while a move runs: both sessions end (the test counts the node's peers).

The page is the node's own origin; the tokens come from the test."""

from harness import Failure, inbound, open_page, run, wait_for


def extra(p):
    p.add_argument("--room", required=True)
    p.add_argument("--pub-token", required=True)
    p.add_argument("--sub-token", required=True)


START_JS = """async ([room, pubToken, subToken]) => {
  const { WhipPublisher, WhepPlayer } = await import('/sdk/streamcore.js');
  const media = await navigator.mediaDevices.getUserMedia({ audio: true });
  const pub = new WhipPublisher({ url: `/whip/${room}`, token: pubToken });
  await pub.publish(media.getAudioTracks());
  const player = new WhepPlayer({ url: `/whep/${room}`, token: subToken });
  window.log = [];
  for (const type of ['moving', 'moved', 'error']) {
    player.on(type, (e) => window.log.push({ type, code: e?.code ?? null, url: e?.url ?? null }));
  }
  await player.play();
  window.pub = pub;
  window.player = player;
  return player.resource;
}"""


# The player's audio tracks: [readyState, enabled] each.
STREAM_JS = "() => window.player.stream.getAudioTracks().map(t => [t.readyState, t.enabled])"


def audio_packets(page):
    return sum((r["packets"] or 0) for r in inbound(page, "window.player.pc") if r["kind"] == "audio")


def events(page, type_):
    return [e for e in page.evaluate("() => window.log") if e["type"] == type_]


def peers(page):
    """The node's peers (`streamcore_peers`, all workers), from its `/metrics`."""
    text = page.evaluate("async () => (await fetch('/metrics')).text()")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("streamcore_peers{"))


def status_of(page, resource, token):
    """What the node answers a trickle PATCH on `resource` with (404 once it ended)."""
    return page.evaluate(
        """async ([resource, token]) => (await fetch(resource, {method: 'PATCH',
             headers: {'content-type': 'application/trickle-ice-sdpfrag', authorization: `Bearer ${token}`},
             body: 'a=end-of-candidates\\r\\n'})).status""",
        [resource, token],
    )


def main(a, s):
    page = s.person("mover")
    open_page(page, f"{a.base}/")
    first = page.evaluate(START_JS, [a.room, a.pub_token, a.sub_token])
    s.on_failure = lambda: {"log": page.evaluate("() => window.log"), "resource": page.evaluate("() => window.player?.resource")}
    wait_for("audio on the player", lambda: audio_packets(page) > 20, 20)

    # 1. A move that works: a new session, the old one ended.
    page.evaluate("() => { window.firstPc = window.player.pc; window.player.moveTo(location.origin + '/whep/' + %r); }" % a.room)
    wait_for("moved", lambda: len(events(page, "moved")) == 1, 15)
    second = page.evaluate("() => window.player.resource")
    if second == first or not second:
        raise Failure(f"the moved session kept its resource: {first} → {second}")
    if page.evaluate("() => window.player.pc === window.firstPc"):
        raise Failure("the moved session kept its connection")
    wait_for("audio on the new connection", lambda: audio_packets(page) > 20, 15)
    wait_for("the old session ended", lambda: status_of(page, first, a.sub_token) == 404, 10)
    if status_of(page, second, a.sub_token) == 404:
        raise Failure("the new session is gone")
    audio_tracks = page.evaluate(STREAM_JS)
    if audio_tracks != [["live", True]]:
        raise Failure(f"the player's stream holds {audio_tracks}, not the new connection's one live, playing track")

    # 2. A move nobody answers: the old session goes on.
    page.evaluate("() => { window.secondPc = window.player.pc; window.player.moveTo('http://127.0.0.1:9/whep/nowhere'); }")
    wait_for("move_failed", lambda: [e["code"] for e in events(page, "error")] == ["move_failed"], 20)
    if page.evaluate("() => window.player.pc !== window.secondPc") or page.evaluate("() => window.player.resource") != second:
        raise Failure("a failed move did not go back to the session it left")
    before = audio_packets(page)
    wait_for("audio still flowing on the session", lambda: audio_packets(page) > before + 20, 10)
    audio_tracks = page.evaluate(STREAM_JS)
    if audio_tracks != [["live", True]]:
        raise Failure(f"after a failed move the player's stream holds {audio_tracks}, not its one live, playing track")
    if page.evaluate("() => window.player.url") != f"{a.base}/whep/{a.room}":
        raise Failure(f"the session's endpoint is {page.evaluate('() => window.player.url')}")

    # 3. stop() while a move runs: nothing stays open on the node but the publisher.
    page.evaluate(
        "async () => { const m = window.player.moveTo(location.origin + '/whep/' + %r);"
        " await new Promise(r => setTimeout(r, 50)); await window.player.stop(); await m; }" % a.room
    )
    if status_of(page, second, a.sub_token) != 404:
        raise Failure("stop() during a move left the old session")
    moved = len(events(page, "moved"))
    if moved != 1:
        raise Failure(f"'moved' came {moved} times; a stopped move must not say it moved")
    wait_for("the node to hold the publisher's peer only", lambda: peers(page) == 1, 10)
    return {"first": first, "second": second, "log": page.evaluate("() => window.log")}


if __name__ == "__main__":
    run(main, extra)
