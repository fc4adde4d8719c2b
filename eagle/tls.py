"""TLS towards origins: certificates verified (service-identity) unless an operator
turned verification off for a registry, which is for lab setups and logged."""

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import CertificateOptions
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


@implementer(IPolicyForHTTPS)
class RegistryTLSPolicy:
    """The browser-like policy, except for the hosts listed as unverified."""

    log = Logger()

    def __init__(self, unverified_hosts: set[str] = frozenset()):
        self._default = BrowserLikePolicyForHTTPS()
        self._unverified = set(unverified_hosts)
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
        return self._default.creatorForNetloc(hostname, port)
