"""FFmpeg's EBU R128 meter (the ebur128 filter, through PyAV) on an audio file:

    loudness.py FILE  ->  "<integrated LUFS> <true peak dBTP>"

FFmpeg prints one decimal. Mono is measured as one channel (FFmpeg's default, and
the transcoder's).
"""
import re, sys, av, av.logging
def drain(g):
    while True:
        try:
            g.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
av.logging.set_level(av.logging.INFO)
with av.logging.Capture(True) as logs:
    c = av.open(sys.argv[1])
    s = c.streams.audio[0]
    g = av.filter.Graph()
    src = g.add_abuffer(template=s)
    f = g.add("ebur128", "peak=true:framelog=quiet")
    sink = g.add("abuffersink")
    src.link_to(f); f.link_to(sink); g.configure()
    for frame in c.decode(s):
        g.push(frame); drain(g)
    g.push(None); drain(g)
    del g, f, src, sink
text = "\n".join(m for _, _, m in logs)
i = re.findall(r"I:\s+(-?[\d.]+|-inf) LUFS", text)
p = re.findall(r"Peak:\s+(-?[\d.]+|-inf) dBFS", text)
print(i[-1] if i else "none", p[-1] if p else "none")
