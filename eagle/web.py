"""The HTTP site of each daemon: a few klein resources mounted side by side."""

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


def site(children: dict[bytes, Resource] | None = None, root=None) -> Site:
    if root is None:
        root = _Root()
        for name, child in (children or {}).items():
            root.putChild(name, child)
    site = _QuietSite(root)
    site.displayTracebacks = False
    return site
