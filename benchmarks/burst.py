"""Fire a bounded burst of real photos at a running service and report what happened.

    python benchmarks/burst.py --url http://127.0.0.1:3000 --concurrency 64 --requests 256

Prints status counts, latency percentiles and the adaptive batch sizes BentoML recorded
during the burst (from /metrics). Loopback targets only.
"""

import re
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import httpx
import typer

BATCH_BUCKET = re.compile(
    r'^bentoml_service_adaptive_batch_size_bucket\{[^}]*le="([^"]+)"[^}]*\} ([0-9.e+]+)$', re.M
)


def read_batch_histogram(url: str) -> dict[float, float]:
    """Cumulative counts per upper bound, summed over workers."""
    counts: Counter[float] = Counter()
    for bound, value in BATCH_BUCKET.findall(httpx.get(f"{url}/metrics", timeout=30).text):
        counts[float(bound)] += float(value)
    return dict(counts)


def main(
    url: Annotated[str, typer.Option()] = "http://127.0.0.1:3000",
    data: Annotated[Path, typer.Option()] = Path("data/sample"),
    concurrency: Annotated[int, typer.Option()] = 64,
    requests: Annotated[int, typer.Option()] = 256,
) -> None:
    if httpx.URL(url).host not in ("127.0.0.1", "localhost", "::1"):
        raise typer.BadParameter("bursts go to loopback only")
    photos = [path.read_bytes() for path in sorted(data.rglob("*.jpg"))]
    before = read_batch_histogram(url)

    def post(index: int) -> tuple[int, float]:
        started = time.perf_counter()
        response = httpx.post(
            f"{url}/predict", files={"file": ("photo.jpg", photos[index % len(photos)])},
            timeout=120,
        )  # fmt: skip
        return response.status_code, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(post, range(requests)))
    wall = time.perf_counter() - started
    after = read_batch_histogram(url)

    latencies = sorted(seconds * 1000 for _, seconds in results)
    statuses = Counter(status for status, _ in results)
    typer.echo(f"{requests} requests, concurrency {concurrency}, {wall:.1f} s, "
               f"{requests / wall:.1f} requests/s")  # fmt: skip
    typer.echo(f"statuses: {dict(statuses)}")
    typer.echo(
        f"latency ms: p50 {statistics.median(latencies):.0f}, "
        f"p95 {latencies[int(0.95 * len(latencies)) - 1]:.0f}, max {latencies[-1]:.0f}"
    )
    previous = 0.0
    typer.echo("batches by size (upper bound: count during the burst):")
    for bound in sorted(after):
        cumulative = after[bound] - before.get(bound, 0.0)
        typer.echo(f"  <= {bound:g}: {cumulative - previous:.0f}")
        previous = cumulative


if __name__ == "__main__":
    typer.run(main)
