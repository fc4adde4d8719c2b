"""Eagle's own credentials at origins, and TLS verification per registry."""

import base64
import json

from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from eagle.auth import Credentials, basic, parse_challenge
from eagle.tls import RegistryTLSPolicy, _Unverified
from eagle.upstream import Upstream, Upstreams

CHALLENGE = (
    b'Bearer realm="http://auth.test/token",service="reg",'
    b'scope="repository:org/app:pull"'
)


class TokenService:
    """A fake token realm: a token for the right Basic credentials."""

    app = Klein()

    def __init__(self):
        self.requests = []

    @app.route("/token")
    def token(self, request):
        self.requests.append(request)
        expected = b"Basic " + base64.b64encode(b"eagle:s3cret")
        if request.getHeader(b"Authorization") != expected:
            request.setResponseCode(401)
            return b"{}"
        scope = request.args[b"scope"][0].decode()
        return json.dumps({"token": f"t-{scope}", "expires_in": 60}).encode()


class CredentialsTests(SynchronousTestCase):
    def setUp(self):
        self.service = TokenService()
        self.clock = Clock()
        self.credentials = Credentials(
            StubTreq(self.service.app.resource()), self.clock
        )
        self.upstream = Upstream("reg", "http://reg.test", "eagle", "s3cret")

    def answer(self, upstream, challenge=CHALLENGE):
        d = Deferred.fromCoroutine(self.credentials.answer(upstream, challenge))
        return self.successResultOf(d)

    def test_parse_challenge(self):
        """A Bearer challenge's parameters come out by name."""
        scheme, params = parse_challenge(CHALLENGE)
        self.assertEqual(scheme, "bearer")
        self.assertEqual(params["service"], "reg")
        self.assertEqual(params["scope"], "repository:org/app:pull")

    def test_bearer_token_fetched_and_kept(self):
        """The realm trades our credentials for a token, kept until near expiry."""
        token = self.answer(self.upstream)
        self.assertEqual(token, b"Bearer t-repository:org/app:pull")
        self.answer(self.upstream)
        self.assertEqual(len(self.service.requests), 1)
        self.clock.advance(55)
        self.answer(self.upstream)
        self.assertEqual(len(self.service.requests), 2)

    def test_basic(self):
        """A Basic challenge is met with the username and password."""
        self.assertEqual(
            self.answer(self.upstream, b'Basic realm="reg"'), basic("eagle", "s3cret")
        )

    def test_no_credentials(self):
        """Without configured credentials nothing is sent anywhere."""
        self.assertIsNone(self.answer(Upstream("reg", "http://reg.test")))
        self.assertEqual(self.service.requests, [])

    def test_refused(self):
        """Wrong credentials give no token, not an exception."""
        wrong = Upstream("reg", "http://reg.test", "eagle", "wrong")
        self.assertIsNone(self.answer(wrong))

    def test_no_downgrade(self):
        """Our password never goes to a plain-HTTP realm of an HTTPS registry."""
        secure = Upstream("reg", "https://reg.test", "eagle", "s3cret")
        self.assertIsNone(self.answer(secure))
        self.assertEqual(self.service.requests, [])


class TLSPolicyTests(SynchronousTestCase):
    def test_verified_by_default(self):
        """Registries are verified unless listed; listed ones are not."""
        policy = RegistryTLSPolicy({"lab.test:5000"})
        self.assertIsInstance(policy.creatorForNetloc(b"lab.test", 5000), _Unverified)
        self.assertNotIsInstance(policy.creatorForNetloc(b"reg.test", 443), _Unverified)


class SplitTests(SynchronousTestCase):
    def test_first_component_names_a_registry(self):
        """``quay.io/org/app`` selects the quay.io upstream when configured; other
        names, or unconfigured hosts, stay whole for the default registry."""
        quay = Upstream("quay.io", "https://quay.io")
        upstreams = Upstreams([Upstream("docker.io", "https://d"), quay], "docker.io")
        self.assertEqual(upstreams.split("quay.io/org/app"), (quay, "org/app"))
        self.assertEqual(upstreams.split("org/app"), (None, "org/app"))
        self.assertEqual(upstreams.split("ghcr.io/org/app"), (None, "ghcr.io/org/app"))
