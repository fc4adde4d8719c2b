"""Warming seeders before anyone pulls: registry push notifications and explicit
preheat requests for ``name:tag``.

Both resolve a manifest at the origin (an index to all its platforms' manifests,
or to the chosen one's), then have the seeder fetch, store and seed every blob it
names, as if an agent had asked. Warming is idempotent: a blob already there
costs a cache lookup.
"""

import hashlib
import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass, field

from klein import Klein
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore
from twisted.internet.task import deferLater
from twisted.logger import Logger

from eagle import digest as names
from eagle import errors
from eagle.blobs import EMPTY_SHA256
from eagle.fetch import MANIFEST_LIMIT, discard, header, read_limited, reason
from eagle.fetch import request_headers as make_headers
from eagle.images import (
    EVENTS_TYPE,
    MANIFEST_TYPES,
    Blob,
    Manifest,
    Platform,
    parse_events,
    parse_manifest,
)
from eagle.mirror import write_error
from eagle.upstream import BlobRef, Upstream

# Seconds to wait before each further attempt at a manifest or blob that failed.
RETRIES = (1, 5, 15)
MAX_JOBS = 100  # finished preheat jobs remembered for their progress
WARM_CONCURRENCY = 4


class Warmer:
    """Resolves images at their origin and has the seeder take their blobs."""

    log = Logger()

    def __init__(self, seeder, http, reactor, credentials, retries=RETRIES):
        self.seeder = seeder
        self.http = http
        self.reactor = reactor
        self.credentials = credentials
        self.retries = retries
        # Blobs warmed at once, by all pushes and preheat jobs together.
        self.limit = DeferredSemaphore(WARM_CONCURRENCY)

    async def manifest(
        self, upstream: Upstream, repository: str, reference: str
    ) -> tuple[Manifest, str]:
        """The manifest ``repository:reference`` at the origin, and its digest."""
        url = upstream.manifest_url(repository, reference)
        headers = make_headers(None, [t.encode() for t in MANIFEST_TYPES])
        try:
            response = await self.http.get(url, headers=headers, timeout=30)
            if response.code == 401 and self.credentials is not None:
                answer = await self.credentials.answer(
                    upstream, header(response, b"www-authenticate")
                )
                if answer is not None:
                    discard(response)
                    headers.setRawHeaders(b"Authorization", [answer])
                    response = await self.http.get(url, headers=headers, timeout=30)
            body = await read_limited(response, MANIFEST_LIMIT, self.reactor)
        except Exception as e:
            raise errors.upstream_unavailable(upstream.host, reason(e)) from None
        where = f"{upstream.host}/{repository}:{reference}"
        if response.code == 404:
            raise errors.manifest_unknown(where)
        if response.code in (401, 403):
            raise errors.RegistryError(
                response.code, "DENIED", "the origin refused the seeder", where
            )
        if response.code != 200:
            raise errors.upstream_bad_reply(upstream.host, f"status {response.code}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if names.is_digest(reference) and reference != digest:
            raise errors.upstream_bad_reply(
                upstream.host, f"{where} hashes to {digest}"
            )
        media_type = (header(response, b"content-type") or b"").decode("latin-1")
        try:
            return parse_manifest(media_type, body), digest
        except ValueError as e:
            raise errors.RegistryError(
                502, "MANIFEST_INVALID", "the origin's manifest is invalid", str(e)
            ) from None

    async def resolve(
        self,
        upstream: Upstream,
        repository: str,
        reference: str,
        platform: Platform | None = None,
    ) -> list[Blob]:
        """The blobs of an image: of every platform of an index, or of one."""
        manifest, _ = await self.manifest(upstream, repository, reference)
        manifests = [manifest]
        if manifest.is_index:
            chosen = [
                child
                for child, p in manifest.children
                if platform is None or (p is not None and platform.matches(p))
            ]
            if not chosen:
                raise errors.RegistryError(
                    404,
                    "MANIFEST_UNKNOWN",
                    f"no manifest for platform {platform}",
                    f"{repository}:{reference}",
                )
            manifests = [
                (await self.manifest(upstream, repository, child.digest))[0]
                for child in chosen
            ]
        blobs = OrderedDict()  # layers shared by platforms are warmed once
        for m in manifests:
            for blob in m.blobs:
                blobs.setdefault(blob.digest, blob)
        return list(blobs.values())

    async def warm(self, upstream: Upstream, repository: str, blob: Blob) -> None:
        """Have the seeder fetch, store and seed a blob, with a bounded number of
        retries for failures that may pass (origin or storage away)."""
        ref = BlobRef(upstream, repository, names.blob_digest(blob.digest))
        if ref.hex == EMPTY_SHA256:
            return  # nothing to fetch or seed

        def attempt():
            return self.limit.run(
                lambda: Deferred.fromCoroutine(self.seeder.torrent(ref))
            )

        await self._retrying(f"blob {blob.digest}", attempt)

    async def _retrying(self, what: str, attempt):
        for number, delay in enumerate((0, *self.retries), start=1):
            if delay:
                await deferLater(self.reactor, delay, lambda: None)
            try:
                return await attempt()
            except errors.RegistryError as e:
                if e.status < 500 or number > len(self.retries):
                    raise
                why = f"{e.message}: {e.detail}"
            except Exception as e:
                if number > len(self.retries):
                    raise
                why = reason(e)
            self.log.warn(
                "warming {what} failed (attempt {number}), retrying: {why}",
                what=what,
                number=number,
                why=why,
            )

    async def pushed(self, upstream: Upstream, repository: str, digest: str) -> None:
        """Warm what a push notification announced; failures are logged."""
        try:
            blobs = await self._retrying(
                f"manifest {digest}", lambda: self.resolve(upstream, repository, digest)
            )
            await _all(self.warm(upstream, repository, blob) for blob in blobs)
        except Exception as e:
            detail = _why(e)
            self.log.error(
                "could not warm {registry}/{repository}@{digest} after a push: {why}",
                registry=upstream.host,
                repository=repository,
                digest=digest,
                why=detail,
            )
            return
        self.log.info(
            "warmed {registry}/{repository}@{digest} after a push: {count} blobs",
            registry=upstream.host,
            repository=repository,
            digest=digest,
            count=len(blobs),
        )


@dataclass
class _Job:
    """One preheat request's blobs and how far each has come."""

    blobs: list[Blob]
    state: dict[str, str] = field(default_factory=dict)  # digest: state
    errors: dict[str, str] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)  # there before the job


