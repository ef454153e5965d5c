"""Checks a podcast's RSS feed the way podcast apps read it, twice over: with
feedparser (the parser many apps and aggregators use) and again, independently, with
the standard library's ElementTree against what Apple Podcasts and the Podcast
Index namespace ask for. Then it follows every link the feed hands out: each
episode's audio (its length and type as the feed says, and byte ranges, which players
seek with), each episode's chapters (JSON chapters 1.2.0) and the show's artwork.

    podcast_feed.py URL [--insecure]   prints what it found as JSON; exits 1 with a
                                       message naming what is wrong

`validate(url)` does the same from Python (the browser tests import it) and raises
`FeedError` on the first thing wrong. Redirects are followed (a store may answer
with one to a presigned URL).
"""

from __future__ import annotations

import argparse
import email.utils
import io
import json
import ssl
import struct
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any

import feedparser

ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
PODCAST = "https://podcastindex.org/namespace/1.0"
# Declared with these prefixes: some apps match the prefix, not the namespace.
REQUIRED_NAMESPACES = {"itunes": ITUNES, "podcast": PODCAST}
OPTIONAL_NAMESPACES = {"http://www.w3.org/2005/Atom", "http://purl.org/rss/1.0/modules/content/"}
XML_TYPES = {"application/rss+xml", "application/xml", "text/xml"}
CHAPTERS_TYPE = "application/json+chapters"
ARTWORK_TYPES = {"image/png", "image/jpeg"}

I = f"{{{ITUNES}}}"
P = f"{{{PODCAST}}}"


class FeedError(Exception):
    """Something in the feed, or behind one of its links, that podcast apps would trip on."""


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes, url: str):
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url

    def header(self, name: str) -> str:
        return self.headers.get(name) or ""

    def media_type(self) -> str:
        return self.header("content-type").split(";")[0].strip().lower()


def fetch(url: str, headers: dict[str, str] | None = None, insecure: bool = False, timeout: float = 30.0) -> Answer:
    """A GET, redirects followed; an error status is an answer too, not an exception."""
    req = urllib.request.Request(url, headers={"user-agent": "streamcore-podcast-feed-check/1", **(headers or {})})
    context = ssl._create_unverified_context() if insecure and url.startswith("https://") else None  # noqa: S323 - asked for
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return Answer(r.status, r.headers, r.read(), r.geturl())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read() or b"", e.geturl() or url)
    except (urllib.error.URLError, OSError) as e:
        raise FeedError(f"{url} cannot be fetched: {e}") from e


def _need(cond: Any, message: str) -> None:
    if not cond:
        raise FeedError(message)


