"""Compare novelty detectors on a trained model's embeddings: which one tells cat and dog
photos from photos of anything else, with its threshold set on cat and dog photos alone.

    python benchmarks/novelty.py --model catsdogs:latest --photos ../shared/datasets/catsdogs \\
        --others data/nonpet

For each detector (kNN with several k, Mahalanobis) and threshold quantile: the threshold from
the validation split's scores, then the share of the test split called "other" (should be at
most 1 - quantile) and the share of the non-pet photos caught, plus the AUROC between test and
non-pet scores. The non-pet photos only ever measure; nothing is fitted or chosen on them.
Writes <out>/novelty.json and <out>/novelty.md.
"""

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

app = typer.Typer(add_completion=False)


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outside score is higher than an inside one), ties counting half."""
    higher = (outside[:, None] > inside[None, :]).mean()
    ties = (outside[:, None] == inside[None, :]).mean()
    return float(higher + ties / 2)


def compare(detectors: dict, validation, test, others, quantiles) -> list[dict]:
    from catsdogs.novelty import threshold_for

    rows = []
    for name, detector in detectors.items():
        scores = {split: detector.scores(e) for split, e in
                  (("validation", validation), ("test", test), ("others", others))}  # fmt: skip
        for quantile in quantiles:
            threshold = threshold_for(scores["validation"], quantile)
            rows.append({
                "detector": name, "quantile": quantile, "threshold": threshold,
                "test_other_rate": float(np.mean(scores["test"] > threshold)),
                "others_caught": float(np.mean(scores["others"] > threshold)),
                "auroc": auroc(scores["test"], scores["others"]),
            })  # fmt: skip
    return rows


@app.command()
def main(
    model: Annotated[str, typer.Option(help="BentoML tag of a trained model.")] = "catsdogs:latest",
    photos: Annotated[Path, typer.Option(help="The labelled photos it was trained on.")] = Path(
        "data/sample"
    ),
    others: Annotated[Path, typer.Option(help="Photos with no cat or dog.")] = Path("data/nonpet"),
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports/benchmark"),
) -> None:
    from catsdogs.model_loader import load_bento_classifier
    from catsdogs.novelty import KnnNovelty, MahalanobisNovelty
    from catsdogs.preprocessing import read_image
    from training.data import load_dataset

    classifier = load_bento_classifier(model)
    dataset = load_dataset(photos, classifier.image_size)
    embeddings, labels = {}, {}
    for split in ("train", "validation", "test"):
        pixels, labels[split], _ = dataset.select(split)
        embeddings[split] = classifier.predict_pixels(pixels).embeddings
    other_paths = sorted(p for p in others.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    other_pixels = np.stack([read_image(p, classifier.image_size).pixels for p in other_paths])
    other_embeddings = classifier.predict_pixels(other_pixels).embeddings
    detectors = {f"knn k={k}": KnnNovelty.fit(embeddings["train"], k) for k in (1, 5, 10, 20)}
    detectors["mahalanobis"] = MahalanobisNovelty.fit(embeddings["train"], labels["train"])
    rows = compare(detectors, embeddings["validation"], embeddings["test"], other_embeddings,
                   quantiles=(0.99, 0.995))  # fmt: skip
    report = {"model": classifier.source, "photos": str(photos), "others": str(others),
              "counts": {"train": len(labels["train"]), "validation": len(labels["validation"]),
                         "test": len(labels["test"]), "others": len(other_paths)},
              "rows": rows}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "novelty.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"Model `{classifier.source}`; thresholds from {len(labels['validation'])} validation "
        f"photos; {len(labels['test'])} test photos, {len(other_paths)} non-pet photos.", "",
        "| detector | quantile | test called other | non-pet caught | AUROC |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for row in rows:
        lines.append(f"| {row['detector']} | {row['quantile']} | {row['test_other_rate']:.1%} | "
                     f"{row['others_caught']:.1%} | {row['auroc']:.3f} |")  # fmt: skip
    (out / "novelty.md").write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    app()
