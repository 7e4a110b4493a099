"""Latency of one model call per batch size, in-process, on real photos.

    python benchmarks/model_latency.py --model catsdogs:latest --data data/sample

Used to choose the adaptive-batching settings in service.py (max_batch_size, max_latency_ms):
prints a Markdown table of median / p90 milliseconds per call and images per second.
"""

import statistics
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from catsdogs.models import load_classifier
from catsdogs.preprocessing import read_image


def main(
    model: Annotated[str, typer.Option(help="BentoML tag or MLflow URI.")] = "catsdogs:latest",
    data: Annotated[Path, typer.Option(help="Folder of photos.")] = Path("data/sample"),
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated.")] = "1,2,4,8,16,32,64",
    repeats: Annotated[int, typer.Option(help="Timed calls per batch size.")] = 10,
) -> None:
    classifier = load_classifier(model)
    paths = sorted(data.rglob("*.jpg"))
    sizes = [int(size) for size in batch_sizes.split(",")]
    pixels = np.stack(
        [read_image(path, classifier.image_size).pixels for path in paths[: max(sizes)]]
    )
    classifier.warm_up(sizes)
    typer.echo(f"model {classifier.source}, {len(pixels)} real photos from {data}\n")
    typer.echo("| batch | median ms | p90 ms | ms per image | images/s |")
    typer.echo("| ---: | ---: | ---: | ---: | ---: |")
    for size in sizes:
        batch = np.resize(pixels, (size, *pixels.shape[1:]))  # repeats photos if too few
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            classifier.predict_pixels(batch)
            timings.append((time.perf_counter() - started) * 1000)
        median = statistics.median(timings)
        p90 = statistics.quantiles(timings, n=10)[-1]
        typer.echo(
            f"| {size} | {median:.1f} | {p90:.1f} | {median / size:.1f} | "
            f"{size / median * 1000:.1f} |"
        )


if __name__ == "__main__":
    typer.run(main)
