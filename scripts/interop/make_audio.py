"""Writes an audio fixture with FFmpeg's encoders (PyAV) for the transcoder's tests:

    make_audio.py KIND CONTAINER RATE SECONDS OUT

KIND: sweep (log sine sweep 40 Hz–16 kHz at −20 dBFS), speech (speech-like noise
bursts), silence, clipped (a 220 Hz sine driven into full-scale clipping).
CONTAINER: wav, flac, mp3, m4a (AAC), ogg (Vorbis), webm (Vorbis). Stereo.
"""
import sys
from fractions import Fraction

import av
import numpy as np

CODECS = {"wav": "pcm_s16le", "flac": "flac", "mp3": "libmp3lame", "m4a": "aac",
          "ogg": "libvorbis", "webm": "libvorbis"}
FORMATS = {"m4a": "ipod"}


def signal(kind, rate, secs):
    n = int(rate * secs)
    t = np.arange(n) / rate
    if kind == "sweep":
        f0, f1 = 40.0, 16000.0
        k = np.log(f1 / f0) / secs
        x = 0.1 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    elif kind == "speech":
        rng = np.random.default_rng(7)
        noise = rng.standard_normal(n)
        lp = np.zeros(n)
        acc = 0.0
        for i in range(n):
            acc += 0.15 * (noise[i] - acc)
            lp[i] = acc
        env = np.maximum(np.sin(2 * np.pi * 4 * t), 0) * ((t % 2.0) < 1.6)
        x = 0.2 * lp * env
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "clipped":
        x = np.clip(3.0 * np.sin(2 * np.pi * 220 * t), -1.0, 1.0)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return np.stack([x, x * 0.9]).astype(np.float32)


def main():
    kind, container, rate, secs, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    data = signal(kind, rate, secs)
    out = av.open(path, "w", format=FORMATS.get(container, container))
    st = out.add_stream(CODECS[container], rate=rate, layout="stereo")
    fmt = st.codec_context.format.name
    pos = 0
    chunk = 1024
    while pos < data.shape[1]:
        block = data[:, pos:pos + chunk]
        fr = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
        fr.sample_rate = rate
        fr.pts = pos
        fr.time_base = Fraction(1, rate)
        for p in st.encode(fr):
            out.mux(p)
        pos += chunk
    for p in st.encode(None):
        out.mux(p)
    out.close()
    _ = fmt


if __name__ == "__main__":
    main()
