#!/usr/bin/env python3
"""Opens a re-auth link the way a person's browser does: continues on the operator's
confirmation page (which org, which login host), follows the redirects to Salesforce
(here the simulator, reached through its proxy under Salesforce's real host names), fills in the
login form, clicks Allow on the consent page, and prints the page the operator's callback shows.

usage: open-link.py LINK PROXY_URL CA_PEM USERNAME PASSWORD
Only the Python standard library is used."""
import html
import html.parser
import http.cookiejar
import re
import ssl
import sys
import urllib.parse
import urllib.request


class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms, self.current = {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.current = {"action": a.get("action", ""), "fields": [], "buttons": []}
            self.forms[a.get("id", "")] = self.current
        elif tag == "input" and self.current is not None:
            if a.get("type") == "submit":
                self.current["buttons"].append((a.get("name", ""), a.get("value", "")))
            elif a.get("name"):
                self.current["fields"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None


def main():
    link, proxy, ca, username, password = sys.argv[1:6]
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)),
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    )

    def fetch(url, data=None):
        try:
            with opener.open(url, data=data, timeout=30) as r:
                return r.geturl(), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.geturl(), e.read().decode()

    def submit(url, page, form_id, values, button):
        parser = Forms()
        parser.feed(page)
        form = parser.forms.get(form_id)
        if form is None:
            return url, page
        fields = [(k, values.get(k, v)) for k, v in form["fields"]]
        fields += [b for b in form["buttons"] if b[0] == button]
        return fetch(urllib.parse.urljoin(url, form["action"]), urllib.parse.urlencode(fields).encode())

    url, page = fetch(link)
    if 'data-outcome="confirm"' not in page:
        sys.exit(f"  browser: the link did not show the confirmation page: {text_of(page)[:300]}")
    print(f"  browser: opened the link: {text_of(page)[:160]}")
    url, page = submit(url, page, "confirm_form", {}, "continue")
    print(f"  browser: clicked Continue, now at {urllib.parse.urlsplit(url).netloc} (login page)")
    url, page = submit(url, page, "login_form", {"username": username, "pw": password}, "Login")
    print(f"  browser: logged in as {username}")
    url, page = submit(url, page, "consent_form", {}, "allow")
    print(f"  browser: back at the operator: {text_of(page)[:200]}")


def text_of(page):
    body = re.sub(r"(?s)<(style|head)[^>]*>.*?</\1>", " ", page)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


if __name__ == "__main__":
    main()
