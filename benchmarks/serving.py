"""Serving benchmark: the in-process limit, the BentoML service and simple alternatives, one run.

    python benchmarks/serving.py run --model catsdogs:latest --photos ../shared/datasets/catsdogs

Same machine, same run, same real photos, same trained model:
  1. limit    - in one process, decode threads feeding model calls that run the previous batch
                meanwhile (a pipeline), at the best batch size and split of threads, for ONNX
                Runtime int8 (what the service runs), ONNX Runtime fp32 and compiled Keras;
                each call does what the service's does (the model, then the novelty scores),
                and the novelty scores' share of a call is measured too;
  2. service  - `bentoml serve service:CatsDogs` as shipped (int8), and at fp32, real uploads
                over HTTP at each concurrency;
  3. baseline - benchmarks/baseline_app.py, FastAPI calling the model once per request:
                compiled Keras, and ONNX Runtime fp32 and int8 (what batching and the lean
                request path buy over the same runtime).
Writes <out>/serving.json, <out>/serving.md and <out>/serving.png, and prints the table and
the ratios against the targets. Loopback only; every server is stopped by its PID.
"""

import asyncio
import contextlib
import itertools
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "catsdogsbenchmark"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
# (runtime, precision) of each in-process limit; the first is what the service runs.
LIMITS = (("onnx", "int8"), ("onnx", "fp32"), ("keras", "fp32"))
app = typer.Typer(add_completion=False, no_args_is_help=False)


