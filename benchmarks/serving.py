"""Serving benchmark: the in-process limit, the BentoML service and a naive baseline, one run.

    python benchmarks/serving.py --model catsdogs:latest --photos ../shared/datasets/catsdogs

Same machine, same run, same real photos, same trained model:
  1. limit    - in-process decode + preprocess + model call, per batch size (ONNX Runtime, the
                serving runtime, and compiled TensorFlow/Keras), each in its own process;
  2. service  - `bentoml serve service:CatsDogs`, real multipart uploads over HTTP at each
                concurrency;
  3. baseline - benchmarks/baseline_app.py, FastAPI calling the Keras model once per request
                (and the same with ONNX Runtime, to separate what batching buys from what the
                runtime buys).
Writes <out>/serving.json, <out>/serving.md and <out>/serving.png, and prints the table and
the ratios against the targets of issue 5. Loopback only; every server is stopped by its PID.
"""

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from catsdogs.config import available_cores

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "catsdogsbenchmark"
app = typer.Typer(add_completion=False, no_args_is_help=False)


def pick_photos(folder: Path, count: int) -> list[Path]:
    """count photos spread evenly over the sorted folder (both classes), deterministically."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise typer.BadParameter(f"no photos under {folder}")
    step = max(1, len(paths) // count)
    return paths[::step][:count]


# ---- 1. the in-process limit ---------------------------------------------------------------


@app.command()
def limit(
    model: Annotated[str, typer.Option()] = "catsdogs:latest",
    runtime: Annotated[str, typer.Option()] = "onnx",
    photos: Annotated[Path, typer.Option()] = Path("data/sample"),
    count: Annotated[int, typer.Option()] = 256,
    batch_sizes: Annotated[str, typer.Option()] = "1,2,4,8,16,32",
    seconds: Annotated[float, typer.Option(help="Timed seconds per batch size.")] = 4.0,
) -> None:
    """Images/s of decode + preprocess + one model call per batch, in this process (JSON)."""
    import numpy as np

    from catsdogs.preprocessing import prepare_image
    from training.keras_classifier import load_classifier

    classifier = load_classifier(model, runtime)
    encoded = [path.read_bytes() for path in pick_photos(photos, count)]
    sizes = [int(size) for size in batch_sizes.split(",")]
    classifier.warm_up(sizes)
    results, single_ms = {}, []
    for size in sizes:
        images, started, position = 0, time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            batch = [encoded[(position + i) % len(encoded)] for i in range(size)]
            position += size
            call_started = time.perf_counter()
            pixels = np.stack([prepare_image(data, classifier.image_size).pixels for data in batch])
            classifier.answer_pixels(pixels)
            if size == 1:
                single_ms.append((time.perf_counter() - call_started) * 1000)
            images += size
        results[size] = images / (time.perf_counter() - started)
    best = max(results, key=results.get)
    report = {
        "runtime": runtime,
        "model": classifier.source,
        "images_per_s_by_batch": results,
        "best_batch_size": best,
        "images_per_s": results[best],
        "single_image_ms": statistics.median(single_ms) if single_ms else None,
    }
    print(json.dumps(report))


def pool_limits(rounds: list[dict]) -> dict:
    """The mean of each batch size's images/s over rounds; the mean single-image latency."""
    by_batch = {
        size: statistics.mean(r["images_per_s_by_batch"][size] for r in rounds)
        for size in rounds[0]["images_per_s_by_batch"]
    }
    best = max(by_batch, key=by_batch.get)
    return {**rounds[0], "images_per_s_by_batch": by_batch, "best_batch_size": best,
            "images_per_s": by_batch[best], "rounds": len(rounds),
            "single_image_ms": statistics.mean(r["single_image_ms"] for r in rounds)}  # fmt: skip


