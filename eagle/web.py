"""The HTTP site of each daemon: a few klein resources mounted side by side."""

from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from eagle import errors


class _Root(Resource):
    """Answers paths that no component serves with an OCI 404."""

    def getChild(self, path, request):
        return self

    def render(self, request):
        error = errors.RegistryError(404, "NOT_FOUND", "no such endpoint")
        request.setResponseCode(error.status)
        request.setHeader(b"Content-Type", b"application/json")
        return error.body()


class _QuietSite(Site):
    # One line per request would drown what operators need; metrics count them.
    def log(self, request):
        pass


class _RefuseTLS(ProtocolWrapper):
    """Closes at once a connection that opens with a TLS handshake.

    Registry clients told a host is insecure (skopeo, podman, docker) try HTTPS
    first and fall back to plain HTTP only when that attempt fails; a plain HTTP
    server that just waits for a request line makes them wait for their timeout
    (about 10 s) on every pull.
    """

    _checked = False

    def dataReceived(self, data: bytes):
        if not self._checked and data:
            self._checked = True
            if data[0] == 0x16:  # TLS record type "handshake"
                self.transport.abortConnection()
                return
        super().dataReceived(data)


def site(children: dict[bytes, Resource] | None = None, root=None):
    if root is None:
        root = _Root()
        for name, child in (children or {}).items():
            root.putChild(name, child)
    site = _QuietSite(root)
    site.displayTracebacks = False
    return WrappingFactory.forProtocol(_RefuseTLS, site)