def _text(el: ET.Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


# ---- feedparser ----------------------------------------------------------------------


def check_with_feedparser(body: bytes, content_type: str, url: str) -> Any:
    """feedparser's reading of the feed, as it reads it off the wire (the Content-Type
    decides the character encoding): not "bozo", and everything apps show there."""
    d = feedparser.parse(body, response_headers={"content-type": content_type, "content-location": url})
    _need(not d.bozo, f"feedparser finds the feed malformed: {d.get('bozo_exception')!r}")
    feed = d.feed
    _need(feed.get("title"), "feedparser finds no title for the show")
    _need(feed.get("author"), "feedparser finds no itunes:author")
    _need("itunes_explicit" in feed, "feedparser finds no itunes:explicit")
    _need((feed.get("image") or {}).get("href"), "feedparser finds no itunes:image")
    _need(
        any(t.get("scheme") == "http://www.itunes.com/" and t.get("term") for t in feed.get("tags", [])),
        "feedparser finds no itunes:category",
    )
    for i, e in enumerate(d.entries, 1):
        name = f"entry {i} ({e.get('title', 'no title')!r})"
        _need(e.get("enclosures"), f"feedparser finds no enclosure in {name}")
        for enc in e.enclosures:
            _need(enc.get("type") and enc.get("length"), f"feedparser finds an enclosure without type or length in {name}: {dict(enc)}")
        _need(e.get("id"), f"feedparser finds no guid in {name}")
        _need(e.get("published_parsed"), f"feedparser finds no publication date in {name}")
    return d


# ---- ElementTree ---------------------------------------------------------------------


def declared_namespaces(body: bytes) -> list[tuple[str, str]]:
    """Every (prefix, URI) the document declares, wherever it does."""
    return [ns for _, ns in ET.iterparse(io.BytesIO(body), events=("start-ns",))]


def check_namespaces(body: bytes) -> None:
    declared = declared_namespaces(body)
    for prefix, uri in declared:
        if prefix in REQUIRED_NAMESPACES:
            _need(uri == REQUIRED_NAMESPACES[prefix], f"the prefix {prefix}: is declared as {uri}, not {REQUIRED_NAMESPACES[prefix]}")
        else:
            _need(uri in OPTIONAL_NAMESPACES, f"the feed declares a namespace podcast apps do not expect: {prefix or '(default)'} = {uri}")
    for prefix, uri in REQUIRED_NAMESPACES.items():
        _need((prefix, uri) in declared, f"the feed does not declare xmlns:{prefix}=\"{uri}\"")


def duration_seconds(text: str) -> float | None:
    """itunes:duration: seconds, or [[h:]m:]ss."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    if not parts or len(parts) > 3 or any(p < 0 for p in parts):
        return None
    s = 0.0
    for p in parts:
        s = s * 60 + p
    return s


def check_tree(body: bytes) -> tuple[dict, list[dict]]:
    """The channel's and items' fields, read with ElementTree: (channel, items)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise FeedError(f"the feed is not well-formed XML: {e}") from e
    check_namespaces(body)
    _need(root.tag == "rss", f"the root element is <{root.tag}>, not <rss>")
    _need(root.get("version") == "2.0", f"<rss version={root.get('version')!r}>, not 2.0")
    ch = root.find("channel")
    _need(ch is not None, "no <channel>")
    assert ch is not None
    channel = {k: _text(ch.find(k)) for k in ("title", "link", "description", "language")}
    for k, v in channel.items():
        _need(v, f"the channel has no <{k}>")
    image = ch.find(f"{I}image")
    _need(image is not None and image.get("href"), "the channel has no itunes:image with an href")
    category = ch.find(f"{I}category")
    _need(category is not None and category.get("text"), "the channel has no itunes:category with a text")
    explicit = _text(ch.find(f"{I}explicit"))
    _need(explicit in ("true", "false"), f"the channel's itunes:explicit is {explicit!r}, not true or false")
    author = _text(ch.find(f"{I}author"))
    _need(author, "the channel has no itunes:author")
    assert image is not None and category is not None
    channel.update(image=image.get("href"), category=category.get("text"), explicit=explicit == "true", author=author)

    items = []
    guids: set[str] = set()
    for n, it in enumerate(ch.findall("item"), 1):
        title = _text(it.find("title"))
        name = f"item {n} ({title!r})"
        _need(title, f"item {n} has no <title>")
        enc = it.find("enclosure")
        _need(enc is not None, f"{name} has no <enclosure>")
        assert enc is not None
        url, length, type_ = enc.get("url"), enc.get("length"), enc.get("type")
        _need(url and length and type_, f"{name}'s enclosure lacks url, length or type: {enc.attrib}")
        assert url and length and type_
        _need(length.isdigit() and int(length) > 0, f"{name}'s enclosure length is {length!r}, not a number of bytes")
        guid = it.find("guid")
        _need(guid is not None and _text(guid), f"{name} has no <guid>")
        assert guid is not None
        _need(guid.get("isPermaLink") == "false", f"{name}'s guid has isPermaLink={guid.get('isPermaLink')!r}, not \"false\"")
        _need(_text(guid) not in guids, f"{name}'s guid {_text(guid)!r} is another item's too")
        guids.add(_text(guid))
        pub = _text(it.find("pubDate"))
        try:
            published = email.utils.parsedate_to_datetime(pub)
        except (TypeError, ValueError, IndexError):
            published = None
        _need(published is not None, f"{name}'s pubDate {pub!r} is not an RFC 2822 date")
        assert published is not None
        duration = _text(it.find(f"{I}duration"))
        _need(duration and duration_seconds(duration) is not None, f"{name}'s itunes:duration is {duration!r}")
        item = {
            "title": title,
            "guid": _text(guid),
            "url": url,
            "length": int(length),
            "type": type_,
            "published": published.isoformat(),
            "duration_s": duration_seconds(duration),
            "chapters_url": None,
        }
        chapters = it.find(f"{P}chapters")
        if chapters is not None:
            _need(chapters.get("url"), f"{name}'s podcast:chapters has no url")
            _need(chapters.get("type") == CHAPTERS_TYPE, f"{name}'s podcast:chapters has type {chapters.get('type')!r}, not {CHAPTERS_TYPE}")
            item["chapters_url"] = chapters.get("url")
        items.append(item)
    return channel, items


# ---- what the links give -------------------------------------------------------------


def check_enclosure(item: dict, insecure: bool) -> None:
    name = f"the audio of {item['title']!r} ({item['url']})"
    r = fetch(item["url"], insecure=insecure)
    _need(r.status == 200, f"{name} answers {r.status}")
    _need(r.header("content-length") == str(item["length"]), f"{name} has Content-Length {r.header('content-length')!r}; the feed says {item['length']}")
    _need(len(r.body) == item["length"], f"{name} is {len(r.body)} bytes; the feed says {item['length']}")
    _need(r.media_type() == item["type"].lower(), f"{name} is sent as {r.header('content-type')!r}; the feed says {item['type']}")
    # Players seek, and some download in pieces: byte ranges.
    part = fetch(item["url"], headers={"range": "bytes=0-99"}, insecure=insecure)
    _need(part.status == 206, f"{name} answers {part.status} to Range: bytes=0-99, not 206")
    want = min(100, item["length"])
    _need(
        part.header("content-range") == f"bytes 0-{want - 1}/{item['length']}",
        f"{name} answers Range: bytes=0-99 with Content-Range {part.header('content-range')!r}",
    )
    _need(part.body == r.body[:want], f"{name}'s first 100 bytes differ between the whole file and the range")


def check_chapters(item: dict, insecure: bool) -> list[dict]:
    name = f"the chapters of {item['title']!r} ({item['chapters_url']})"
    r = fetch(item["chapters_url"], insecure=insecure)
    _need(r.status == 200, f"{name} answer {r.status}")
    _need("json" in r.media_type(), f"{name} are sent as {r.header('content-type')!r}, not JSON")
    try:
        doc = json.loads(r.body)
    except ValueError as e:
        raise FeedError(f"{name} are not JSON: {e}") from e
    _need(isinstance(doc, dict) and doc.get("version") == "1.2.0", f"{name} are not JSON chapters 1.2.0: version {doc.get('version') if isinstance(doc, dict) else doc!r}")
    chapters = doc.get("chapters")
    _need(isinstance(chapters, list) and chapters, f"{name} have no list of chapters")
    last = -1.0
    for i, c in enumerate(chapters, 1):
        start = c.get("startTime") if isinstance(c, dict) else None
        _need(isinstance(start, (int, float)) and not isinstance(start, bool) and start >= 0, f"{name}: chapter {i} has startTime {start!r}")
        _need(isinstance(c.get("title"), str) and c["title"].strip(), f"{name}: chapter {i} has no title")
        _need(start > last, f"{name}: chapter {i} starts at {start}, not after the one before ({last})")
        last = float(start)
    if item.get("duration_s"):
        _need(last < item["duration_s"] + 1, f"{name}: a chapter starts at {last} s, after the episode ends ({item['duration_s']} s)")
    return [{"startTime": c["startTime"], "title": c["title"]} for c in chapters]


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (IHDR) or a JPEG (its first SOF marker)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            size = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + size
    return None


def check_artwork(url: str, insecure: bool) -> dict:
    r = fetch(url, insecure=insecure)
    _need(r.status == 200, f"the artwork ({url}) answers {r.status}")
    _need(r.media_type() in ARTWORK_TYPES, f"the artwork ({url}) is sent as {r.header('content-type')!r}, not PNG or JPEG")
    size = image_size(r.body)
    _need(size, f"the artwork ({url}) is not a picture of the type it is sent as")
    assert size is not None
    w, h = size
    # Apple Podcasts: square, 1400 to 3000 pixels.
    _need(w == h and 1400 <= w <= 3000, f"the artwork is {w} × {h} px; podcast apps need a square of 1400 to 3000 px")
    return {"type": r.media_type(), "width": w, "height": h, "bytes": len(r.body)}


# ---- all of it -----------------------------------------------------------------------


def validate(url: str, insecure: bool = False) -> dict:
    """Checks the feed at `url` and everything it links to; what was found. Raises
    `FeedError` naming the first thing wrong."""
    r = fetch(url, insecure=insecure)
    _need(r.status == 200, f"the feed ({url}) answers {r.status}")
    media = r.media_type()
    _need(media in XML_TYPES or media.endswith("+xml"), f"the feed is sent as {r.header('content-type')!r}, not an XML type")
    parsed = check_with_feedparser(r.body, r.header("content-type"), r.url)
    channel, items = check_tree(r.body)
    _need(len(parsed.entries) == len(items), f"feedparser finds {len(parsed.entries)} episodes, ElementTree {len(items)}")
    episodes = []
    for item in items:
        check_enclosure(item, insecure)
        chapters = check_chapters(item, insecure) if item["chapters_url"] else []
        episodes.append(
            {
                "title": item["title"],
                "guid": item["guid"],
                "url": item["url"],
                "length": item["length"],
                "type": item["type"],
                "published": item["published"],
                "duration_s": item["duration_s"],
                "chapters": len(chapters),
                "chapter_list": chapters,
            }
        )
    return {
        "title": channel["title"],
        "link": channel["link"],
        "language": channel["language"],
        "author": channel["author"],
        "category": channel["category"],
        "explicit": channel["explicit"],
        "content_type": r.header("content-type"),
        "artwork": {"url": channel["image"], **check_artwork(channel["image"], insecure)},
        "episodes": episodes,
    }


def main() -> None:
    p = argparse.ArgumentParser(description="Checks a podcast RSS feed and what it links to.")
    p.add_argument("url")
    p.add_argument("--insecure", action="store_true", help="accept any HTTPS certificate (a test node's own)")
    a = p.parse_args()
    try:
        result = validate(a.url, insecure=a.insecure)
    except FeedError as e:
        print(f"{a.url}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