def measure_limit(model: str, runtime: str, photos: Path, count: int, seconds: float) -> dict:
    options = {"--model": model, "--runtime": runtime, "--photos": photos, "--count": count,
               "--seconds": seconds}  # fmt: skip
    command = [sys.executable, __file__, "limit", *(str(x) for kv in options.items() for x in kv)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


# ---- 2./3. servers under load --------------------------------------------------------------


def multipart_body(data: bytes) -> bytes:
    """One photo as multipart form data with BOUNDARY, encoded once by httpx."""
    request = httpx.Request(
        "POST", "http://localhost/", files={"file": ("photo.jpg", data, "image/jpeg")},
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )  # fmt: skip
    return request.read()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


async def run_load(
    url: str, bodies: list[bytes], concurrency: int, seconds: float, headers: dict = MULTIPART
) -> dict:
    """concurrency clients, each posting photos back to back until seconds have passed."""
    import aiohttp

    latencies, statuses = [], {}
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post() -> None:
            body = bodies[next(counter) % len(bodies)]
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as error:
                status = type(error).__name__
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append((time.perf_counter() - started) * 1000)

        async def client(deadline: float) -> None:
            while time.perf_counter() < deadline:
                await post()

        # Warm-up: connections open and every client has been answered once.
        await asyncio.gather(*(post() for _ in range(concurrency)))
        latencies.clear()
        statuses.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, "latencies_ms": latencies, "statuses": statuses,
            "seconds": wall}  # fmt: skip


