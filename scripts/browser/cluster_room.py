"""One room, two people on two nodes: every node has room for one peer (the test says
so), so Ada joins the room on its node and Ben, who comes with the room's link once
that node is full, joins on another, which imports the room over the relay; Ada's
node imports Ben's side back. Each sees the other's tile and decodes the other's
video and audio; chat crosses both ways; Ben's mute shows on Ada's page; an active
speaker is highlighted on both. Then Ada's node, the room's, is drained: Ada is told
to move and resumes on the room's new node, Ben's node follows the room there, and
each decodes the other again. When Ben leaves, his tile goes from Ada's page. The
pages are the control plane's; their room sockets are the nodes'."""

import time
import uuid

from harness import Failure, api, run, sign_in, wait_for
from room import RECEIVED_JS

def extra(p):
    p.add_argument("--email", required=True, help="an administrator's account to sign in with")
    p.add_argument("--password", required=True)
    p.add_argument("--admin-token", required=True, help="the same administrator's access token")
    p.add_argument("--ben-email", required=True, help="Ben's account (named Ben)")
    p.add_argument("--ben-password", required=True)


def get_from(page, kind):
    """What a page receives of `kind` from the one other person in the room."""
    for r in page.evaluate(RECEIVED_JS):
        if r["kind"] == kind:
            return r
    return {}


def decoding(page):
    """Whether the page decodes the other person's video right now."""
    first = get_from(page, "video").get("frames", 0)
    time.sleep(0.4)
    return get_from(page, "video").get("frames", 0) > first + 3


def socket_origin(page):
    return page.evaluate("() => window.streamcoreRoom.url").split("/rtc")[0].replace("ws://", "http://")


def main(a, s):
    base = a.base
    ada = s.person("Ada")
    sign_in(ada, base, a.email, a.password)
    room = f"across-{uuid.uuid4().hex[:6]}"
    ada.goto(f"{base}/room")
    form = ada.locator("#create-form")
    form.wait_for()
    form.get_by_label("Name").fill(room)
    form.get_by_label("Who may join").select_option("link")
    form.get_by_role("button", name="Create and join").click()
    ada.wait_for_url("**/room?id=*")
    wait_for("Ada to be connected", lambda: ada.locator("#room-state").inner_text() == "connected", 20)
    wait_for("Ada's camera to publish", lambda: ada.locator("#camera").get_attribute("aria-pressed") == "true", 20)
    ada_node = socket_origin(ada)
    # Her node counts her before Ben asks for a pass: it is full then.
    wait_for(
        "Ada counted against her node",
        lambda: any(n["public_url"] == ada_node and n["peers"] >= 1 for n in api(base, "GET", "/admin/nodes", None, a.admin_token)),
        10,
    )
    wait_for("the share link", lambda: "key=" in ada.locator("#share-url").input_value())
    link = ada.locator("#share-url").input_value()

    ben = s.person("Ben")
    sign_in(ben, base, a.ben_email, a.ben_password)
    # (the link names the control plane's public URL; the test opens its path on the address it uses)
    ben.goto(base + link[link.index("/room?"):])
    wait_for("Ben to be connected", lambda: ben.locator("#room-state").inner_text() == "connected", 20)
    ben_node = socket_origin(ben)
    if ben_node == ada_node:
        raise Failure(f"Ben joined on Ada's node ({ada_node}), not another")
    s.on_failure = lambda: {"ada": ada.evaluate(RECEIVED_JS), "ben": ben.evaluate(RECEIVED_JS)}

    # Each decodes the other's video and hears the other's audio.
    for me, page, other in (("Ada", ada, "Ben"), ("Ben", ben, "Ada")):
        wait_for(f"{me} to decode {other}'s video", lambda p=page: get_from(p, "video").get("frames", 0) > 10, 30)
        wait_for(f"{me} to hear {other}'s audio", lambda p=page: get_from(p, "audio").get("energy", 0) > 0, 30)
        wait_for(f"{me}'s two tiles", lambda p=page: p.locator(".tile:not(.screen)").count() == 2)
    s.screenshot(ben, "cluster-room-ben")

    # Chat, both ways.
    ben.locator("#chat-text").fill("hello from Ben's node")
    ben.get_by_role("button", name="Send").click()
    ada.locator("#chat li", has_text="hello from Ben's node").wait_for()
    ada.locator("#chat-text").fill("hello from Ada's node")
    ada.get_by_role("button", name="Send").click()
    ben.locator("#chat li", has_text="hello from Ada's node").wait_for()

    # Ben's mute shows on Ada's page, and his unmute.
    ben.get_by_role("button", name="Microphone").click()
    wait_for("Ben's mute to show for Ada", lambda: ada.locator(".tile", has_text="Ben").locator(".muted-flag").is_visible())
    ben.get_by_role("button", name="Microphone").click()
    wait_for("Ben's unmute to show for Ada", lambda: not ada.locator(".tile", has_text="Ben").locator(".muted-flag").is_visible())

    # An active speaker on each page (each node computes it from what it forwards).
    for page in (ada, ben):
        wait_for("an active speaker", lambda p=page: p.locator(".tile.speaking").count() == 1, 20)
    s.screenshot(ada, "cluster-room-ada")

    # The room's node (Ada's) drains: Ada moves with the room; Ben stays on his node,
    # which now imports the room from its new node; each decodes the other again.
    nodes = api(base, "GET", "/admin/nodes", None, a.admin_token)
    drained = next(n["id"] for n in nodes if n["public_url"] == ada_node)
    t0 = time.monotonic()
    api(base, "POST", f"/admin/nodes/{drained}/drain", {}, a.admin_token)
    wait_for("Ada to leave the drained node", lambda: socket_origin(ada) != ada_node, 15)
    wait_for("Ada to be connected again", lambda: ada.locator("#room-state").inner_text() == "connected", 15)
    ada_after = socket_origin(ada)
    wait_for("Ada to decode Ben again", lambda: decoding(ada), 20)
    wait_for("Ben to decode Ada again", lambda: decoding(ben), 20)
    again_ms = round((time.monotonic() - t0) * 1000)
    if socket_origin(ben) != ben_node:
        raise Failure("Ben moved, though his node does not drain")
    for page in (ada, ben):
        wait_for("two tiles after the move", lambda p=page: p.locator(".tile:not(.screen)").count() == 2)
    ben.locator("#chat-text").fill("still here")
    ben.get_by_role("button", name="Send").click()
    ada.locator("#chat li", has_text="still here").wait_for()

    # Ben leaves: his tile goes from Ada's page, and Ada stays.
    ben.get_by_role("button", name="Leave").click()
    wait_for("Ben's tile to go from Ada's page", lambda: ada.locator(".tile", has_text="Ben").count() == 0, 10)
    if ada.locator("#room-state").inner_text() != "connected":
        raise Failure("Ada left with Ben")

    return {
        "room": room,
        "ada_node": ada_node,
        "ben_node": ben_node,
        "drained": drained,
        "ada_after": ada_after,
        "both_decode_again_ms": again_ms,
    }


if __name__ == "__main__":
    run(main, extra)
