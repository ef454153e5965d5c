"""A network that lets nothing out but TLS: Chromium runs in a network namespace of
its own whose nftables drop every packet to the node except TCP to two ports, the
node's HTTPS and the embedded TURN server's TLS listener (what a strict corporate
firewall leaves open). UDP and ICE-TCP are blocked. On the pages the node serves, a
person signs up and pairs a phone; the phone goes live with its camera and
microphone; the listen page plays it. Both connect only through TURN over TLS with
the ICE servers the node handed them: the listener decodes audio and video, and both
selected candidate pairs are relayed over TLS."""

import uuid

from harness import Failure, inbound, listen_to_first_device, pair_phone_over_https, run, wait_for

# The selected pair's local candidate of the connection `pc_expr` names: its type
# and, for a relay, how the client reaches the TURN server.
PATH_JS = """
async (pcExpr) => {
  const pc = eval(pcExpr);
  if (!pc) return null;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach(s => { if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  if (!pair || pair.state !== 'succeeded') return null;
  const local = stats.get(pair.localCandidateId);
  return {type: local.candidateType, relayProtocol: local.relayProtocol ?? null, url: local.url ?? null};
}
"""

LISTEN_PC = "window.streamcoreListen.player()?.pc"
PHONE_PC = "window.streamcorePhone.publisher()?.pc"


def main(a, s):
    base = a.base
    if not base.startswith("https://"):
        raise Failure(f"this scenario wants an HTTPS node, got {base}")
    user, phone = pair_phone_over_https(s, base, f"tls-turn-{uuid.uuid4().hex[:8]}@example.com", "Tia")
    phone.get_by_label("Camera and microphone").check()
    phone.get_by_role("button", name="Go live").click()
    wait_for("the phone live through TURN/TLS", lambda: phone.locator("#live-badge").inner_text() == "live", 30)

    listen_to_first_device(user, base)
    s.on_failure = lambda: {
        "listen": inbound(user, LISTEN_PC),
        "paths": {"phone": phone.evaluate(PATH_JS, PHONE_PC), "listen": user.evaluate(PATH_JS, LISTEN_PC)},
        "live_state": user.locator("#live-state").inner_text(),
    }
    audio = wait_for(
        "the phone's audio on the listen page",
        lambda: next((r for r in inbound(user, LISTEN_PC) if r["kind"] == "audio" and (r["packets"] or 0) > 50 and r.get("energy")), None),
        40,
    )
    video = wait_for(
        "the phone's pictures on the listen page",
        lambda: next((r for r in inbound(user, LISTEN_PC) if r["kind"] == "video" and (r["framesDecoded"] or 0) > 10), None),
        30,
    )
    paths = {}
    for label, page, expr in (("pub", phone, PHONE_PC), ("player", user, LISTEN_PC)):
        path = wait_for(f"the {label}'s selected path", lambda page=page, expr=expr: page.evaluate(PATH_JS, expr))
        if path["type"] != "relay" or path["relayProtocol"] != "tls":
            raise Failure(f"the {label} is not relayed over TLS: {path}")
        paths[label] = path
    s.screenshot(user, "listen-through-turn-tls")
    return {"paths": paths, "audio_packets": audio["packets"], "video_frames": video["framesDecoded"]}


if __name__ == "__main__":
    # Chromium checks the TURN server's certificate; the node's is self-signed here.
    run(main, None, ["--ignore-certificate-errors"])
