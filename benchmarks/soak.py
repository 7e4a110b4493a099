"""Soak benchmark: the service as shipped, under steady load for a long while.

    python benchmarks/soak.py --model catsdogs:latest --photos ../shared/datasets/catsdogs

Starts `bentoml serve`, measures its saturation rate (closed loop, 32 clients), then sends
real photos at a fixed share of that rate (open loop: requests leave on schedule whatever the
answers do) for --minutes, and reports per minute the requests, errors, p50 and p99, and the
workers' memory at the start and the end. The bar: no errors, memory growth under 5 %.
Writes <out>/soak.json and <out>/soak.md. Loopback only; the server is stopped by its PID.
"""

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

# Run as a script from the repository root: benchmarks/ is on the path.
from serving import (
    MULTIPART,
    ROOT,
    multipart_body,
    pick_photos,
    run_load,
    running_server,
    summarize,
)

MAX_IN_FLIGHT = 512  # requests waiting at once before the client counts a stall as an error
MAX_MEMORY_GROWTH = 0.05
app = typer.Typer(add_completion=False)


def worker_memory_mib(server_pid: int) -> float:
    """Resident memory of the serving workers (descendants of `bentoml serve`), in MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total_kib, todo = 0, list(children.get(server_pid, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        if b"_bentoml_impl.worker.service" in command:
            total_kib += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return total_kib / 1024


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float, headers: dict):
    """Requests at `rate` per second for `seconds`; (send time, latency ms or None, status)."""
    import aiohttp

    results: list[tuple[float, float | None, str]] = []
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(index: int, sent: float) -> None:
            async with in_flight:
                try:
                    async with session.post(
                        url, data=bodies[index % len(bodies)], headers=headers
                    ) as response:
                        await response.read()
                        status = str(response.status)
                except (TimeoutError, aiohttp.ClientError) as error:
                    status = type(error).__name__
            latency = (time.perf_counter() - sent) * 1000 if status == "200" else None
            results.append((sent, latency, status))

        started = time.perf_counter()
        tasks, index = [], 0
        while (due := started + index / rate) < started + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(post(index, time.perf_counter())))
            index += 1
        await asyncio.gather(*tasks)
    return started, results


def per_minute(started: float, results, minutes: int) -> list[dict]:
    rows = []
    for minute in range(minutes):
        window = [r for r in results if minute * 60 <= r[0] - started < (minute + 1) * 60]
        ok = sorted(latency for _, latency, _ in window if latency is not None)

        def percentile(q: float, ok=ok) -> float | None:
            return ok[min(len(ok) - 1, int(q * len(ok)))] if ok else None

        rows.append({"minute": minute + 1, "requests": len(window),
                     "errors": len(window) - len(ok), "p50_ms": percentile(0.5),
                     "p99_ms": percentile(0.99)})  # fmt: skip
    return rows


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        f"### Soak ({report['date']})", "",
        f"Model `{report['model']}`, {report['photo_count']} real photos, "
        f"{report['minutes']} minutes at {report['rate']:.1f} requests/s "
        f"({report['load']:.0%} of the measured saturation, {report['saturation']:.1f} img/s).",
        "",
        "| minute | requests | errors | p50 ms | p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for row in report["minutes_table"]:
        p50, p99 = (f"{row[k]:.0f}" if row[k] is not None else "-" for k in ("p50_ms", "p99_ms"))
        lines.append(f"| {row['minute']} | {row['requests']} | {row['errors']} | {p50} | {p99} |")
    memory = report["memory_mib"]
    lines += [
        "",
        f"Worker memory: {memory['start']:.0f} MiB at the start, {memory['end']:.0f} MiB at the "
        f"end ({report['memory_growth']:+.1%}). Errors: {report['errors']} of "
        f"{report['requests']}. Bar (0 errors, growth under {MAX_MEMORY_GROWTH:.0%}): "
        f"{'met' if report['passed'] else 'NOT met'}.",
    ]
    path.write_text("\n".join(lines) + "\n")


@app.command()
def main(
    model: Annotated[str, typer.Option(help="BentoML tag of a trained model.")] = "catsdogs:latest",
    photos: Annotated[Path, typer.Option(help="Folder of real photos.")] = Path("data/sample"),
    count: Annotated[int, typer.Option(help="Photos used, spread over the folder.")] = 256,
    minutes: Annotated[int, typer.Option(help="How long the steady load lasts.")] = 10,
    load: Annotated[float, typer.Option(help="Share of the saturation rate sent.")] = 0.7,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/benchmark"),
    port: Annotated[int, typer.Option(help="Loopback port of the service.")] = 3481,
    api_key: Annotated[str, typer.Option(help="Run the service with this API key on.")] = "",
) -> None:
    """Run the soak and write soak.json and soak.md."""
    import bentoml

    tag = str(bentoml.models.get(model).tag)
    out.mkdir(parents=True, exist_ok=True)
    paths = pick_photos(photos, count)
    bodies = [multipart_body(path.read_bytes()) for path in paths]
    env = {"CATSDOGS_MODEL_TAG": tag, "BENTOML_DO_NOT_TRACK": "true"}
    headers = dict(MULTIPART)
    if api_key:
        env["CATSDOGS_API_KEYS"] = api_key
        headers["Authorization"] = f"Bearer {api_key}"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", "service:CatsDogs",
               "--port", str(port)]  # fmt: skip
    url = f"http://127.0.0.1:{port}/predict"
    with running_server(command, env, port, out / "soak_server.log") as server:
        saturated = summarize([asyncio.run(run_load(url, bodies, 32, 20.0, headers))])
        rate = load * saturated["images_per_s"]
        typer.echo(f"saturation {saturated['images_per_s']:.1f} img/s; soak at {rate:.1f}/s")
        memory_start = worker_memory_mib(server.pid)
        started, results = asyncio.run(open_loop(url, bodies, rate, minutes * 60.0, headers))
        memory_end = worker_memory_mib(server.pid)
    table = per_minute(started, results, minutes)
    errors = sum(row["errors"] for row in table)
    growth = memory_end / memory_start - 1 if memory_start else float("nan")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": tag, "photo_count": len(paths),
        "minutes": minutes, "load": load, "saturation": saturated["images_per_s"],
        "rate": rate, "requests": len(results), "errors": errors,
        "statuses": {s: sum(1 for *_, x in results if x == s) for s in {r[2] for r in results}},
        "p50_ms": statistics.median([r[1] for r in results if r[1] is not None] or [0]),
        "minutes_table": table, "memory_mib": {"start": memory_start, "end": memory_end},
        "memory_growth": growth, "passed": errors == 0 and growth < MAX_MEMORY_GROWTH,
    }  # fmt: skip
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out / "soak.md")
    typer.echo((out / "soak.md").read_text())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    app()
