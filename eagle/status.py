"""Status pages: what a tracker or a node is doing, as one self-contained HTML page.

No I/O here: the pages are rendered from the same data as ``/eagle/stats``, with
the throughput plot drawn as inline SVG on the server, so that the page needs no
script, no CDN and nothing else to load; it reloads itself every few seconds.
"""

from __future__ import annotations

from collections import deque
from html import escape

REFRESH = 5  # seconds between reloads of a page
HISTORY = 360  # samples kept: 30 minutes at one per 5 s
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


class History:
    """Cumulative byte counts sampled over time, for rates between samples."""

    def __init__(self, maxlen: int = HISTORY):
        self.samples: deque = deque(maxlen=maxlen)

    def add(self, when: float, totals: dict[str, int]) -> None:
        self.samples.append((when, dict(totals)))

    def rates(self) -> list[tuple[float, dict[str, float]]]:
        """(time, bytes per second of each series since the sample before)."""
        points = []
        samples = list(self.samples)
        for (t0, a), (t1, b) in zip(samples, samples[1:], strict=False):
            if t1 > t0:
                points.append(
                    (t1, {k: max(0, b.get(k, 0) - a.get(k, 0)) / (t1 - t0) for k in b})
                )
        return points


def rates_from_totals(rows: list[list]) -> list[tuple[float, dict[str, float]]]:
    """Rates from the tracker's history rows ``[time, seeder bytes, agent bytes]``."""
    history = History()
    for when, seeder, agent in rows:
        history.add(when, {"seeders": seeder, "agents": agent})
    return history.rates()


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def plot(points: list[tuple[float, dict[str, float]]], title: str) -> str:
    """An SVG line plot of rates over time, one line per series, with a legend."""
    width, height, left, bottom, top = 640, 220, 70, 30, 24
    names = sorted({name for _, values in points for name in values})
    peak = max((v for _, values in points for v in values.values()), default=0) or 1
    parts = [
        f'<svg class="plot" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{left}" y="16" font-size="13">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
        f'y2="{height - bottom}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" '
        'stroke="#888"/>',
        f'<text x="4" y="{top + 10}" font-size="11">{human_bytes(peak)}/s</text>',
        f'<text x="4" y="{height - bottom}" font-size="11">0</text>',
    ]
    if len(points) < 2:
        parts.append(
            f'<text x="{left + 20}" y="{height // 2}" font-size="12" fill="#666">'
            "collecting samples...</text>"
        )
    else:
        start, end = points[0][0], points[-1][0]
        span = (end - start) or 1
        x_scale = (width - left - 10) / span
        y_scale = (height - bottom - top) / peak
        for i, name in enumerate(names):
            xy = " ".join(
                f"{left + (t - start) * x_scale:.1f},"
                f"{height - bottom - v.get(name, 0) * y_scale:.1f}"
                for t, v in points
            )
            colour = COLOURS[i % len(COLOURS)]
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{xy}"/>'
            )
        parts.append(
            f'<text x="{left}" y="{height - 8}" font-size="11">'
            f"last {span / 60:.1f} min</text>"
        )
    for i, name in enumerate(names):
        x = width - 160 + 80 * (i % 2)
        y = 14 + 14 * (i // 2)
        colour = COLOURS[i % len(COLOURS)]
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{y}" font-size="11">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bar(fraction: float | None) -> str:
    if fraction is None:
        return "?"
    percent = round(100 * fraction)
    return f'<span class="bar"><span style="width:{percent}%"></span></span> {percent}%'


_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:13px}
th{background:#f3f3f3}
code{font-size:12px}
.bar{display:inline-block;width:120px;height:10px;background:#eee;
vertical-align:middle}
.bar span{display:block;height:10px;background:#2ca02c}
"""


def _page(title: str, body: list[str]) -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH}">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>" + "".join(body) + "</body></html>"
    ).encode()


def _short(digest: str | None) -> str:
    return escape(digest[:19] + "...") if digest else "(unknown blob)"


def tracker_page(stats: dict) -> bytes:
    """The tracker's page, from its ``/eagle/stats``."""
    swarms = stats.get("swarms", [])
    uploaded = stats.get("uploaded", {})
    body = [
        f"<p>{len(swarms)} swarms, "
        f"{sum(len(s['peers']) for s in swarms)} peers; "
        f"{stats.get('announces', 0)} announces, "
        f"{stats.get('store_failures', 0)} peer store failures. "
        f"Uploaded by seeders {human_bytes(uploaded.get('seeder', 0))}, "
        f"by agents {human_bytes(uploaded.get('agent', 0))}.</p>",
        plot(
            rates_from_totals(stats.get("history", [])),
            "Upload throughput by source (bytes/s)",
        ),
        "<h2>Swarms</h2>",
        '<table id="swarms"><tr><th>blob</th><th>size</th><th>complete</th>'
        "<th>downloading</th><th>from seeders</th><th>from agents</th></tr>",
    ]
    for swarm in swarms:
        body.append(
            f'<tr class="swarm" data-digest="{escape(swarm["digest"] or "")}">'
            f'<td title="infohash {escape(swarm["infohash"])}">'
            f"<code>{escape(swarm['digest'] or '(unknown blob)')}</code></td>"
            f"<td>{human_bytes(swarm['size'] or 0)}</td>"
            f"<td>{swarm['complete']}</td><td>{swarm['incomplete']}</td>"
            f"<td>{human_bytes(swarm['uploaded']['seeder'])}</td>"
            f"<td>{human_bytes(swarm['uploaded']['agent'])}</td></tr>"
        )
    body.append("</table>")
    for swarm in swarms:
        body.append(
            f"<h3>Peers of <code>{_short(swarm['digest'])}</code></h3>"
            '<table class="peers"><tr><th>peer</th><th>kind</th><th>labels</th>'
            "<th>progress</th><th>uploaded</th><th>downloaded</th></tr>"
        )
        for peer in swarm["peers"]:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(peer["labels"].items()))
            body.append(
                f"<tr><td>{escape(peer['address'])}</td><td>{peer['kind']}</td>"
                f"<td>{escape(labels)}</td><td>{_bar(peer['progress'])}</td>"
                f"<td>{human_bytes(peer['uploaded'])}</td>"
                f"<td>{human_bytes(peer['downloaded'])}</td></tr>"
            )
        body.append("</table>")
    return _page("Eagle tracker", body)


def node_page(stats: dict, history: History) -> bytes:
    """An agent's, proxy's or seeder's page, from its ``/eagle/stats``."""
    role = stats.get("role", "node")
    received = stats.get("received", {})
    cache = stats.get("cache", {})
    body = [
        f"<p>Cache: {cache.get('blobs', 0)} blobs, "
        f"{human_bytes(cache.get('bytes', 0))}. Served "
        f"{stats.get('served', {}).get('blobs', 0)} blobs, "
        f"{stats.get('served', {}).get('manifests', 0)} manifests.</p>",
        '<table id="received"><tr><th>received from</th><th>bytes</th></tr>',
    ]
    for source in ("origin", "seeder", "peer"):
        body.append(
            f"<tr><td>{source}</td><td>{human_bytes(received.get(source, 0))}</td></tr>"
        )
    body.append("</table>")
    body.append(plot(history.rates(), "Throughput (bytes/s)"))
    swarms = stats.get("swarms", [])
    if swarms:
        body.append(
            '<h2>Swarms</h2><table id="swarms"><tr><th>blob</th><th>state</th>'
            "<th>progress</th><th>peers</th><th>down</th><th>up</th></tr>"
        )
        for swarm in swarms:
            body.append(
                f'<tr class="swarm" data-digest="{escape(swarm["digest"])}">'
                f"<td><code>{escape(swarm['digest'])}</code></td>"
                f"<td>{swarm['state']}</td><td>{_bar(swarm['progress'])}</td>"
                f"<td>{swarm['peers']}</td>"
                f"<td>{human_bytes(swarm['download_rate'])}/s</td>"
                f"<td>{human_bytes(swarm['upload_rate'])}/s</td></tr>"
            )
        body.append("</table>")
    return _page(f"Eagle {role}", body)
