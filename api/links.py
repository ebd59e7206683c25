"""Short signed links for phones: ``/m/{kind}/{id}?t=<token>``.

The token is ``base64url(flags | expiry | [account] | mac)`` without padding: one flag
byte, the expiry as unsigned 32-bit Unix seconds, the account id (unsigned 32-bit) when
the link is bound to one, and the first 12 bytes of HMAC-SHA256 over the kind, the id
and those bytes, keyed from ``GRIDGOV_SECRET_KEY``. 23 characters, 28 with an account:
short enough for a text message. A token for one kind or id does not open another.

Kinds are a registry (:data:`KINDS`): ``e`` event, ``g`` micro-grid, ``h`` high point,
``c`` a detected change (orthophoto comparison), ``s`` the command screen; a new kind is
one more entry and one page.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import quote

MAC_BYTES = 12
_WITH_ACCOUNT = 0x01
_HEAD = struct.Struct(">BI")
_ACCOUNT = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of page a link can open."""

    letter: str
    title_zh: str
    pattern: str  # what an id of this kind looks like (checked before any lookup)
    personal: bool  # shows personal data: never opens without a valid link

    def check(self, ident: str) -> str:
        if not re.fullmatch(self.pattern, ident):
            raise BadLink(f"{ident!r} is not a {self.title_zh} id")
        return ident


KINDS: MappingProxyType[str, Kind] = MappingProxyType({
    "e": Kind("e", "事件", r"[1-9][0-9]{0,17}", personal=True),
    "g": Kind("g", "微网格", r"[0-9A-Za-z_-]{1,40}", personal=False),
    "h": Kind("h", "高空之眼", r"[0-9A-Za-z_-]{1,40}", personal=False),
    "c": Kind("c", "变化图斑", r"[1-9][0-9]{0,9}", personal=False),
    # /screen when GRIDGOV_PAGES_REQUIRE_LINK is set: `gridgov links make s screen`
    "s": Kind("s", "指挥大屏", r"screen", personal=False),
})


class LinkError(Exception):
    """A link that does not open its page."""


class BadLink(LinkError):
    """Not a link at all: unknown kind, malformed id or token."""


class ForgedLink(LinkError):
    """The signature does not match (altered, or signed with another key)."""


class ExpiredLink(LinkError):
    """Signed by us, but past its expiry."""


@dataclass(frozen=True, slots=True)
class Link:
    kind: str
    ident: str
    expires: dt.datetime
    account: int | None = None

    @property
    def path(self) -> str:
        return f"/m/{self.kind}/{quote(self.ident, safe='')}"


def _key(secret: str) -> bytes:
    # a key of its own, so a link MAC is never valid as any other use of the secret
    return hashlib.sha256(b"gridgov phone links\0" + secret.encode()).digest()


def _mac(secret: str, kind: str, ident: str, body: bytes) -> bytes:
    msg = kind.encode() + b"\0" + ident.encode() + b"\0" + body
    return hmac.new(_key(secret), msg, hashlib.sha256).digest()[:MAC_BYTES]


def kind_of(letter: str) -> Kind:
    try:
        return KINDS[letter]
    except KeyError:
        raise BadLink(f"no link kind {letter!r}; known: {', '.join(KINDS)}") from None


def sign(secret: str, kind: str, ident: str | int, expires: dt.datetime,
         account: int | None = None) -> str:
    """The token for ``kind``/``ident`` until ``expires`` (optionally for one account).

    >>> t = sign("k" * 32, "e", 7, dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    >>> len(t), verify("k" * 32, "e", "7", t, dt.datetime(2029, 1, 1, tzinfo=dt.UTC)).ident
    (23, '7')
    """
    ident = kind_of(kind).check(str(ident))
    seconds = int(expires.timestamp())
    if not 0 < seconds < 2**32:
        raise BadLink("expiry out of range")
    body = _HEAD.pack(_WITH_ACCOUNT if account is not None else 0, seconds)
    if account is not None:
        body += _ACCOUNT.pack(account)
    raw = body + _mac(secret, kind, ident, body)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def verify(secret: str, kind: str, ident: str, token: str | None,
           now: dt.datetime | None = None) -> Link:
    """The link ``token`` signs, or :class:`BadLink` / :class:`ForgedLink` /
    :class:`ExpiredLink`. The signature is checked before the expiry is believed."""
    ident = kind_of(kind).check(ident)
    if not token:
        raise BadLink("this page needs a signed link (?t=…)")
    if len(token) > 64 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise ForgedLink("the link's signature is malformed")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        raise ForgedLink("the link's signature is malformed") from None
    if len(raw) < _HEAD.size + MAC_BYTES:
        raise ForgedLink("the link's signature is malformed")
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, kind, ident, body)):
        raise ForgedLink("the link's signature does not match")
    flags, seconds = _HEAD.unpack_from(body)
    account = None
    if flags & _WITH_ACCOUNT:
        if len(body) != _HEAD.size + _ACCOUNT.size:
            raise ForgedLink("the link's signature is malformed")
        (account,) = _ACCOUNT.unpack_from(body, _HEAD.size)
    expires = dt.datetime.fromtimestamp(seconds, dt.UTC)
    if (now or dt.datetime.now(dt.UTC)) >= expires:
        raise ExpiredLink(f"the link expired at {expires.isoformat()}")
    return Link(kind, ident, expires, account)


def url(base: str, secret: str, kind: str, ident: str | int, hours: float,
        account: int | None = None, now: dt.datetime | None = None) -> str:
    """The full short link, valid ``hours`` from ``now``."""
    expires = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(hours=hours)
    token = sign(secret, kind, ident, expires, account)
    return f"{base.rstrip('/')}/m/{kind}/{quote(str(ident), safe='')}?t={token}"
