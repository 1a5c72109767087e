"""Secrets in URLs (`https://user:TOKEN@host/...`, a private index or git remote): kept in this process, never in
text that leaves it.

`redact(text)` masks the user part of every URL in a text; logs, errors, alerts and reports pass through it. A
location with credentials is split once, where the matrix is read (config.BuildSource): everything downstream (build
requests, XComs, the warehouse, build logs) carries the masked URL, and only the code that talks to the server asks
`credentials(url)` for the user and token, which it sends as real credentials (HTTP basic auth, a git header), so the
token is never part of a host name given to the resolver.

Stdlib only: the bench child may import it.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

MASK = "***"
# scheme://userinfo@ : userinfo runs up to the first '@' with no '/', whitespace or quote before it
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"<>]+)@")
# host[:port] -> (user, password) of each masked URL this process has read: the only copy of the secret
_KNOWN: dict[str, tuple[str, str]] = {}


def redact(text: str) -> str:
    """`text` with the user part of every URL in it masked (scheme://***@host)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text) if "@" in text else text


def redact_data(value: Any) -> Any:
    """A JSON-like value (an XCom, a record's dict, an alert's payload) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


def _has_credentials(parts: SplitResult) -> bool:
    """HTTP(S) URLs only: an ssh remote's user (git@host) is no secret, and ssh needs it as it is."""
    return parts.scheme in ("http", "https") and "@" in parts.netloc


def mask(url: str) -> str:
    """`url` with its user part masked; the credentials stay in this process for `credentials(masked)`."""
    parts = urlsplit(url)
    if not _has_credentials(parts):
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if userinfo != MASK:
        user, _, password = userinfo.partition(":")
        _KNOWN[hostport.lower()] = (unquote(user), unquote(password))
    return urlunsplit(parts._replace(netloc=f"{MASK}@{hostport}"))


def credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL to connect to (no user part) and the (user, password) for its server: from the URL itself, or, for a
    masked one, from what `mask` kept. None when the URL names none or this process never read them."""
    parts = urlsplit(url)
    if not _has_credentials(parts):
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    bare = urlunsplit(parts._replace(netloc=hostport))
    if userinfo == MASK:
        return bare, _KNOWN.get(hostport.lower())
    user, _, password = userinfo.partition(":")
    return bare, (unquote(user), unquote(password))


def basic_auth(user_password: tuple[str, str]) -> str:
    """The Authorization header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(":".join(user_password).encode()).decode("ascii")


def git_auth_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL git is to fetch and the environment that gives it the credentials as an HTTP header (git's
    GIT_CONFIG_* variables: nothing on the command line, nothing in a remote's config, nothing in git's own output)."""
    bare, user_password = credentials(url)
    if user_password is None:
        return bare, {}
    return bare, {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                  "GIT_CONFIG_VALUE_0": f"Authorization: {basic_auth(user_password)}"}


def with_credentials(url: str) -> str:
    """The URL with its real user part, for a client that takes credentials only so and sends them as HTTP auth
    (pip, through PIP_INDEX_URL); never print it."""
    bare, user_password = credentials(url)
    if user_password is None:
        return url
    parts = urlsplit(bare)
    user, password = (quote(part, safe="") for part in user_password)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}" if password
                                     else f"{user}@{parts.netloc}"))
