"""The token bucket and the split of a host's download budget: pure logic."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from eagle.ratelimit import (
    BURST,
    MIN_BURST,
    HostLimits,
    Limits,
    TokenBucket,
    download_shares,
)

MiB = 1 << 20


class TokenBucketTests(SynchronousTestCase):
    def test_unlimited(self):
        """Rate 0 never makes anyone wait."""
        bucket = TokenBucket(Clock())
        self.assertEqual(bucket.take(10**12), 0)

    def test_debt_paid_over_time(self):
        """Taking more than there is gives the time the rate needs to pay it."""
        clock = Clock()
        bucket = TokenBucket(clock, MiB)
        self.assertAlmostEqual(bucket.take(MiB), 1.0)
        clock.advance(1.0)
        self.assertAlmostEqual(bucket.take(MiB // 2), 0.5)

    def test_rate_held_over_many_takes(self):
        """Bytes taken as fast as the delays allow come out at the rate."""
        clock = Clock()
        bucket = TokenBucket(clock, 10 * MiB)
        taken = 0
        while clock.seconds() < 10:
            clock.advance(bucket.take(64 * 1024))
            taken += 64 * 1024
        self.assertLessEqual(taken, 100 * MiB + bucket.burst + 64 * 1024)
        self.assertGreaterEqual(taken, 100 * MiB)

    def test_burst_bounded(self):
        """Idle time saves up at most BURST seconds of the rate."""
        clock = Clock()
        bucket = TokenBucket(clock, 10 * MiB)
        clock.advance(60)
        self.assertEqual(bucket.take(int(10 * MiB * BURST)), 0)
        self.assertGreater(bucket.take(MIN_BURST), 0)

    def test_new_rate(self):
        """A lower rate applies to what is taken next."""
        clock = Clock()
        bucket = TokenBucket(clock, 10 * MiB)
        bucket.set_rate(MiB)
        self.assertAlmostEqual(bucket.take(MiB), 1.0)


class SharesTests(SynchronousTestCase):
    def test_split(self):
        """Halves while both run; all of it to whoever runs alone; none: none."""
        self.assertEqual(download_shares(10, True, True), (5, 5))
        self.assertEqual(download_shares(11, True, True), (5, 6))
        self.assertEqual(download_shares(10, True, False), (10, 10))
        self.assertEqual(download_shares(10, False, True), (10, 10))
        self.assertEqual(download_shares(0, True, True), (0, 0))


class HostLimitsTests(SynchronousTestCase):
    def setUp(self):
        self.applied = []
        self.swarm = False
        self.host = HostLimits(
            Clock(),
            Limits(download=8 * MiB, upload=MiB, blob_download=0, blob_upload=0),
            lambda *limits: self.applied.append(limits),
            lambda: self.swarm,
        )

    def test_http_fetch_splits_with_the_swarm(self):
        """An HTTP fetch halves the swarm's download limit while it runs, from
        before its first byte; closing it gives the swarm all of it back."""
        self.assertEqual(self.applied, [(8 * MiB, MiB, 0, 0)])
        self.swarm = True
        throttle = self.host.http_fetch()
        self.assertEqual(self.applied[-1], (4 * MiB, MiB, 0, 0))
        self.assertEqual(self.host.http.rate, 4 * MiB)
        throttle.close()
        throttle.close()  # once only
        self.assertEqual(self.applied[-1], (8 * MiB, MiB, 0, 0))
        self.assertEqual(self.host.http_fetches, 0)

    def test_http_alone_gets_everything(self):
        throttle = self.host.http_fetch()
        self.assertEqual(self.host.http.rate, 8 * MiB)
        self.assertAlmostEqual(throttle.take(8 * MiB), 1.0)

    def test_per_blob_limit(self):
        """A fetch waits for the stricter of the host's and its blob's bucket."""
        self.host.set(Limits(download=8 * MiB, blob_download=MiB))
        self.assertEqual(self.applied[-1], (8 * MiB, 0, MiB, 0))
        throttle = self.host.http_fetch()
        self.assertAlmostEqual(throttle.take(MiB), 1.0)


class WindowRatesTests(SynchronousTestCase):
    def test_mean_and_peak(self):
        """The benchmark's mean over a window and highest 1 s rate within it."""
        from eagle.bench.limits import window_rates

        # 100 bytes/s for 5 s, then 300 bytes/s for 1 s, sampled every 0.1 s.
        samples, count = [], 0
        for i in range(61):
            samples.append((i / 10, count))
            count += 10 if i < 50 else 30
        mean, peak = window_rates(samples, 0, 6.0)
        self.assertAlmostEqual(mean, 800 / 6, places=3)
        self.assertAlmostEqual(peak, 300, places=3)
        self.assertRaises(ValueError, window_rates, samples, 7, 8)