class PreheatAPI:
    """On a seeder, under ``/preheat``:

    - ``POST /notifications``: Docker Distribution's notification webhook.
    - ``POST /images``: ``{"registry", "repository", "reference", "platform",
      "blobs"}`` resolves the image and warms its blobs (only those listed in
      ``blobs`` when given, none when it is empty); answers with the blobs and a
      job to follow.
    - ``GET /jobs/<id>``: each blob's state (waiting, fetching, done, failed) and
      bytes fetched.
    """

    app = Klein()
    log = Logger()

    def __init__(self, warmer: Warmer, upstreams):
        self.warmer = warmer
        self.upstreams = upstreams
        self.jobs: OrderedDict[str, _Job] = OrderedDict()
        self._ids = itertools.count(1)

    def resource(self):
        return self.app.resource()

    def _upstream(self, host: str) -> Upstream:
        """The configured registry a pusher or operator names, by ``host`` or by
        the address in its URL."""
        for upstream in self.upstreams:
            if host in (upstream.host, upstream.url.split("://", 1)[-1]):
                return upstream
        raise errors.name_unknown(host[:256])

    @app.route("/notifications", methods=["POST"])
    def notifications(self, request):
        content_type = (request.getHeader(b"Content-Type") or b"").decode("latin-1")
        media_type = content_type.split(";")[0].strip()
        peer = request.getClientAddress()
        try:
            if media_type not in (EVENTS_TYPE, "application/json"):
                raise errors.RegistryError(
                    415, "UNSUPPORTED", f"expected {EVENTS_TYPE}", media_type[:100]
                )
            try:
                pushes = parse_events(request.content.read())
            except ValueError as e:
                raise errors.RegistryError(
                    400, "UNSUPPORTED", "not a notification envelope", str(e)[:300]
                ) from None
            targets = [(self._upstream(e.host), e) for e in pushes]
        except errors.RegistryError as e:
            self.log.warn(
                "refused a notification from {peer}: {message}: {detail}",
                peer=getattr(peer, "host", peer),
                message=e.message,
                detail=e.detail,
            )
            return write_error(request, e)
        for upstream, event in targets:
            self.log.info(
                "push of {registry}/{repository}@{digest}: warming its blobs",
                registry=upstream.host,
                repository=event.repository,
                digest=event.digest,
            )
            Deferred.fromCoroutine(
                self.warmer.pushed(upstream, event.repository, event.digest)
            )
        request.setResponseCode(202)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"warming": len(targets)}).encode()

    @app.route("/images", methods=["POST"])
    async def images(self, request):
        try:
            upstream, repository, reference, platform, only = self._image_request(
                request.content.read()
            )
            blobs = await self.warmer.resolve(upstream, repository, reference, platform)
        except errors.RegistryError as e:
            return write_error(request, e)
        wanted = [b for b in blobs if only is None or b.digest in only]
        job_id = self._start(upstream, repository, wanted)
        request.setResponseCode(202)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(
            {
                "job": job_id,
                "blobs": [{"digest": b.digest, "size": b.size} for b in blobs],
                "warming": [b.digest for b in wanted],
            }
        ).encode()

    def _image_request(self, body: bytes):
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            registry = data.get("registry") or self.upstreams.default
            repository, reference = data["repository"], data["reference"]
            platform = data.get("platform")
            only = data.get("blobs")
            if not all(isinstance(x, str) for x in (registry, repository, reference)):
                raise ValueError("registry, repository and reference are strings")
            if only is not None and not (
                isinstance(only, list) and all(isinstance(x, str) for x in only)
            ):
                raise ValueError("blobs is a list of digests")
            platform = Platform.parse(platform) if platform else None
        except (ValueError, KeyError, TypeError) as e:
            raise errors.RegistryError(
                400, "UNSUPPORTED", "bad preheat request", str(e)[:300]
            ) from None
        upstream = self._upstream(registry)
        repository = upstream.repository(names.repository(repository))
        return upstream, repository, names.reference(reference), platform, only

    def _start(self, upstream: Upstream, repository: str, blobs: list[Blob]) -> str:
        job_id = str(next(self._ids))
        job = self.jobs[job_id] = _Job(blobs, {b.digest: "waiting" for b in blobs})
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)

        cache = self.warmer.seeder.blobs.cache
        for blob in blobs:
            if cache.has(blob.digest.partition(":")[2]):
                job.cached.add(blob.digest)

        async def one(blob):
            job.state[blob.digest] = "fetching"
            try:
                await self.warmer.warm(upstream, repository, blob)
            except Exception as e:
                job.state[blob.digest] = "failed"
                job.errors[blob.digest] = _why(e)
                self.log.warn(
                    "preheat of {digest} failed: {why}",
                    digest=blob.digest,
                    why=job.errors[blob.digest],
                )
            else:
                job.state[blob.digest] = "done"

        async def run():
            await _all(one(blob) for blob in blobs)

        Deferred.fromCoroutine(run())
        return job_id

    @app.route("/jobs/<job_id>", methods=["GET"])
    def job(self, request, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            return write_error(
                request, errors.RegistryError(404, "NOT_FOUND", "no such job")
            )
        blobs_ = self.warmer.seeder.blobs
        answer = []
        for blob in job.blobs:
            state = job.state[blob.digest]
            hex_ = blob.digest.partition(":")[2]
            if state == "done":
                done = blob.size
            else:
                done = blobs_.progress(hex_) or 0
            entry = {
                "digest": blob.digest,
                "size": blob.size,
                "state": state,
                "done": done,
                "cached": blob.digest in job.cached,
            }
            if blob.digest in job.errors:
                entry["error"] = job.errors[blob.digest]
            answer.append(entry)
        finished = all(s in ("done", "failed") for s in job.state.values())
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"blobs": answer, "finished": finished}).encode()


async def _all(coroutines) -> None:
    """Run coroutines together; raise the first failure once all have ended."""
    results = await DeferredList(
        [Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True
    )
    for ok, result in results:
        if not ok:
            result.raiseException()


def _why(e: Exception) -> str:
    """A failure in one line: an origin's OCI error with its detail, or the cause."""
    if isinstance(e, errors.RegistryError):
        return f"{e.message}: {e.detail}"
    return reason(e)