def summarize(windows: list[dict]) -> dict:
    """One row from the windows of one server and concurrency, pooled over rounds: images/s
    over their total time, percentiles over all their answers."""
    ok = sorted(latency for window in windows for latency in window["latencies_ms"])
    statuses: dict[str, int] = {}
    for window in windows:
        for status, count in window["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    wall = sum(window["seconds"] for window in windows)

    def percentile(q: float) -> float | None:
        return ok[min(len(ok) - 1, int(q * len(ok)))] if ok else None

    return {
        "concurrency": windows[0]["concurrency"],
        "requests": sum(statuses.values()),
        "ok": len(ok),
        "errors": sum(statuses.values()) - len(ok),
        "statuses": statuses,
        "seconds": wall,
        "images_per_s": len(ok) / wall,
        "images_per_s_by_round": [len(w["latencies_ms"]) / w["seconds"] for w in windows],
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
    }


@contextlib.contextmanager
def running_server(command: list[str], env: dict, port: int, log_path: Path):
    """A server process (its own process group), once it is ready on port; stopped after.
    Ready: /readyz for BentoML (200 once the model is warm), /health for the baselines."""
    with log_path.open("a") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        probe = "/readyz" if "bentoml" in command[0] else "/health"
        wait_ready(f"http://127.0.0.1:{port}{probe}", process, timeout=180)
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def serve_and_load(
    name: str, command: list[str], env: dict, port: int, bodies, levels, seconds, log_path: Path
) -> list[dict]:
    """Start a server, load it at each concurrency, stop it: one raw window per level."""
    with running_server(command, env, port, log_path):
        windows = []
        for concurrency in levels:
            url = f"http://127.0.0.1:{port}/predict"
            window = asyncio.run(run_load(url, bodies, concurrency, seconds))
            typer.echo(f"  {name} c={concurrency}: {format_row(summarize([window]))}")
            windows.append(window)
        return windows


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def format_row(row: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.0f}"

    latency = ", ".join(f"{q} {ms(row[f'{q}_ms'])} ms" for q in ("p50", "p95", "p99"))
    return f"{row['images_per_s']:.1f} img/s, {latency}, errors {row['errors']}"


# ---- the report ----------------------------------------------------------------------------

TARGETS = {
    "service / ONNX limit at c=32 and c=64": 0.9,
    "service / naive baseline at c=32 and c=64": 4.0,
    "service / compiled TensorFlow limit at c=32 and c=64": 1.5,
    "c=1 p50 / in-process single-image latency (at most)": 1.3,
    "c=32 p99 / p50 (at most)": 2.5,
}


def compare(result: dict) -> list[dict]:
    service = {row["concurrency"]: row for row in result["service"]}
    baseline = {row["concurrency"]: row for row in result["baseline_keras"]}
    onnx, keras = result["limit_onnx"], result["limit_keras"]
    saturated = [c for c in (32, 64) if c in service]

    def worst(values):
        return min(values) if values else None

    checks = [
        ("service / ONNX limit at c=32 and c=64", ">=",
         worst([service[c]["images_per_s"] / onnx["images_per_s"] for c in saturated])),
        ("service / naive baseline at c=32 and c=64", ">=",
         worst([service[c]["images_per_s"] / baseline[c]["images_per_s"] for c in saturated
                if baseline.get(c, {}).get("images_per_s")])),
        ("service / compiled TensorFlow limit at c=32 and c=64", ">=",
         worst([service[c]["images_per_s"] / keras["images_per_s"] for c in saturated])),
        ("c=1 p50 / in-process single-image latency (at most)", "<=",
         service[1]["p50_ms"] / onnx["single_image_ms"] if 1 in service else None),
        ("c=32 p99 / p50 (at most)", "<=",
         service[32]["p99_ms"] / service[32]["p50_ms"] if 32 in service else None),
    ]  # fmt: skip
    rows = []
    for name, direction, ratio in checks:
        target = TARGETS[name]
        met = ratio is not None and (ratio >= target if direction == ">=" else ratio <= target)
        rows.append({"check": name, "ratio": ratio, "target": target, "met": met})
    errors = sum(service[c]["errors"] for c in saturated)
    rows.append({"check": "errors at c=32 and c=64", "ratio": errors, "target": 0,
                 "met": errors == 0})  # fmt: skip
    return rows


def server_names(result: dict) -> list[str]:
    """Rows measured over HTTP, in run order: service configurations, then baselines."""
    names = (*result.get("service_configs", {}), "baseline_keras", "baseline_onnx")
    return [name for name in names if name in result]


def write_markdown(result: dict, path: Path) -> None:
    onnx, keras = result["limit_onnx"], result["limit_keras"]
    lines = [
        f"# Serving benchmark ({result['date']})",
        "",
        f"Model `{result['model']}`, {result['photo_count']} real photos from "
        f"`{result['photos']}`, {result['rounds']} rounds of {result['seconds_per_level']:.0f} s "
        f"per level, pooled, "
        f"{result['cpus']} CPUs. Images/s count answered requests (one photo each).",
        "",
        "## In-process limit (decode + preprocess + model call)",
        "",
        "| runtime | " + " | ".join(f"bs {b}" for b in onnx["images_per_s_by_batch"]) +
        " | best | single image |",
        "| --- | " + " | ".join("---:" for _ in onnx["images_per_s_by_batch"]) + " | ---: | ---: |",
    ]  # fmt: skip
    for limit_row in (onnx, keras):
        by_batch = " | ".join(f"{v:.1f}" for v in limit_row["images_per_s_by_batch"].values())
        lines.append(
            f"| {limit_row['runtime']} | {by_batch} | {limit_row['images_per_s']:.1f} img/s "
            f"(bs {limit_row['best_batch_size']}) | {limit_row['single_image_ms']:.1f} ms |"
        )
    lines += ["", "## Over HTTP", "",
              "| server | concurrency | images/s | p50 ms | p95 ms | p99 ms | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in server_names(result):
        for row in result[name]:
            cells = [f"{row[k]:.0f}" if row[k] is not None else "-"
                     for k in ("p50_ms", "p95_ms", "p99_ms")]  # fmt: skip
            lines.append(f"| {name} | {row['concurrency']} | {row['images_per_s']:.1f} | "
                         f"{' | '.join(cells)} | {row['errors']} |")  # fmt: skip
    lines += ["", "## Ratios against the targets", "",
              "| check | measured | target | met |", "| --- | ---: | ---: | --- |"]  # fmt: skip
    for check in result["checks"]:
        ratio = "-" if check["ratio"] is None else f"{check['ratio']:.2f}"
        lines.append(f"| {check['check']} | {ratio} | {check['target']} | "
                     f"{'yes' if check['met'] else 'NO'} |")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, p95) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ("o-", "D-", "s--", "^:", "v-.")
    for name, style in zip(server_names(result), styles, strict=False):
        rows = result[name]
        levels = [row["concurrency"] for row in rows]
        throughput.plot(levels, [row["images_per_s"] for row in rows], style, label=name)
        p95.plot(levels, [row["p95_ms"] or float("nan") for row in rows], style, label=name)
    for key, colour in (("limit_onnx", "tab:green"), ("limit_keras", "tab:red")):
        limit_row = result[key]
        throughput.axhline(limit_row["images_per_s"], color=colour, linewidth=0.8,
                           label=f"in-process limit ({limit_row['runtime']})")  # fmt: skip
    for axis, label in ((throughput, "images/s"), (p95, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    p95.set_yscale("log")
    throughput.legend(fontsize=8)
    figure.suptitle(f"catsdogs serving benchmark, {result['model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


@app.command()
def run(
    model: Annotated[str, typer.Option(help="BentoML tag of a trained model.")] = "catsdogs:latest",
    photos: Annotated[Path, typer.Option(help="Folder of real photos.")] = Path("data/sample"),
    count: Annotated[int, typer.Option(help="Photos used, spread over the folder.")] = 256,
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts.")] = "1,8,32,64",
    seconds: Annotated[float, typer.Option(help="Timed seconds per concurrency.")] = 10.0,
    rounds: Annotated[int, typer.Option(help="Times every part is measured, pooled.")] = 2,
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/benchmark"),
    port: Annotated[int, typer.Option(help="First of two loopback ports.")] = 3471,
    onnx_baseline: Annotated[bool, typer.Option(help="Also run the baseline on ONNX.")] = True,
    service_configs: Annotated[
        str,
        typer.Option(
            help="Service settings to run, WORKERSxTHREADS (0: the service's default), comma-"
            "separated; the first is the one checked against the targets."
        ),
    ] = "0x0,2x1",
) -> None:
    """Run the whole benchmark and write serving.json, serving.md and serving.png."""
    import bentoml

    tag = str(bentoml.models.get(model).tag)  # pin "latest" for every part of the run
    levels = [int(level) for level in concurrency.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    photo_paths = pick_photos(photos, count)
    bodies = [multipart_body(path.read_bytes()) for path in photo_paths]
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": tag, "photos": str(photos),
              "photo_count": len(photo_paths), "seconds_per_level": seconds, "rounds": rounds,
              "cpus": available_cores()}  # fmt: skip

    env = {"CATSDOGS_MODEL_TAG": tag, "TF_CPP_MIN_LOG_LEVEL": "2", "BENTOML_DO_NOT_TRACK": "true"}
    bentoml_serve = [str(Path(sys.executable).parent / "bentoml"), "serve", "service:CatsDogs",
                     "--port", str(port)]  # fmt: skip
    servers = []  # (name, command, environment, port)
    for index, config in enumerate(service_configs.split(",")):
        workers, threads = (int(part) for part in config.split("x"))
        name = "service" if index == 0 else f"service_{config}"
        result.setdefault("service_configs", {})[name] = {"workers": workers, "threads": threads}
        settings = {"CATSDOGS_WORKERS": str(workers), "CATSDOGS_THREADS": str(threads)}
        servers.append((name, bentoml_serve, {**env, **settings}, port))
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", "benchmarks", "baseline_app:app",
               "--port", str(port + 1), "--log-level", "warning"]  # fmt: skip
    for runtime in ("keras", "onnx") if onnx_baseline else ("keras",):
        servers.append((f"baseline_{runtime}", uvicorn, {**env, "BASELINE_RUNTIME": runtime},
                        port + 1))  # fmt: skip

    # Every part once per round, in the same order: the machine's speed drifts, so pooling
    # rounds spreads the drift over all rows instead of letting it favour one.
    limits: dict[str, list[dict]] = {"onnx": [], "keras": []}
    windows: dict[str, list[list[dict]]] = {name: [] for name, *_ in servers}
    for round_number in range(1, rounds + 1):
        typer.echo(f"round {round_number}/{rounds}: model {tag}, {len(photo_paths)} photos")
        for runtime in limits:
            measured = measure_limit(tag, runtime, photos, count, seconds / 2)
            limits[runtime].append(measured)
            typer.echo(f"  limit {runtime}: {measured['images_per_s']:.1f} img/s at best, "
                       f"{measured['single_image_ms']:.1f} ms for a single image")  # fmt: skip
        for name, command, environment, server_port in servers:
            log_path = out / f"{name}.log"
            windows[name].append(
                serve_and_load(
                    name, command, environment, server_port, bodies, levels, seconds, log_path
                )
            )
    for runtime, rounds_measured in limits.items():
        result[f"limit_{runtime}"] = pool_limits(rounds_measured)
    for name, by_round in windows.items():
        result[name] = [summarize(list(level)) for level in zip(*by_round, strict=True)]

    result["checks"] = compare(result)
    (out / "serving.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, out / "serving.md")
    plot(result, out / "serving.png")
    typer.echo((out / "serving.md").read_text())


if __name__ == "__main__":
    app()
