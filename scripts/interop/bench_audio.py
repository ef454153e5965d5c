"""Writes the transcoding benchmark's fixture (benches/src/bin/sc-transcodebench.rs):
a music-like stereo signal, 16-bit FLAC through PyAV (FFmpeg's encoder):

    bench_audio.py OUT [SECONDS=600] [RATE=44100]

Deterministic (fixed seeds). In sections of 12–40 s at levels that vary by 14 dB:
chords of harmonic tones that change every 0.25–2 s, a bass line, hi-hat-like bursts
of white noise on a 120 bpm grid and, every fourth section, a log sine sweep
60 Hz–12 kHz; each section soft-saturated (tanh) as a master would be, under a bed of
low-passed noise. Voices are panned differently in the two channels. Written in 10 s
blocks, continuous across them (phases and filter state carry over). The 10-minute
default measures −16.0 LUFS, −0.3 dBTP: normalising it to −14 LUFS under −1 dBTP
needs the limiter on the peaks (about 3 dB).
"""
import sys
from fractions import Fraction

import av
import numpy as np

BLOCK_S = 10


def lowpass_kernel(cutoff, rate, taps=63):
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff / rate * n) * np.hanning(taps)
    return h / h.sum()


class Score:
    """The piece, as a list of sections and within them a list of chords."""

    def __init__(self, secs, rng):
        self.sections = []  # (start, end, level, has_sweep, has_drums, root_hz)
        t = 0.0
        i = 0
        while t < secs:
            length = float(rng.uniform(12, 40))
            level = float(10 ** (rng.uniform(-16, -2) / 20))
            root = float(110 * 2 ** (rng.integers(0, 12) / 12))
            self.sections.append((t, min(secs, t + length), level, i % 4 == 3,
                                  bool(rng.random() < 0.7), root))
            t += length
            i += 1
        self.chords = []  # (start, [freq, ...], pan)
        t = 0.0
        while t < secs:
            self.chords.append((t, [float(2 ** (k / 12)) for k in rng.choice(
                [0, 3, 4, 7, 10, 12, 14, 16, 19], size=3, replace=False)],
                float(rng.uniform(0.2, 0.8))))
            t += float(rng.choice([0.25, 0.5, 1.0, 2.0]))
        self.chord_starts = np.array([c[0] for c in self.chords])


def render(score, t, rng, noise_tail, kernel):
    """Stereo samples (2, len(t)) at times t (seconds from the start)."""
    n = len(t)
    out = np.zeros((2, n))
    sec_idx = np.searchsorted([s[0] for s in score.sections], t, side="right") - 1
    chord_idx = np.searchsorted(score.chord_starts, t, side="right") - 1
    for si in np.unique(sec_idx):
        start, end, level, sweep, drums, root = score.sections[si]
        m = sec_idx == si
        ts = t[m]
        local = ts - start
        # Fade each section in and out over 0.5 s: level changes without clicks.
        env = level * np.clip(np.minimum(local, end - ts) / 0.5, 0, 1)
        x = np.zeros((2, len(ts)))
        for ci in np.unique(chord_idx[m]):
            cstart, ratios, pan = score.chords[ci]
            cm = chord_idx[m] == ci
            tc = ts[cm]
            # Each note decays from its onset, a plucked / struck shape.
            note_env = np.exp(-(tc - cstart) * 1.5) * 0.7 + 0.3
            for k, r in enumerate(ratios):
                f = 2 * root * r
                # Harmonics 1..4 at falling levels; phase from absolute time.
                v = sum(np.sin(2 * np.pi * f * h * tc) / h ** 1.5 for h in range(1, 5))
                p = pan if k % 2 == 0 else 1 - pan
                x[0, cm] += 0.18 * note_env * v * (1 - p)
                x[1, cm] += 0.18 * note_env * v * p
        bass = 0.35 * np.sin(2 * np.pi * root / 2 * ts) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * ts))
        x += bass
        if drums:
            beat = (ts * 2.0) % 1.0  # 120 bpm
            hat = np.exp(-beat * 40.0)
            white = rng.standard_normal((2, len(ts)))
            x += 0.3 * hat * white
        if sweep:
            f0, f1 = 60.0, 12000.0
            k = np.log(f1 / f0) / (end - start)
            x += 0.25 * np.sin(2 * np.pi * f0 * (np.exp(k * local) - 1) / k)
        # Soft saturation, as mastering would: peaks rounded off, crest factor ~12 dB.
        out[:, m] = np.tanh(1.5 * x) * env
    # Low-passed noise bed, continuous across blocks (the FIR's history carries over).
    white = rng.standard_normal((2, n))
    full = np.concatenate([noise_tail, white], axis=1)
    bed = np.stack([np.convolve(full[c], kernel, mode="valid") for c in range(2)])
    out += 0.05 * bed[:, :n]
    return np.clip(out, -1.0, 1.0), full[:, -(len(kernel) - 1):]


def main():
    path = sys.argv[1]
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 600.0
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 44100
    rng = np.random.default_rng(20261123)
    score = Score(secs, rng)
    kernel = lowpass_kernel(3000.0, rate)
    noise_tail = np.zeros((2, len(kernel) - 1))
    out = av.open(path, "w", format="flac")
    st = out.add_stream("flac", rate=rate, layout="stereo")
    st.codec_context.format = "s16"
    total = int(round(secs * rate))
    pos = 0
    while pos < total:
        n = min(BLOCK_S * rate, total - pos)
        t = (pos + np.arange(n)) / rate
        x, noise_tail = render(score, t, rng, noise_tail, kernel)
        pcm = np.round(x.T * 32767).astype(np.int16).reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
        fr.sample_rate = rate
        fr.pts = pos
        fr.time_base = Fraction(1, rate)
        for p in st.encode(fr):
            out.mux(p)
        pos += n
    for p in st.encode(None):
        out.mux(p)
    out.close()


if __name__ == "__main__":
    main()
