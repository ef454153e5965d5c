"""Decodes a recorded file with FFmpeg (PyAV) and prints what it holds as JSON:

    decode_media.py FILE
    -> {"streams": [{"type", "codec", "frames", "width", "height", "samples",
                     "duration_s"}]}

Exits non-zero with the decoder's error when the file does not decode.
"""
import json
import sys

import av


def main():
    c = av.open(sys.argv[1])
    out = []
    for s in c.streams:
        out.append({"type": s.type, "codec": s.codec_context.name, "frames": 0,
                    "width": 0, "height": 0, "samples": 0, "first_pts": None,
                    "last_end": 0.0})
    for pkt in c.demux():
        st = out[pkt.stream.index]
        for fr in pkt.decode():
            st["frames"] += 1
            if pkt.stream.type == "video":
                st["width"], st["height"] = fr.width, fr.height
            else:
                st["samples"] += fr.samples
            if fr.pts is not None and fr.time_base is not None:
                t = float(fr.pts * fr.time_base)
                if st["first_pts"] is None:
                    st["first_pts"] = t
                st["last_end"] = max(st["last_end"], t)
    print(json.dumps({"streams": out}))


if __name__ == "__main__":
    main()
