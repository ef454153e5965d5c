#!/usr/bin/env python3
"""aiortc interop harness for StreamCore: publish over WHIP, play over WHEP.

Run with the cached venv's interpreter (see scripts/ensure-venv.sh):

    PY=$(scripts/ensure-venv.sh | tail -n1)
    $PY scripts/interop/whip_whep.py publish --url http://127.0.0.1:8080/whip/room1 \
        --token T --seconds 10 --freq 440 [--video]
    $PY scripts/interop/whip_whep.py play --url http://127.0.0.1:8080/whep/room1 \
        --token T --seconds 5 --expect-freq 440 [--expect-video]

stdout carries JSON lines only (one object per line, key "event"):

    publish: {"event":"published","location":...}  then  {"event":"done","delete_status":N,...}
    play:    {"event":"result","audio_frames":N,"video_frames":M,"dominant_hz":F,...}

Every line also carries "redirected_to": the URLs 307 answers sent the offer to
(RFC 9725 section 4.5: the node a room lives on), in order; usually empty.

Diagnostics go to stderr. Exit codes:

    0  success
    1  media failure (ICE/DTLS never connected; play: no audio, wrong tone, no video)
    2  signalling failure (non-201 answer, missing Location, HTTP error or timeout)

All traffic stays on loopback: ICE host candidates are restricted to 127.0.0.1,
no STUN/TURN servers are configured, the signalling URL must be a loopback
address, and remote candidates that are not loopback addresses are dropped
from the answer before it is applied. A test that runs this client in a network
namespace of its own passes `--lab-net 10.x.y.0/24 --host-ip 10.x.y.2`: that
private test link is then allowed too, and the only host address. `--ice-servers`
takes RTCConfiguration.iceServers as JSON (a TURN server on that link).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import ipaddress
import json
import logging
import math
import sys
import time
from typing import Any, Optional
from urllib.parse import urljoin, urlsplit

# --- keep ICE on loopback: must happen before any RTCPeerConnection exists ---
import aioice.ice

aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

import aiohttp  # noqa: E402
import av  # noqa: E402
import numpy as np  # noqa: E402
from aiortc import (  # noqa: E402
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError  # noqa: E402

log = logging.getLogger("whip_whep")

AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)  # 960
VIDEO_CLOCK = 90000

EXIT_OK = 0
EXIT_MEDIA = 1
EXIT_SIGNALLING = 2


class SignallingError(Exception):
    """The WHIP/WHEP HTTP exchange failed (maps to exit code 2)."""


# Where 307 answers sent the offer, in order.
REDIRECTS: list[str] = []


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON line on stdout and flush (consumers read line by line); every
    line says where 307 answers sent the offer (`redirected_to`, usually empty)."""
    obj = {**obj, "redirected_to": list(REDIRECTS)}
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def err(msg: str) -> None:
    sys.stderr.write(f"whip_whep: {msg}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Loopback guards
# --------------------------------------------------------------------------


# Besides loopback, the private link of a test's network namespace (--lab-net).
LAB_NETS: list[Any] = []


def is_loopback_host(host: Optional[str]) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or any(ip in net for net in LAB_NETS)


def require_loopback_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SignallingError(f"unsupported URL scheme in {url!r}")
    if not is_loopback_host(parts.hostname):
        raise SignallingError(f"refusing non-loopback URL {url!r} (traffic must stay on 127.0.0.1)")


def filter_remote_candidates(sdp: str) -> str:
    """Drop a=candidate lines whose connection address is not a loopback IP.

    This guarantees aioice never sends connectivity checks (or mDNS queries
    for *.local names) anywhere but loopback, whatever the server answers.
    """
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line[len("a=candidate:"):].split()
            addr = fields[4] if len(fields) > 4 else ""
            if not is_loopback_host(addr):
                err(f"ignoring non-loopback remote candidate: {line}")
                continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


# --------------------------------------------------------------------------
# Synthetic media sources
# --------------------------------------------------------------------------


class SineAudioTrack(MediaStreamTrack):
    """48 kHz s16 sine tone in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float, channels: int = 1, amplitude: float = 0.5) -> None:
        super().__init__()
        self.freq = float(freq)
        self.channels = channels
        self.amplitude = amplitude
        self.layout = "mono" if channels == 1 else "stereo"
        self._pts = 0
        self._start: Optional[float] = None
        self.frames_sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._pts / AUDIO_RATE - now
            if wait > 0:
                await asyncio.sleep(wait)

        n = np.arange(self._pts, self._pts + AUDIO_SAMPLES, dtype=np.float64)
        wave = np.sin(2.0 * math.pi * self.freq * n / AUDIO_RATE) * (self.amplitude * 32767.0)
        mono = wave.astype(np.int16)
        if self.channels == 1:
            data = mono.reshape(1, -1)
        else:
            # packed s16: interleaved L R L R ... in a single plane
            data = np.repeat(mono, self.channels).reshape(1, -1)

        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=self.layout)
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += AUDIO_SAMPLES
        self.frames_sent += 1
        return frame


class PatternVideoTrack(MediaStreamTrack):
    """Synthetic moving pattern (yuv420p), paced in real time."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__()
        self.width = width - width % 2
        self.height = height - height % 2
        self.fps = fps
        self._index = 0
        self._start: Optional[float] = None
        self.frames_sent = 0
        # static horizontal gradient for luma; chroma planes vary slowly
        self._ramp = np.tile(
            np.linspace(16, 235, self.width, dtype=np.float32).astype(np.uint8), (self.height, 1)
        )

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            wait = self._start + self._index / self.fps - now
            if wait > 0:
                await asyncio.sleep(wait)

        w, h, i = self.width, self.height, self._index
        y = np.roll(self._ramp, (i * 4) % w, axis=1)
        bar = (i * 3) % h
        y[bar : bar + 16, :] = 235  # moving white bar
        u = np.full((h // 2, w // 2), (128 + 60 * math.sin(i / 20.0)), dtype=np.uint8)
        v = np.full((h // 2, w // 2), (128 + 60 * math.cos(i / 25.0)), dtype=np.uint8)
        # yuv420p ndarray layout: Y rows, then U and V packed two rows per chroma row
        planes = np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)])
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = int(i * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._index += 1
        self.frames_sent += 1
        return frame


# --------------------------------------------------------------------------
# WHIP / WHEP signalling
# --------------------------------------------------------------------------


# RTCConfiguration.iceServers (--ice-servers), as RTCIceServer objects.
ICE_SERVERS: list[Any] = []


def negotiated_video_codec(pc: RTCPeerConnection) -> Optional[str]:
    """The codec the answer put first for video (the one media flows in), e.g. "H264"."""
    sdp = pc.remoteDescription.sdp if pc.remoteDescription else ""
    first_pt = None
    for line in sdp.splitlines():
        if line.startswith("m=video") and len(line.split()) > 3:
            first_pt = line.split()[3]
        elif first_pt and line.startswith(f"a=rtpmap:{first_pt} "):
            return line.split()[1].split("/")[0]
    return None


def new_peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=ICE_SERVERS))


def prefer_codec(transceiver: Any, kind: str, codec_name: str) -> None:
    """Put the named codec first (others stay as fallbacks, rtx follows)."""
    caps = RTCRtpSender.getCapabilities(kind)
    wanted = f"{kind}/{codec_name}".lower()
    first = [c for c in caps.codecs if c.mimeType.lower() == wanted]
    if not first:
        raise SystemExit(f"codec {codec_name!r} not supported by aiortc for {kind}")
    rest = [c for c in caps.codecs if c.mimeType.lower() != wanted]
    transceiver.setCodecPreferences(first + rest)


async def gather_complete(pc: RTCPeerConnection, timeout: float) -> None:
    """Wait until ICE gathering is complete (non-trickle offer)."""
    if pc.iceGatheringState == "complete":
        return
    done = asyncio.get_running_loop().create_future()

    @pc.on("icegatheringstatechange")
    def _on_change() -> None:
        if pc.iceGatheringState == "complete" and not done.done():
            done.set_result(None)

    if pc.iceGatheringState != "complete":
        await asyncio.wait_for(done, timeout)


async def negotiate(
    pc: RTCPeerConnection,
    session: aiohttp.ClientSession,
    url: str,
    token: Optional[str],
    timeout: float,
) -> str:
    """Create the offer, POST it, apply the answer. Returns the resolved Location URL."""
    offer = await pc.createOffer()
    await asyncio.wait_for(pc.setLocalDescription(offer), timeout)
    await gather_complete(pc, timeout)
    sdp = pc.localDescription.sdp
    log.debug("offer:\n%s", sdp)

    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # RFC 9725 section 4.5: a 307 names the server to send the same offer to (the
    # node the room lives on). Followed here, a few hops at most, staying on loopback.
    for _hop in range(4):
        try:
            async with session.post(
                url,
                data=sdp.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = await resp.text()
                status = resp.status
                location = resp.headers.get("Location")
                ctype = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise SignallingError(f"POST {url} failed: {type(e).__name__}: {e}") from e
        if status != 307 or not location:
            break
        target = urljoin(url, location)
        require_loopback_url(target)
        log.info("POST %s -> 307 to %s", url, target)
        REDIRECTS.append(target)
        url = target

    if status != 201:
        err(f"POST {url} -> HTTP {status}")
        err(f"body: {body}")
        raise SignallingError(f"unexpected status {status}")
    if not location:
        err(f"POST {url} -> 201 without Location header; body: {body}")
        raise SignallingError("missing Location header")
    if "application/sdp" not in ctype.lower():
        err(f"warning: answer Content-Type is {ctype!r}, expected application/sdp")

    resource = urljoin(url, location)
    require_loopback_url(resource)
    log.debug("answer:\n%s", body)
    answer = RTCSessionDescription(sdp=filter_remote_candidates(body), type="answer")
    try:
        await asyncio.wait_for(pc.setRemoteDescription(answer), timeout)
    except asyncio.TimeoutError:
        raise
    except Exception as e:  # malformed / incompatible answer
        err(f"setRemoteDescription failed: {type(e).__name__}: {e}")
        # still hand back the resource so the caller can DELETE it
        raise AnswerRejected(resource) from e
    return resource


class AnswerRejected(Exception):
    def __init__(self, resource: str) -> None:
        super().__init__(resource)
        self.resource = resource


async def delete_resource(
    session: aiohttp.ClientSession, resource: str, token: Optional[str], timeout: float
) -> Optional[int]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with session.delete(
            resource,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            body = await resp.text()
            if resp.status >= 300:
                err(f"DELETE {resource} -> HTTP {resp.status}: {body}")
            return resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        err(f"DELETE {resource} failed: {type(e).__name__}: {e}")
        return None


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> bool:
    """Wait for connectionState == connected; False on failure/timeout."""
    if pc.connectionState == "connected":
        return True
    fut = asyncio.get_running_loop().create_future()

    @pc.on("connectionstatechange")
    def _on_state() -> None:
        log.info("connectionState=%s", pc.connectionState)
        if fut.done():
            return
        if pc.connectionState == "connected":
            fut.set_result(True)
        elif pc.connectionState in ("failed", "closed"):
            fut.set_result(False)

    if pc.connectionState == "connected":
        return True
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        err(f"not connected after {timeout:.0f}s (ice={pc.iceConnectionState}, conn={pc.connectionState})")
        return False


async def close_pc(pc: RTCPeerConnection, timeout: float) -> None:
    try:
        await asyncio.wait_for(pc.close(), timeout)
    except Exception as e:  # noqa: BLE001 - best effort
        err(f"pc.close() failed: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# publish
# --------------------------------------------------------------------------


async def run_publish(args: argparse.Namespace) -> int:
    require_loopback_url(args.url)
    pc = new_peer_connection()
    audio = SineAudioTrack(args.freq, channels=args.channels)
    pc.addTransceiver(audio, direction="sendonly")
    video: Optional[PatternVideoTrack] = None
    if args.video:
        video = PatternVideoTrack(args.width, args.height, args.fps)
        vt = pc.addTransceiver(video, direction="sendonly")
        prefer_codec(vt, "video", args.video_codec)

    resource: Optional[str] = None
    connected = False
    video_codec: Optional[str] = None
    rc = EXIT_OK
    async with aiohttp.ClientSession() as session:
        try:
            try:
                resource = await negotiate(pc, session, args.url, args.token, args.timeout)
            except AnswerRejected as e:
                resource = e.resource
                return EXIT_SIGNALLING
            video_codec = negotiated_video_codec(pc)
            emit({"event": "published", "location": resource, "video_codec": video_codec})

            connected = await wait_connected(pc, args.timeout)
            if not connected:
                rc = EXIT_MEDIA
            else:
                await asyncio.sleep(args.seconds)
        except SignallingError as e:
            err(str(e))
            return EXIT_SIGNALLING
        except asyncio.TimeoutError:
            err("timed out during negotiation")
            return EXIT_SIGNALLING
        finally:
            delete_status = None
            if resource is not None:
                delete_status = await delete_resource(session, resource, args.token, args.timeout)
            await close_pc(pc, args.timeout)
            if resource is not None:
                emit(
                    {
                        "event": "done",
                        "delete_status": delete_status,
                        "connected": connected,
                        "audio_frames_sent": audio.frames_sent,
                        "video_frames_sent": video.frames_sent if video else 0,
                        "video_codec": video_codec,
                    }
                )
    return rc


# --------------------------------------------------------------------------
# play
# --------------------------------------------------------------------------


def audio_frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = arr[0]
    else:
        mono = arr.reshape(-1)
        if channels > 1:
            mono = mono.reshape(-1, channels)[:, 0]
    return mono.astype(np.float64)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Peak of the Hann-windowed magnitude spectrum, parabolic-interpolated."""
    if samples.size < 64:
        return 0.0
    x = samples - samples.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    spec[0] = 0.0
    k = int(np.argmax(spec))
    if 0 < k < spec.size - 1:
        a, b, c = spec[k - 1], spec[k], spec[k + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        shift = 0.0
    return float((k + shift) * rate / x.size)


class Collector:
    def __init__(self) -> None:
        self.audio_frames = 0
        self.video_frames = 0
        self.chunks: list[np.ndarray] = []
        self.sample_rate = AUDIO_RATE
        self.video_size: Optional[tuple[int, int]] = None

    async def consume(self, track: MediaStreamTrack, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                frame = await asyncio.wait_for(track.recv(), remaining)
            except (asyncio.TimeoutError, MediaStreamError):
                return
            if track.kind == "audio":
                self.audio_frames += 1
                self.sample_rate = frame.sample_rate or AUDIO_RATE
                self.chunks.append(audio_frame_to_mono(frame))
            else:
                self.video_frames += 1
                self.video_size = (frame.width, frame.height)


async def run_play(args: argparse.Namespace) -> int:
    require_loopback_url(args.url)
    pc = new_peer_connection()
    pc.addTransceiver("audio", direction="recvonly")
    if args.video:
        vt = pc.addTransceiver("video", direction="recvonly")
        if args.video_codec:
            prefer_codec(vt, "video", args.video_codec)

    tracks: list[MediaStreamTrack] = []

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        log.info("remote %s track %s", track.kind, track.id)
        tracks.append(track)

    collector = Collector()
    resource: Optional[str] = None
    connected = False
    delete_status: Optional[int] = None
    video_codec: Optional[str] = None
    async with aiohttp.ClientSession() as session:
        try:
            try:
                resource = await negotiate(pc, session, args.url, args.token, args.timeout)
            except AnswerRejected as e:
                resource = e.resource
                return EXIT_SIGNALLING
            video_codec = negotiated_video_codec(pc)
            connected = await wait_connected(pc, args.timeout)
            if connected:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + args.seconds
                # tracks are announced during setRemoteDescription; consume all of them
                consumers = [asyncio.create_task(collector.consume(t, deadline)) for t in tracks]
                await asyncio.sleep(max(0.0, deadline - loop.time()))
                for c in consumers:
                    c.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
        except SignallingError as e:
            err(str(e))
            return EXIT_SIGNALLING
        except asyncio.TimeoutError:
            err("timed out during negotiation")
            return EXIT_SIGNALLING
        finally:
            if resource is not None:
                delete_status = await delete_resource(session, resource, args.token, args.timeout)
            await close_pc(pc, args.timeout)

    samples = np.concatenate(collector.chunks) if collector.chunks else np.zeros(0)
    # skip the first 100 ms (decoder/jitter-buffer start-up) when there is enough audio
    skip = int(0.1 * collector.sample_rate)
    analysed = samples[skip:] if samples.size > 4 * skip else samples
    # bound FFT cost: analyse at most the last 10 s
    analysed = analysed[-10 * collector.sample_rate :]
    dominant = dominant_frequency(analysed, collector.sample_rate)
    rms = float(np.sqrt(np.mean(np.square(analysed)))) if analysed.size else 0.0

    ok = bool(connected and collector.audio_frames > 0 and abs(dominant - args.expect_freq) < args.tolerance)
    if args.video:
        ok = bool(ok and collector.video_frames > 0)
    emit(
        {
            "event": "result",
            "audio_frames": collector.audio_frames,
            "video_frames": collector.video_frames,
            "dominant_hz": round(dominant, 2),
            "expect_hz": args.expect_freq,
            "rms": round(rms, 1),
            "sample_rate": collector.sample_rate,
            "video_size": list(collector.video_size) if collector.video_size else None,
            "video_codec": video_codec,
            "connected": connected,
            "delete_status": delete_status,
            "ok": ok,
        }
    )
    return EXIT_OK if ok else EXIT_MEDIA


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser, endpoint: str) -> None:
        sp.add_argument("--url", required=True, help=f"http://127.0.0.1:PORT/{endpoint}/ROOM")
        sp.add_argument("--token", default=None, help="sent as 'Authorization: Bearer TOKEN'")
        sp.add_argument("--seconds", type=float, default=5.0, help="media duration")
        sp.add_argument(
            "--timeout", type=float, default=20.0, help="bound for each server-dependent wait (s)"
        )
        sp.add_argument("-v", "--verbose", action="count", default=0)
        sp.add_argument("--lab-net", default=None, help="a private test link also allowed (CIDR)")
        sp.add_argument("--host-ip", default=None, help="the only host address to gather (on --lab-net)")
        sp.add_argument("--ice-servers", default=None, help="RTCConfiguration.iceServers as JSON")

    pub = sub.add_parser("publish", help="WHIP publish a sine tone (and optional video)")
    common(pub, "whip")
    pub.add_argument("--freq", type=float, default=440.0, help="tone frequency (Hz)")
    pub.add_argument("--channels", type=int, choices=(1, 2), default=1, help="audio frame layout")
    pub.add_argument("--video", action="store_true", help="also send a synthetic video track")
    pub.add_argument("--video-codec", default="VP8", choices=("VP8", "H264"))
    pub.add_argument("--width", type=int, default=320)
    pub.add_argument("--height", type=int, default=240)
    pub.add_argument("--fps", type=int, default=15)

    play = sub.add_parser("play", help="WHEP play and check the received tone")
    common(play, "whep")
    play.add_argument("--expect-freq", type=float, default=440.0)
    play.add_argument("--tolerance", type=float, default=15.0, help="max |dominant - expected| (Hz)")
    play.add_argument(
        "--expect-video", dest="video", action="store_true", help="request video and require frames"
    )
    play.add_argument("--video-codec", default=None, choices=("VP8", "H264"))
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.seconds < 0 or args.timeout <= 0:
        err("--seconds must be >= 0 and --timeout > 0")
        return EXIT_SIGNALLING
    if args.lab_net:
        net = ipaddress.ip_network(args.lab_net)
        if not net.is_private:
            err("--lab-net must be a private network")
            return EXIT_SIGNALLING
        LAB_NETS.append(net)
    if args.host_ip:
        if not is_loopback_host(args.host_ip):
            err("--host-ip must be loopback or on --lab-net")
            return EXIT_SIGNALLING
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: [args.host_ip]
    for s in json.loads(args.ice_servers or "[]"):
        urls = s["urls"] if isinstance(s["urls"], list) else [s["urls"]]
        for u in urls:
            host = u.split(":", 1)[1].split("?")[0].rsplit(":", 1)[0]
            if not is_loopback_host(host):
                err(f"refusing ICE server {u!r} off the test network")
                return EXIT_SIGNALLING
        ICE_SERVERS.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    runner = run_publish if args.cmd == "publish" else run_play
    try:
        return asyncio.run(runner(args))
    except SignallingError as e:
        err(str(e))
        return EXIT_SIGNALLING
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
