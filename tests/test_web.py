"""The HTTP front every daemon shares: request bodies capped, TLS refused fast."""

import json
import socket

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource

from eagle.web import MAX_BODY, site


class Echo(Resource):
    isLeaf = True

    def render_PUT(self, request):
        return b"%d" % len(request.content.read())


class WebTests(TestCase):
    def setUp(self):
        self.port = reactor.listenTCP(0, site({b"echo": Echo()}), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/echo"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def test_small_body(self):
        """A body within the limit reaches the resource."""
        response = await self.http.put(self.url, data=b"x" * 1000)
        self.assertEqual(await response.content(), b"1000")

    async def test_large_body_refused(self):
        """A body over the limit is refused with 413 in OCI JSON, unread."""
        response = await self.http.put(self.url, data=b"x" * (MAX_BODY + 1))
        self.assertEqual(response.code, 413)
        body = json.loads(await response.content())
        self.assertEqual(body["errors"][0]["code"], "SIZE_INVALID")

    async def test_unknown_path(self):
        """A path no component serves is a 404 in OCI JSON."""
        response = await self.http.get(self.url.replace("echo", "nowhere"))
        self.assertEqual(response.code, 404)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["application/json"]
        )

    def test_tls_handshake_closed_at_once(self):
        """A client speaking TLS to the plain port is cut off, not left waiting."""

        def handshake():
            with socket.create_connection(
                ("127.0.0.1", self.port.getHost().port), 5
            ) as s:
                s.sendall(b"\x16\x03\x01\x00\x05hello")
                s.settimeout(5)
                try:
                    return s.recv(100)
                except ConnectionResetError:  # aborted: as good as closed
                    return b""

        return deferToThread(handshake).addCallback(self.assertEqual, b"")
