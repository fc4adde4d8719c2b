"""Eagle's own credentials at an origin, for requests whose client brought none.

Registries ask for credentials with a 401 and a ``WWW-Authenticate`` challenge:
``Basic`` wants the username and password on every request; ``Bearer`` names a
token service (the realm) that trades them for a short-lived token scoped to one
repository. Tokens are kept until shortly before they expire.
"""

import base64
import json
import re
from urllib.parse import urlencode, urlsplit

from twisted.logger import Logger

from eagle.fetch import read_limited
from eagle.upstream import Upstream

_PARAM = re.compile(r'(\w+)="([^"]*)"')
TOKEN_LIMIT = 64 * 1024


def parse_challenge(value: bytes) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., ...})."""
    scheme, _, params = value.decode("latin-1").strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(params))


def basic(username: str, password: str) -> bytes:
    pair = f"{username}:{password}".encode()
    return b"Basic " + base64.b64encode(pair)


class Credentials:
    """Answers origins' challenges with the configured credentials."""

    log = Logger()

    def __init__(self, http, reactor):
        self.http = http
        self.reactor = reactor
        self._tokens: dict[tuple, tuple[bytes, float]] = {}

    async def answer(self, upstream: Upstream, challenge: bytes | None) -> bytes | None:
        """The Authorization value that meets ``challenge`` as ``upstream``'s
        configured user, or None when there is no user or no way to meet it."""
        if not upstream.username or not challenge:
            return None
        scheme, params = parse_challenge(challenge)
        password = upstream.password or ""
        if scheme == "basic":
            return basic(upstream.username, password)
        if scheme != "bearer" or not _acceptable_realm(upstream, params.get("realm")):
            return None
        key = (params["realm"], params.get("service"), params.get("scope"))
        now = self.reactor.seconds()
        cached = self._tokens.get(key)
        if cached and cached[1] > now:
            return cached[0]
        token, lifetime = await self._fetch_token(upstream, params, password)
        if token is None:
            return None
        # Renew a little early, so a token does not expire on its way.
        self._tokens[key] = (token, now + max(lifetime - 10, 1))
        return token

    async def _fetch_token(self, upstream, params, password):
        query = urlencode({k: params[k] for k in ("service", "scope") if k in params})
        url = params["realm"] + ("?" + query if query else "")
        headers = {b"Authorization": [basic(upstream.username, password)]}
        try:
            response = await self.http.get(url, headers=headers, timeout=30)
            body = await read_limited(response, TOKEN_LIMIT, self.reactor)
            if response.code != 200:
                raise ValueError(f"status {response.code}")
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
            if not isinstance(token, str) or not token:
                raise ValueError("no token in the answer")
            lifetime = int(data.get("expires_in") or 60)
        except Exception as e:
            self.log.warn(
                "token service of {registry} refused us: {reason}",
                registry=upstream.host,
                reason=str(e)[:200],
            )
            return None, 0
        return b"Bearer " + token.encode(), lifetime


def _acceptable_realm(upstream: Upstream, realm: str | None) -> bool:
    """Send our password only over HTTPS, or over plain HTTP when the registry
    itself is plain HTTP (a lab setup): never downgrade."""
    if not realm:
        return False
    scheme = urlsplit(realm).scheme
    return scheme == "https" or (
        scheme == "http" and urlsplit(upstream.url).scheme == "http"
    )
