"""A small token server for the lab's registry: Docker's token authentication.

Clients that the registry answers 401 with a ``Bearer realm=...`` challenge ask
the realm here for a token (``GET /token?service=..&scope=repository:NAME:pull``
with Basic credentials), then send it to the registry. Tokens are JWTs signed
with an ES256 key whose self-signed certificate the registry trusts
(``rootcertbundle``); the JWT's ``kid`` names the key the way Docker's libtrust
does, which is how Distribution 2.8 finds it. Users get ``pull`` (and ``push``)
on the repositories they are given, nothing elsewhere.

Runs in a thread of the calling process (the registry never calls it: only its
clients do), on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

ISSUER = "eagle-lab-tokens"
LIFETIME = 300


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """Docker libtrust's name of a public key: base32 of the first 240 bits of
    the SHA-256 of its DER form, in groups of four joined by colons."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


class TokenServer:
    """Issues registry tokens to ``users`` ({name: (password, [repositories])})."""

    def __init__(self, state_dir, users: dict[str, tuple[str, list[str]]]):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = libtrust_key_id(self.key.public_key())
        self.certificate_path = self.state_dir / "token-signer.pem"
        self.certificate_path.write_bytes(self._certificate())
        self.issued = 0
        self._server = None
        self._thread = None

    def _certificate(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def registry_auth(self, service: str) -> dict:
        """The ``auth`` section of a registry config that trusts this server."""
        return {
            "token": {
                "realm": self.realm,
                "service": service,
                "issuer": ISSUER,
                "rootcertbundle": str(self.certificate_path),
            }
        }

    def token(self, user: str, service: str, scopes: list[str]) -> str:
        """A signed token granting ``user`` what it may have of ``scopes``."""
        allowed = self.users.get(user, (None, []))[1]
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name in allowed:
                wanted = set(actions.split(",")) & {"pull", "push"}
                access.append({"type": kind, "name": name, "actions": sorted(wanted)})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": service,
            "exp": now + LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        self.issued += 1
        return f"{signing_input}.{_b64(signature)}"

    def user_of(self, authorization: str | None) -> str | None:
        """The user whose Basic credentials these are, if they are right."""
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            user, _, password = (
                base64.b64decode(authorization[6:]).decode().partition(":")
            )
        except ValueError:
            return None
        known = self.users.get(user)
        if known is None or not secrets.compare_digest(known[0], password):
            return None
        return user

    def start(self) -> TokenServer:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                user = server.user_of(self.headers.get("Authorization"))
                if parts.path != "/token" or user is None:
                    self.send_response(401 if parts.path == "/token" else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token = server.token(
                    user, query.get("service", [""])[0], query.get("scope", [])
                )
                body = json.dumps(
                    {"token": token, "access_token": token, "expires_in": LIFETIME}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