def pick_photos(folder: Path, count: int) -> list[Path]:
    """count photos spread evenly over the sorted folder (both classes), deterministically."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise typer.BadParameter(f"no photos under {folder}")
    step = max(1, len(paths) // count)
    return paths[::step][:count]


# ---- 1. the in-process limit ---------------------------------------------------------------


def pipelined(classifier, encoded: list[bytes], batch: int, decoders: int, seconds: float):
    """Images/s of `decoders` threads decoding photos while one thread answers batches of
    `batch` (model call and novelty scores), as the service overlaps them."""
    import numpy as np

    from catsdogs.preprocessing import prepare_image

    decoded: queue.Queue = queue.Queue(maxsize=4 * batch)
    stop = threading.Event()

    def decode(start: int) -> None:
        for index in itertools.count(start, decoders):
            if stop.is_set():
                return
            pixels = prepare_image(encoded[index % len(encoded)], classifier.image_size).pixels
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    decoded.put(pixels, timeout=0.1)
                    break

    workers = [threading.Thread(target=decode, args=(k,), daemon=True) for k in range(decoders)]
    for worker in workers:
        worker.start()
    try:
        classifier.answer_pixels(np.stack([decoded.get() for _ in range(batch)]))  # warm
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            classifier.answer_pixels(np.stack([decoded.get() for _ in range(batch)]))
            images += batch
        return images / (time.perf_counter() - started)
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def novelty_share(classifier, encoded: list[bytes], batch: int, repeats: int = 5) -> float:
    """The time the answers take (novelty scores, thresholds, labels) over the model's own
    call, each timed on its own: a difference of two timed calls would be mostly noise."""
    import numpy as np

    from catsdogs.preprocessing import prepare_image

    pixels = np.stack([prepare_image(encoded[i % len(encoded)], classifier.image_size).pixels
                       for i in range(batch)])  # fmt: skip

    def median_s(call) -> float:
        call()
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
        return statistics.median(timings)

    output = classifier.predict_pixels(pixels)
    model = median_s(lambda: classifier.predict_pixels(pixels))
    answers = median_s(lambda: classifier.open_world.answer(
        output.probabilities, output.embeddings, classifier.class_names))  # fmt: skip
    return answers / model


@app.command()
def limit(
    model: Annotated[str, typer.Option()] = "catsdogs:latest",
    runtime: Annotated[str, typer.Option()] = "onnx",
    precision: Annotated[str, typer.Option()] = "int8",
    photos: Annotated[Path, typer.Option()] = Path("data/sample"),
    count: Annotated[int, typer.Option()] = 256,
    batch_sizes: Annotated[str, typer.Option()] = "1,8,16,32",
    seconds: Annotated[float, typer.Option(help="Timed seconds per setting.")] = 3.0,
) -> None:
    """The pipelined in-process limit of one runtime and precision, in this process (JSON)."""
    import numpy as np

    from catsdogs.config import available_cores
    from catsdogs.preprocessing import prepare_image
    from training.keras_classifier import load_classifier

    encoded = [path.read_bytes() for path in pick_photos(photos, count)]
    sizes = [int(size) for size in batch_sizes.split(",")]
    cores = available_cores()
    # Keras' thread pools are fixed once TensorFlow starts: all cores, the only split tried.
    model_threads = [cores] if runtime == "keras" else sorted({1, cores})
    rates: dict[str, float] = {}
    for threads in model_threads:
        if runtime == "keras":
            classifier = load_classifier(model, "keras")
        else:
            from catsdogs.model_loader import load_bento_classifier

            classifier = load_bento_classifier(model, threads, precision)
        classifier.warm_up(sizes)
        for decoders, size in itertools.product(sorted({1, cores}), sizes):
            key = f"{threads} model x {decoders} decode threads, batch {size}"
            rates[key] = pipelined(classifier, encoded, size, decoders, seconds)
    single = []
    for data in encoded[:40]:  # one photo at a time: decode, then answer (all threads)
        started = time.perf_counter()
        classifier.answer_pixels(prepare_image(data, classifier.image_size).pixels[np.newaxis])
        single.append((time.perf_counter() - started) * 1000)
    best = max(rates, key=rates.get)
    report = {
        "runtime": runtime, "precision": precision, "model": classifier.source,
        "images_per_s_by_setting": rates, "best_setting": best, "images_per_s": rates[best],
        "single_image_ms": statistics.median(single),
        "novelty_share_by_batch": {size: novelty_share(classifier, encoded, size)
                                   for size in sizes},
    }  # fmt: skip
    print(json.dumps(report))


def pool_limits(rounds: list[dict]) -> dict:
    """The mean of each setting's images/s over rounds, the best of those; the mean
    single-image latency and novelty shares."""
    by_setting = {
        setting: statistics.mean(r["images_per_s_by_setting"][setting] for r in rounds)
        for setting in rounds[0]["images_per_s_by_setting"]
    }
    best = max(by_setting, key=by_setting.get)
    shares = {
        size: statistics.mean(r["novelty_share_by_batch"][size] for r in rounds)
        for size in rounds[0]["novelty_share_by_batch"]
    }
    return {**rounds[0], "images_per_s_by_setting": by_setting, "best_setting": best,
            "images_per_s": by_setting[best], "rounds": len(rounds),
            "single_image_ms": statistics.mean(r["single_image_ms"] for r in rounds),
            "novelty_share_by_batch": shares}  # fmt: skip


def measure_limit(
    model: str, runtime: str, precision: str, photos: Path, count: int, seconds: float
) -> dict:
    options = {"--model": model, "--runtime": runtime, "--precision": precision,
               "--photos": photos, "--count": count, "--seconds": seconds}  # fmt: skip
    command = [sys.executable, __file__, "limit", *(str(x) for kv in options.items() for x in kv)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


# ---- 2./3. servers under load --------------------------------------------------------------


def multipart_body(data: bytes) -> bytes:
    """One photo as multipart form data with BOUNDARY, encoded once by httpx."""
    request = httpx.Request(
        "POST", "http://localhost/", files={"file": ("photo.jpg", data, "image/jpeg")},
        headers=MULTIPART,
    )  # fmt: skip
    return request.read()


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
    name: str,
    command: list[str],
    env: dict,
    port: int,
    bodies,
    levels,
    seconds,
    log_path: Path,
    headers: dict = MULTIPART,
) -> list[dict]:
    """Start a server, load it at each concurrency, stop it: one raw window per level."""
    with running_server(command, env, port, log_path):
        windows = []
        for concurrency in levels:
            url = f"http://127.0.0.1:{port}/predict"
            window = asyncio.run(run_load(url, bodies, concurrency, seconds, headers))
            typer.echo(f"  {name} c={concurrency}: {format_row(summarize([window]))}")
            windows.append(window)
        return windows


def wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def format_row(row: dict) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.0f}"

    latency = ", ".join(f"{q} {ms(row[f'{q}_ms'])} ms" for q in ("p50", "p95", "p99"))
    return f"{row['images_per_s']:.1f} img/s, {latency}, errors {row['errors']}"


# ---- the report ----------------------------------------------------------------------------

# What the service as shipped (int8) must reach at 32 and 64 clients, and at 1 client.
TARGETS = {
    "service / FastAPI + compiled Keras": (">=", 4.0),
    "service / FastAPI + ONNX int8 (same precision)": (">=", 1.2),
    "service / pipelined int8 limit": (">=", 0.9),
    "c=1 p50 / in-process single-image latency": ("<=", 1.3),
    "c=32 p99 / p50": ("<=", 2.5),
    "novelty scores' share of a model call": ("<=", 0.10),
}
SERVERS = ("service", "service_fp32", "baseline_keras", "baseline_onnx_fp32",
           "baseline_onnx_int8")  # fmt: skip


def compare(result: dict) -> list[dict]:
    service = {row["concurrency"]: row for row in result["service"]}
    saturated = [c for c in (32, 64) if c in service]
    limit = result["limit_onnx_int8"]

    def worst_ratio(baseline: str, direction: str) -> float | None:
        rows = {row["concurrency"]: row for row in result.get(baseline, [])}
        ratios = [service[c]["images_per_s"] / rows[c]["images_per_s"] for c in saturated
                  if rows.get(c, {}).get("images_per_s")]  # fmt: skip
        return (min if direction == ">=" else max)(ratios) if ratios else None

    ratios = {
        "service / FastAPI + compiled Keras": worst_ratio("baseline_keras", ">="),
        "service / FastAPI + ONNX int8 (same precision)": worst_ratio("baseline_onnx_int8", ">="),
        "service / pipelined int8 limit": min(
            (service[c]["images_per_s"] / limit["images_per_s"] for c in saturated), default=None
        ),
        "c=1 p50 / in-process single-image latency": (
            service[1]["p50_ms"] / limit["single_image_ms"] if 1 in service else None
        ),
        "c=32 p99 / p50": service[32]["p99_ms"] / service[32]["p50_ms"] if 32 in service else None,
        "novelty scores' share of a model call": max(limit["novelty_share_by_batch"].values()),
    }
    rows = []
    for name, (direction, target) in TARGETS.items():
        ratio = ratios[name]
        met = ratio is not None and (ratio >= target if direction == ">=" else ratio <= target)
        rows.append({"check": name, "direction": direction, "ratio": ratio, "target": target,
                     "met": met})  # fmt: skip
    errors = sum(service[c]["errors"] for c in saturated)
    rows.append({"check": "errors at c=32 and c=64", "direction": "<=", "ratio": errors,
                 "target": 0, "met": errors == 0})  # fmt: skip
    return rows


def server_names(result: dict) -> list[str]:
    return [name for name in SERVERS if name in result]


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        f"# Serving benchmark ({result['date']})",
        "",
        f"Model `{result['model']}`, {result['photo_count']} real photos from "
        f"`{result['photos']}`, {result['rounds']} rounds of {result['seconds_per_level']:.0f} s "
        f"per level, pooled, {result['cpus']} CPUs. Images/s count answered requests (one "
        f"photo each). The service as shipped serves int8.",
        "",
        "## In-process limit (decode threads feeding model calls, pipelined)",
        "",
        "| runtime | precision | best | best setting | single image | novelty share by batch |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for runtime, precision in LIMITS:
        row = result[f"limit_{runtime}_{precision}"]
        shares = ", ".join(f"bs {size}: {share:.1%}"
                           for size, share in row["novelty_share_by_batch"].items())  # fmt: skip
        rate, single = f"{row['images_per_s']:.1f} img/s", f"{row['single_image_ms']:.1f} ms"
        lines.append(f"| {runtime} | {precision} | {rate} | {row['best_setting']} | {single} | "
                     f"{shares} |")  # fmt: skip
    lines += ["", "## Over HTTP", "",
              "| server | concurrency | images/s | p50 ms | p95 ms | p99 ms | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in server_names(result):
        for row in result[name]:
            cells = [f"{row[k]:.0f}" if row[k] is not None else "-"
                     for k in ("p50_ms", "p95_ms", "p99_ms")]  # fmt: skip
            lines.append(f"| {name} | {row['concurrency']} | {row['images_per_s']:.1f} | "
                         f"{' | '.join(cells)} | {row['errors']} |")  # fmt: skip
    lines += ["", "## Ratios against the targets (service as shipped; worst of c=32 and c=64)",
              "", "| check | measured | target | met |", "| --- | ---: | ---: | --- |"]  # fmt: skip
    for check in result["checks"]:
        ratio = "-" if check["ratio"] is None else f"{check['ratio']:.2f}"
        target = f"{check['direction']} {check['target']}"
        lines.append(f"| {check['check']} | {ratio} | {target} | "
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
    for (runtime, precision), colour in zip(LIMITS, ("tab:green", "tab:olive", "tab:red"),
                                            strict=True):  # fmt: skip
        limit_row = result[f"limit_{runtime}_{precision}"]
        throughput.axhline(limit_row["images_per_s"], color=colour, linewidth=0.8,
                           label=f"limit ({runtime} {precision})")  # fmt: skip
    for axis, label in ((throughput, "images/s"), (p95, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    p95.set_yscale("log")
    throughput.legend(fontsize=7)
    figure.suptitle(f"catsdogs serving benchmark, {result['model']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
    api_key: Annotated[str, typer.Option(help="Run the service with this API key on.")] = "",
) -> None:
    """Run the whole benchmark and write serving.json, serving.md and serving.png."""
    import bentoml

    from catsdogs.config import available_cores

    tag = str(bentoml.models.get(model).tag)  # pin "latest" for every part of the run
    levels = [int(level) for level in concurrency.split(",")]
    out.mkdir(parents=True, exist_ok=True)
    photo_paths = pick_photos(photos, count)
    bodies = [multipart_body(path.read_bytes()) for path in photo_paths]
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "model": tag, "photos": str(photos),
              "photo_count": len(photo_paths), "seconds_per_level": seconds, "rounds": rounds,
              "cpus": available_cores()}  # fmt: skip

    env = {"CATSDOGS_MODEL_TAG": tag, "TF_CPP_MIN_LOG_LEVEL": "2", "BENTOML_DO_NOT_TRACK": "true"}
    headers = dict(MULTIPART)
    if api_key:  # the baselines have no keys: the service's check is part of what it costs
        env["CATSDOGS_API_KEYS"] = api_key
        headers["Authorization"] = f"Bearer {api_key}"
    bentoml_serve = [str(Path(sys.executable).parent / "bentoml"), "serve", "service:CatsDogs",
                     "--port", str(port)]  # fmt: skip
    uvicorn = [sys.executable, "-m", "uvicorn", "--app-dir", "benchmarks", "baseline_app:app",
               "--port", str(port + 1), "--log-level", "warning"]  # fmt: skip
    servers = [  # (name, command, environment, port)
        ("service", bentoml_serve, env, port),
        ("service_fp32", bentoml_serve, {**env, "CATSDOGS_PRECISION": "fp32"}, port),
        ("baseline_keras", uvicorn, {**env, "BASELINE_RUNTIME": "keras"}, port + 1),
        ("baseline_onnx_fp32", uvicorn,
         {**env, "BASELINE_RUNTIME": "onnx", "BASELINE_PRECISION": "fp32"}, port + 1),
        ("baseline_onnx_int8", uvicorn,
         {**env, "BASELINE_RUNTIME": "onnx", "BASELINE_PRECISION": "int8"}, port + 1),
    ]  # fmt: skip

    # Every part once per round, in the same order: the machine's speed drifts, so pooling
    # rounds spreads the drift over all rows instead of letting it favour one.
    limits: dict[str, list[dict]] = {f"limit_{r}_{p}": [] for r, p in LIMITS}
    windows: dict[str, list[list[dict]]] = {name: [] for name, *_ in servers}
    for round_number in range(1, rounds + 1):
        typer.echo(f"round {round_number}/{rounds}: model {tag}, {len(photo_paths)} photos")
        for runtime, precision in LIMITS:
            measured = measure_limit(tag, runtime, precision, photos, count, seconds / 3)
            limits[f"limit_{runtime}_{precision}"].append(measured)
            typer.echo(f"  limit {runtime} {precision}: {measured['images_per_s']:.1f} img/s "
                       f"({measured['best_setting']}), single image "
                       f"{measured['single_image_ms']:.1f} ms")  # fmt: skip
        for name, command, environment, server_port in servers:
            log_path = out / f"{name}.log"
            windows[name].append(
                serve_and_load(
                    name,
                    command,
                    environment,
                    server_port,
                    bodies,
                    levels,
                    seconds,
                    log_path,
                    headers,
                )
            )
    for name, rounds_measured in limits.items():
        result[name] = pool_limits(rounds_measured)
    for name, by_round in windows.items():
        result[name] = [summarize(list(level)) for level in zip(*by_round, strict=True)]

    result["checks"] = compare(result)
    (out / "serving.json").write_text(json.dumps(result, indent=2))
    write_markdown(result, out / "serving.md")
    plot(result, out / "serving.png")
    typer.echo((out / "serving.md").read_text())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    app()
