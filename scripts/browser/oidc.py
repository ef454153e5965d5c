"""Signing in with an OpenID Connect provider, in the pages, against the real one (npm's
oidc-provider, started by tests/browser.rs as "Test IdP", id `test`; its development
login form takes any login name and any password, then asks for consent):

- Dana, new here, reaches "Sign in with Test IdP" with the keyboard, signs in at the
  provider and lands signed in as dana@corp.test, an account the provider's email
  made; the account section lists Test IdP, which cannot be unlinked (the account's
  only way in); she signs out.
- Eve has a password account (signed up through the pages). Signing in with the
  provider as eve@corp.test lands on /link-account, which names the provider and the
  email and links nothing until her password is given: a wrong one is refused in
  words, hers links and signs her in. Her account section lists Test IdP; she unlinks
  it and links it again from there (the page says so).
- Finn's provider account has an email the provider has not verified: the sign-in
  page says what to do, and the same way back from the provider used twice is
  explained too; neither lingers in the address bar.
- A node without providers shows no provider button.
"""

import uuid

from playwright.sync_api import Page

from harness import Failure, open_page, run, sign_up, tab_to, wait_for

PROVIDER = "Test IdP"
EVE_PASSWORD = f"eve's own password {uuid.uuid4().hex[:6]}"


def person(s, name: str) -> Page:
    """A person's browser that reaches only this machine: the provider's pages import a
    web font from the internet, which is refused at once instead of waited for."""
    page = s.person(name)
    page.context.route(lambda url: not url.startswith("http://127.0.0.1"), lambda route: route.abort())
    return page


def through_provider(page: Page, base: str, login: str, go) -> None:
    """`go()` (a click, a key) sends the browser to the provider: signs `login` in
    there and consents, whichever of its forms it shows (none when it remembers the
    person), until the browser is back on the node."""
    home = base + "/"
    with page.expect_navigation(timeout=30_000):
        go()
    for _ in range(4):
        if page.url.startswith(home):
            return
        field = page.locator("input[name=login]")
        if field.count():
            field.fill(login)
            page.locator("input[name=password]").fill("any password")
        with page.expect_navigation(timeout=30_000):
            page.locator("form button[type=submit]").first.click()
    raise Failure(f"still at the provider after its forms: {page.url}")


def alert(page: Page, selector: str, contains: str) -> str:
    """The text of a visible message box once it says `contains`."""
    box = page.locator(selector)
    return wait_for(
        f"{selector} to say {contains!r}",
        lambda: (lambda t: t if box.is_visible() and contains in t else None)(box.inner_text()),
    )


def linked_names(page: Page) -> list[str]:
    return [t.strip() for t in page.locator("#linked-providers li strong").all_inner_texts()]


