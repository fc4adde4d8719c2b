"""The HTTP site of each daemon: a few klein resources mounted side by side."""

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from eagle import errors
from eagle.metrics import MetricsResource


class _Root(Resource):
    """Answers paths that no component serves with an OCI 404."""

    def getChild(self, path, request):
        return self

    def render(self, request):
        error = errors.RegistryError(404, "NOT_FOUND", "no such endpoint")
        request.setResponseCode(error.status)
        request.setHeader(b"Content-Type", b"application/json")
        return error.body()


# Eagle's APIs are read-only apart from small JSON bodies (webhooks, preheat).
MAX_BODY = 1024 * 1024


class _LimitedRequest(Request):
    """Refuses a request body over ``MAX_BODY`` before reading it: Twisted would
    otherwise spool any body, however large, to a temporary file first."""

    _received = 0
    log = Logger()

    def process(self):
        metrics = getattr(self.channel.site, "metrics", None)
        if metrics is not None:
            metrics.watch(self)
        super().process()

    def gotLength(self, length):
        if length is not None and length > MAX_BODY:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        self._received += len(data)
        if self._received > MAX_BODY:  # chunked bodies announce no length
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self):
        if self.content is not None and self.content.closed:
            return
        error = errors.RegistryError(413, "SIZE_INVALID", "request body too large")
        self.log.warn(
            "refused a request body over {limit} bytes from {peer}",
            limit=MAX_BODY,
            peer=getattr(self.getClientAddress(), "host", "?"),
        )
        body = error.body()
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.channel.transport.loseConnection()
        self.content = _Closed()


class _Closed:
    """Stands in for the body of a refused request: drops what still arrives."""

    closed = True

    def write(self, data):
        pass

    def seek(self, *args):
        pass

    def close(self):
        pass


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


def site(children: dict[bytes, Resource] | None = None, root=None, metrics=None):
    """The daemon's HTTP site; with ``metrics`` (eagle.metrics.Metrics), every
    request is observed and the metrics are served at ``/metrics``."""
    if root is None:
        root = _Root()
        if metrics is not None:
            root.putChild(b"metrics", MetricsResource(metrics))
        for name, child in (children or {}).items():
            root.putChild(name, child)
    site = _QuietSite(root)
    site.metrics = metrics
    site.requestFactory = _LimitedRequest
    site.displayTracebacks = False
    return WrappingFactory.forProtocol(_RefuseTLS, site)
