#!/usr/bin/env python3
"""A browser-less sign-in through the test OpenID provider's development interactions
(scripts/oidc/provider.mjs: npm's oidc-provider, whose login form takes any login name
and any password, followed by a consent form). Standard library only.

    login(start_url, login_name, stop_at_prefix) -> str

follows redirects from `start_url` (a URL on our server that redirects to the
provider's authorization endpoint), keeping cookies like a browser, submits the login
form (fields `prompt`=login, `login`, `password`) and the consent form (`prompt`=consent),
and stops at the first redirect whose Location starts with `stop_at_prefix` (our
callback URL). That URL (with `code`, `state` and `iss`, or `error`) is returned without
being followed, so a test can call the callback itself, twice to replay a state.

CLI:  oidc_login.py [--cookie-header] START_URL LOGIN STOP_PREFIX
prints the callback URL; with --cookie-header a second line follows: the Cookie header
a browser would send with it (empty when none), for a server that binds its state to
a cookie set by START_URL. Exits 1 with the reason on stderr when the flow goes
elsewhere (an error page, a form it does not know, too many steps).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

MAX_STEPS = 30
PASSWORD = "any-password"


class LoginError(RuntimeError):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None  # urllib then raises HTTPError carrying the 3xx response


class _FormParser(HTMLParser):
    """Collects each <form>'s method, action and inputs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._current = {
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "inputs": [],
            }
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None:
            self._current["inputs"].append(
                {
                    "tag": tag,
                    "type": a.get("type", "text" if tag == "input" else "submit").lower(),
                    "name": a.get("name"),
                    "value": a.get("value", ""),
                }
            )

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


class _TextParser(HTMLParser):
    """The visible text of a page (no <style>, <script> or <head>)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def _page_text(html: str) -> str:
    p = _TextParser()
    p.feed(html)
    return " ".join(p.parts)[:1000]


def _fields(form: dict, login_name: str) -> list[tuple[str, str]]:
    """The form's submission: hidden inputs as they are, the login name in the text
    field, any password in the password field."""
    out = []
    for i in form["inputs"]:
        name = i["name"]
        if not name or i["tag"] == "button" or i["type"] in ("submit", "button", "reset"):
            continue
        if i["type"] == "password":
            out.append((name, PASSWORD))
        elif i["type"] in ("text", "email") and name in ("login", "username", "email"):
            out.append((name, login_name))
        elif i["type"] in ("checkbox", "radio"):
            continue
        else:
            out.append((name, i["value"]))
    return out


def _new_opener(jar: http.cookiejar.CookieJar) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())


def login(
    start_url: str,
    login_name: str,
    stop_at_prefix: str,
    jar: http.cookiejar.CookieJar | None = None,
    timeout: float = 10.0,
) -> str:
    """Signs `login_name` in and returns the first redirect target that starts with
    `stop_at_prefix`, not followed. `jar` (a fresh one when None) keeps the cookies of
    both our server and the provider, so a caller can send our server's with the
    callback."""
    jar = jar if jar is not None else http.cookiejar.CookieJar()
    opener = _new_opener(jar)
    url, method, data = start_url, "GET", None
    trail = []
    for _ in range(MAX_STEPS):
        trail.append(f"{method} {url}")
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            resp = opener.open(req, timeout=timeout)
            status, headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, body = e.code, e.headers, e.read()

        if status in (301, 302, 303, 307, 308):
            location = headers.get("Location")
            if not location:
                raise LoginError(f"{status} without Location at {url}")
            target = urllib.parse.urljoin(url, location)
            if target.startswith(stop_at_prefix):
                return target
            if status not in (307, 308):
                method, data = "GET", None
            url = target
            continue

        text = body.decode("utf-8", "replace")
        if status != 200:
            raise LoginError(
                f"HTTP {status} at {url}: {_page_text(text)}"
                + "".join(f"\n  after: {t}" for t in trail[:-1])
            )
        parser = _FormParser()
        parser.feed(text)
        forms = [f for f in parser.forms if f["method"] == "post"]
        if not forms:
            raise LoginError(f"no form to submit at {url}: {_page_text(text)}")
        form = forms[0]
        url = urllib.parse.urljoin(url, form["action"] or url)
        method = "POST"
        data = urllib.parse.urlencode(_fields(form, login_name)).encode()
    raise LoginError(f"no redirect to {stop_at_prefix} after {MAX_STEPS} steps:\n  " + "\n  ".join(trail))


def cookie_header(jar: http.cookiejar.CookieJar, url: str) -> str:
    """The Cookie header `jar` adds to a request for `url` ("" when none)."""
    req = urllib.request.Request(url)
    jar.add_cookie_header(req)
    return req.get_header("Cookie", "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("start_url")
    p.add_argument("login")
    p.add_argument("stop_prefix")
    p.add_argument(
        "--cookie-header",
        action="store_true",
        help="also print the Cookie header a browser would send with the callback URL",
    )
    args = p.parse_args()
    jar = http.cookiejar.CookieJar()
    try:
        target = login(args.start_url, args.login, args.stop_prefix, jar)
    except (LoginError, urllib.error.URLError, OSError) as e:
        print(f"oidc_login: {e}", file=sys.stderr)
        return 1
    print(target)
    if args.cookie_header:
        print(cookie_header(jar, target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