def main(a, s):
    base = a.base
    result = {}
    pages: dict[str, Page] = {}
    s.on_failure = lambda: {name: p.url for name, p in pages.items()}

    # A node without providers (its answer replaced here): no provider button.
    nobody = pages["nobody"] = person(s, "nobody")
    nobody.route(
        "**/api/v1/auth/oidc/providers",
        lambda route: route.fulfill(status=200, content_type="application/json", body="[]"),
    )
    open_page(nobody, f"{base}/")
    result["no_providers_hidden"] = nobody.locator("#signin").is_visible() and nobody.locator("#providers").is_hidden()
    if not result["no_providers_hidden"]:
        raise Failure("provider buttons show on a node without providers")

    # Dana, new here: an account made for the provider's verified email.
    dana = pages["dana"] = person(s, "dana")
    open_page(dana, f"{base}/")
    button = dana.get_by_role("link", name=f"Sign in with {PROVIDER}")
    button.wait_for()
    href = button.get_attribute("href") or ""
    if not href.startswith(f"{base}/auth/oidc/test/start?return_to=%2F"):
        raise Failure(f"the provider button leads to {href!r}")
    s.screenshot(dana, "sign-in-providers")
    tab_to(dana, f"Sign in with {PROVIDER}")
    through_provider(dana, base, "dana@corp.test", lambda: dana.keyboard.press("Enter"))
    dana.locator("#account-panel").wait_for(state="visible")
    result["signed_in_as"] = dana.locator("#account-email").inner_text()
    if result["signed_in_as"] != "dana@corp.test":
        raise Failure(f"signed in as {result['signed_in_as']!r}")
    dana.locator("#devices-panel").wait_for(state="visible")
    result["dana_providers"] = linked_names(dana)
    if result["dana_providers"] != [PROVIDER]:
        raise Failure(f"Dana's providers are {result['dana_providers']!r}")
    if "dana@corp.test" not in dana.locator("#linked-providers li").first.inner_text():
        raise Failure("the linked provider does not show its email")
    # No password: a provider is her only way in, and a reset mail would set one.
    if not dana.get_by_role("button", name="Mail me a link to set a password").is_visible():
        raise Failure("an account without a password is not offered one")
    dana.get_by_role("button", name=f"Unlink {PROVIDER}").click()
    result["last_sign_in"] = alert(dana, "#account-message", "only way")
    if linked_names(dana) != [PROVIDER]:
        raise Failure("the only way in was unlinked")
    s.screenshot(dana, "account-providers-only-way-in")
    dana.get_by_role("button", name="Sign out").click()
    dana.locator("#signin").wait_for(state="visible")

    # Eve, with a password account: linked only with her password.
    eve = pages["eve"] = person(s, "eve")
    sign_up(eve, base, "eve@corp.test", EVE_PASSWORD, name="Eve")
    eve.get_by_role("button", name="Sign out").click()
    eve.locator("#signin").wait_for(state="visible")
    through_provider(eve, base, "eve@corp.test", lambda: eve.get_by_role("link", name=f"Sign in with {PROVIDER}").click())
    wait_for("the link page without its token in the address", lambda: eve.url == f"{base}/link-account")
    intro = eve.locator("#link-intro")
    intro.wait_for(state="visible")
    said = intro.inner_text()
    expected = f"Your {PROVIDER} account uses eve@corp.test, which already has a StreamCore account."
    if expected not in said or "either signs you in" not in said:
        raise Failure(f"the link page says {said!r}")
    result["link_page_email"] = eve.locator("#link-email").inner_text()
    # Not signed in before the password: another tab of hers sees the sign-in form.
    tab = eve.context.new_page()
    open_page(tab, f"{base}/")
    if not tab.locator("#signin").is_visible():
        raise Failure("signed in by the provider before the account's password was given")
    tab.close()
    password = eve.get_by_label("Password of your StreamCore account")
    password.fill("not her password at all")
    eve.get_by_role("button", name="Link", exact=True).click()
    result["wrong_password"] = alert(eve, "#link-message", "password")
    if "not this account" not in result["wrong_password"]:
        raise Failure(f"a wrong password says {result['wrong_password']!r}")
    if eve.url != f"{base}/link-account":
        raise Failure(f"a wrong password left the link page for {eve.url}")
    s.screenshot(eve, "link-account-wrong-password")
    password.fill(EVE_PASSWORD)
    eve.get_by_role("button", name="Link", exact=True).click()
    eve.wait_for_url(f"{base}/")
    eve.locator("#account-panel").wait_for(state="visible")
    result["linked_as"] = eve.locator("#account-email").inner_text()
    wait_for("Test IdP among Eve's providers", lambda: linked_names(eve) == [PROVIDER])
    result["eve_providers"] = linked_names(eve)
    if "eve@corp.test" not in eve.locator("#linked-providers li").first.inner_text():
        raise Failure("Eve's linked provider does not show its email")
    if eve.get_by_role("button", name="Mail me a link to set a password").is_visible():
        raise Failure("an account with a password is offered to set one")
    s.screenshot(eve, "account-providers")

    # She has a password, so she may unlink it; then she links it again from here.
    eve.get_by_role("button", name=f"Unlink {PROVIDER}").click()
    alert(eve, "#account-message", "is unlinked")
    eve.locator("#no-linked").wait_for(state="visible")
    link = eve.get_by_role("button", name=f"Link {PROVIDER}", exact=True)
    through_provider(eve, base, "eve@corp.test", link.click)
    wait_for("the address without ?linked", lambda: eve.url == f"{base}/")
    result["relinked"] = alert(eve, "#account-message", "linked to your account")
    wait_for("Test IdP linked again", lambda: linked_names(eve) == [PROVIDER])

    # Finn: an email the provider has not verified makes no account, and says why.
    finn = pages["finn"] = person(s, "finn")
    back = []
    finn.on("request", lambda r: back.append(r.url) if "/auth/oidc/callback?" in r.url else None)
    open_page(finn, f"{base}/")
    through_provider(finn, base, "unverified-finn@corp.test", lambda: finn.get_by_role("link", name=f"Sign in with {PROVIDER}").click())
    wait_for("the error to leave the address bar", lambda: finn.url == f"{base}/")
    result["unverified"] = alert(finn, "#auth-message", "not verified")
    if not result["unverified"].startswith(f"{PROVIDER} has not verified"):
        raise Failure(f"an unverified email says {result['unverified']!r}")
    if not finn.locator("#signin").is_visible() or finn.locator("#account-panel").is_visible():
        raise Failure("an unverified email signed in")
    s.screenshot(finn, "sign-in-email-unverified")
    # The same way back again: its sign-in link is spent.
    if not back:
        raise Failure("the provider's way back was not seen")
    open_page(finn, back[0])
    wait_for("the error to leave the address bar", lambda: finn.url == f"{base}/")
    result["replayed"] = alert(finn, "#auth-message", "used already")
    return result


if __name__ == "__main__":
    run(main)
