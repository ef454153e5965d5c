"""Where sound starts in audio files, decoded by FFmpeg (PyAV), for the mixdown tests:

    onsets.py LEVEL FILE...  ->  one line per file: "<onset ms> <duration ms>"

The onset is the first sample whose magnitude passes LEVEL (linear, 0..1), counted
from the file's first decoded sample (after Opus pre-skip, as players play it).
"""
import sys

import av
import numpy as np


def onset(path, level):
    c = av.open(path)
    s = c.streams.audio[0]
    n, found = 0, None
    rate = s.codec_context.sample_rate
    for frame in c.decode(s):
        a = frame.to_ndarray()
        if a.ndim == 2 and not frame.format.is_planar:
            a = a.reshape(-1, len(frame.layout.channels)).T
        mono = np.max(np.abs(a.astype(np.float64)), axis=0)
        if found is None:
            hit = np.nonzero(mono > level)[0]
            if hit.size:
                found = n + int(hit[0])
        n += frame.samples
    return (float("nan") if found is None else found * 1000.0 / rate), n * 1000.0 / rate


level = float(sys.argv[1])
for p in sys.argv[2:]:
    o, d = onset(p, level)
    print(f"{o:.3f} {d:.3f}")
