"""TLS towards origins: certificates verified (service-identity), against the
system's CAs or, for a registry with a private CA, against that CA alone; unless
an operator turned verification off for a registry, which is for lab setups and
logged."""

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """A TLS client connection that accepts whatever certificate it is shown."""

    def __init__(self, hostname: bytes):
        self._hostname = hostname
        self._context = CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, protocol):
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(protocol)
        connection.set_tlsext_host_name(self._hostname)
        return connection


def load_ca(path: str):
    """A trust root of the CA certificates in the PEM file at ``path``.

    Raises ValueError, saying what is wrong, for a file that cannot be read or
    holds no PEM certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    return trustRootFromCertificates(
        [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    )


@implementer(IPolicyForHTTPS)
class RegistryTLSPolicy:
    """The browser-like policy, except for the hosts listed as unverified, and
    those with a CA of their own (``private_cas``: host or host:port to the
    trust root from `load_ca`), which are verified against that CA only."""

    log = Logger()

    def __init__(
        self, unverified_hosts: set[str] = frozenset(), private_cas: dict | None = None
    ):
        self._default = BrowserLikePolicyForHTTPS()
        self._unverified = set(unverified_hosts)
        self._private_cas = dict(private_cas or {})
        for host in sorted(self._unverified):
            self.log.warn(
                "TLS certificates of {host} are NOT verified (tls_verify: false); "
                "anyone on the path can impersonate it",
                host=host,
            )

    def creatorForNetloc(self, hostname: bytes, port: int):
        name = hostname.decode("ascii", "replace")
        if name in self._unverified or f"{name}:{port}" in self._unverified:
            return _Unverified(hostname)
        ca = self._private_cas.get(f"{name}:{port}") or self._private_cas.get(name)
        if ca is not None:
            return optionsForClientTLS(name, trustRoot=ca)
        return self._default.creatorForNetloc(hostname, port)
