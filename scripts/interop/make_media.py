"""Encodes test media with FFmpeg's encoders (PyAV) for the recording tests.

    make_media.py CODEC FRAMES OUT

CODEC is vp8, vp9, h264, av1 (a 320x240 test pattern at 30 fps) or opus (a 440 Hz
tone, 20 ms packets). OUT gets one record per frame or packet:
    u8 keyframe | u32 pts (90 kHz for video, 48 kHz for audio) | u32 length | data
all big-endian. H264 is Annex B (start codes), AV1 is OBUs with sizes, as RTP
packetisers take them.
"""
import struct
import sys
from fractions import Fraction

import av
import numpy as np

ENCODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9", "h264": "libx264", "av1": "libaom-av1"}


def video(codec, frames):
    enc = av.CodecContext.create(ENCODERS[codec], "w")
    enc.width, enc.height = 320, 240
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 90000)
    enc.framerate = Fraction(30, 1)
    enc.gop_size = 30
    enc.max_b_frames = 0
    opts = {
        "libvpx": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
        "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
        "libx264": {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"},
        "libaom-av1": {"cpu-used": "8", "usage": "realtime", "lag-in-frames": "0"},
    }[ENCODERS[codec]]
    enc.options = opts
    enc.bit_rate = 300_000
    enc.open()
    out = []
    for i in range(frames):
        img = np.zeros((240, 320, 3), dtype=np.uint8)
        img[:, :, 0] = (np.arange(320)[None, :] + i * 4) % 256
        img[:, :, 1] = (np.arange(240)[:, None] + i * 2) % 256
        img[:, :, 2] = 128
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i * 3000
        f.time_base = enc.time_base
        for p in enc.encode(f):
            out.append((bool(p.is_keyframe), int(p.pts), bytes(p)))
    for p in enc.encode(None):
        out.append((bool(p.is_keyframe), int(p.pts), bytes(p)))
    return out


def opus(packets):
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = 32000
    enc.time_base = Fraction(1, 48000)
    enc.open()
    out = []
    t = 0
    for i in range(packets):
        n = 960
        s = (np.sin(2 * np.pi * 440 * (np.arange(n) + t) / 48000) * 8000).astype(np.int16)
        f = av.AudioFrame.from_ndarray(s.reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = 48000
        f.pts = t
        t += n
        for p in enc.encode(f):
            out.append((True, int(p.pts), bytes(p)))
    for p in enc.encode(None):
        out.append((True, int(p.pts), bytes(p)))
    return out[:packets]


def main():
    codec, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    recs = opus(n) if codec == "opus" else video(codec, n)
    with open(path, "wb") as f:
        for key, pts, data in recs:
            f.write(struct.pack(">BII", int(key), pts & 0xFFFFFFFF, len(data)))
            f.write(data)


if __name__ == "__main__":
    main()
