"""Reading manifests, indexes and notification envelopes (no I/O), and the bound
on warming retries."""

import json

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from eagle import errors
from eagle.images import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    Blob,
    Platform,
    parse_events,
    parse_manifest,
)
from eagle.preheat import RETRIES, Warmer

A, B, C = ("sha256:" + c * 64 for c in "abc")


def descriptor(digest, size=10, **extra):
    return {"mediaType": "x", "digest": digest, "size": size, **extra}


class ManifestTests(SynchronousTestCase):
    def test_image(self):
        """A manifest's blobs are its config, then its layers."""
        body = json.dumps(
            {"config": descriptor(A, 1), "layers": [descriptor(B, 2), descriptor(C, 3)]}
        ).encode()
        manifest = parse_manifest(DOCKER_MANIFEST, body)
        self.assertFalse(manifest.is_index)
        self.assertEqual(manifest.blobs, (Blob(A, 1), Blob(B, 2), Blob(C, 3)))

    def test_index(self):
        """An index's children come with their platforms."""
        body = json.dumps(
            {
                "mediaType": OCI_INDEX,
                "manifests": [
                    descriptor(A, platform={"os": "linux", "architecture": "amd64"}),
                    descriptor(
                        B,
                        platform={
                            "os": "linux",
                            "architecture": "arm64",
                            "variant": "v8",
                        },
                    ),
                    descriptor(C),
                ],
            }
        ).encode()
        manifest = parse_manifest("", body)
        self.assertTrue(manifest.is_index)
        platforms = [p for _, p in manifest.children]
        self.assertEqual(platforms[2], None)
        wanted = Platform.parse("linux/arm64")
        self.assertEqual([wanted.matches(p) for p in platforms[:2]], [False, True])
        self.assertFalse(Platform.parse("linux/arm64/v7").matches(platforms[1]))

    def test_bad_manifests(self):
        """Malformed manifests raise ValueError with a reason."""
        for body in (
            b"nope",
            b"[]",
            b"{}",
            json.dumps({"config": descriptor("md5:00")}).encode(),
            json.dumps({"config": descriptor(A, -1)}).encode(),
            json.dumps({"config": descriptor(A), "layers": "x"}).encode(),
        ):
            self.assertRaises(ValueError, parse_manifest, DOCKER_MANIFEST, body)

    def test_bad_platform(self):
        """A platform is os/architecture[/variant]."""
        for text in ("linux", "linux/", "a/b/c/d"):
            self.assertRaises(ValueError, Platform.parse, text)


class EventTests(SynchronousTestCase):
    def event(self, **changes):
        event = {
            "action": "push",
            "target": {
                "mediaType": DOCKER_MANIFEST,
                "repository": "team/app",
                "digest": A,
                "tag": "1",
            },
            "request": {"host": "registry.test:5000"},
        }
        event.update(changes)
        return event

    def test_manifest_push(self):
        """A manifest push names the registry, repository, digest and tag."""
        (push,) = parse_events(json.dumps({"events": [self.event()]}).encode())
        self.assertEqual(
            (push.host, push.repository, push.digest, push.tag),
            ("registry.test:5000", "team/app", A, "1"),
        )

    def test_others_left_out(self):
        """Pulls and blob pushes are not warmed."""
        blob = self.event()
        blob["target"] = {**blob["target"], "mediaType": "application/octet-stream"}
        body = json.dumps({"events": [self.event(action="pull"), blob]}).encode()
        self.assertEqual(parse_events(body), [])

    def test_bad_envelopes(self):
        """What is not an envelope of well-formed events is a ValueError."""
        bad_name = self.event()
        bad_name["target"] = {**bad_name["target"], "repository": "../etc"}
        for body in (
            b"{",
            b"[]",
            b'{"events": {}}',
            json.dumps({"events": [1]}).encode(),
            json.dumps({"events": [self.event(request=None)]}).encode(),
            json.dumps({"events": [bad_name]}).encode(),
            json.dumps({"events": [self.event()] * 1001}).encode(),
        ):
            self.assertRaises(ValueError, parse_events, body)


class RetryTests(SynchronousTestCase):
    def test_retries_are_bounded(self):
        """A failure that may pass is retried len(RETRIES) times, then raised; a
        4xx is raised at once."""
        clock = Clock()
        warmer = Warmer(None, None, clock, None)
        attempts = []

        def attempt(error):
            def run():
                attempts.append(clock.seconds())
                return fail(error)

            return run

        unavailable = errors.upstream_unavailable("origin", "down")
        d = Deferred.fromCoroutine(warmer._retrying("x", attempt(unavailable)))
        for delay in RETRIES:
            clock.advance(delay)
        self.failureResultOf(d, errors.RegistryError)
        self.assertEqual(len(attempts), len(RETRIES) + 1)
        attempts.clear()
        d = Deferred.fromCoroutine(
            warmer._retrying("x", attempt(errors.blob_unknown(A)))
        )
        self.failureResultOf(d, errors.RegistryError)
        self.assertEqual(len(attempts), 1)
        self.assertEqual(clock.getDelayedCalls(), [])


class AllTests(SynchronousTestCase):
    def test_first_failure_after_all_ended(self):
        """_all waits for every coroutine and raises the first failure itself."""
        from eagle.preheat import _all

        ended = []
        gate = Deferred()

        async def ok():
            await gate
            ended.append("ok")

        async def bad():
            raise errors.blob_unknown(A)

        d = Deferred.fromCoroutine(_all([bad(), ok()]))
        self.assertNoResult(d)
        gate.callback(None)
        self.failureResultOf(d, errors.RegistryError)
        self.assertEqual(ended, ["ok"])
