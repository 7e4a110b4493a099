"""The cross-validation benchmark's folds and arithmetic, on tiny synthetic arrays (no model).
(The benchmark itself is run by hand: benchmarks/CROSSVAL.md.)"""

import hashlib
import importlib.util

import numpy as np
import pytest

from helpers import ROOT

spec = importlib.util.spec_from_file_location("crossval", ROOT / "benchmarks/crossval.py")
crossval = importlib.util.module_from_spec(spec)
spec.loader.exec_module(crossval)


def fake_hashes(count: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}photo{i}".encode()).hexdigest() for i in range(count)]


def test_folds_are_stratified_disjoint_and_cover_every_sample():
    labels = np.array([0] * 53 + [1] * 47)
    folds = crossval.assign_folds(fake_hashes(100), labels, 10)
    assert sorted(np.unique(folds)) == list(range(10))  # one fold per sample: disjoint, all
    for fold in range(10):
        counts = np.bincount(labels[folds == fold], minlength=2)
        assert 5 <= counts[0] <= 6 and 4 <= counts[1] <= 5  # each label within one of its share
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 2


def test_folds_depend_on_contents_alone():
    hashes, labels = fake_hashes(60), np.array([0, 1] * 30)
    folds = crossval.assign_folds(hashes, labels, 5)
    assert np.array_equal(folds, crossval.assign_folds(hashes, labels, 5))
    order = np.random.default_rng(0).permutation(60)
    shuffled = crossval.assign_folds([hashes[i] for i in order], labels[order], 5)
    assert np.array_equal(shuffled, folds[order])  # the same file lands in the same fold
    other = crossval.assign_folds(fake_hashes(60, salt="other"), labels, 5)
    assert not np.array_equal(other, folds)


def test_fold_parts_split_train_validation_and_test():
    folds = crossval.assign_folds(fake_hashes(40), np.array([0, 1] * 20), 4)
    seen_as_test = []
    for test_fold in range(4):
        parts = crossval.fold_parts(folds, test_fold, 4)
        together = np.concatenate(list(parts.values()))
        assert sorted(together) == list(range(40))  # disjoint, and together all of the data
        assert set(folds[parts["test"]]) == {test_fold}
        assert set(folds[parts["validation"]]) == {(test_fold + 1) % 4}
        seen_as_test += list(parts["test"])
    assert sorted(seen_as_test) == list(range(40))  # every sample is tested exactly once


def test_log_loss_from_logits_is_exact_and_stable():
    labels = np.array([1, 0, 1, 0])
    logits = np.array([2.0, -1.0, -0.5, 800.0])
    probabilities = 1 / (1 + np.exp(-logits[:3]))
    expected_first_three = -np.log([probabilities[0], 1 - probabilities[1], probabilities[2]])
    assert crossval.log_loss(logits, labels) == pytest.approx(
        (expected_first_three.sum() + 800.0) / 4
    )  # a confident mistake costs its logit, not a clipped constant


def test_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    temperature = crossval.fit_temperature(3 * true_logits, labels)
    assert temperature == pytest.approx(3, rel=0.1)


def test_score_fold_counts_errors_and_applies_each_temperature():
    test_logits, test_labels = np.array([3.0, -2.0, 1.0, -4.0]), np.array([1, 0, 0, 0])
    scores = crossval.score_fold(
        test_logits,
        test_labels,
        validation_logits=np.array([5.0, -5.0, 5.0]),
        validation_labels=np.array([1, 0, 0]),
    )
    assert scores["count"] == 4 and scores["errors"] == 1 and scores["accuracy"] == 0.75
    assert scores["validation_errors"] == 1
    assert scores["temperature"] > 1  # one confident validation mistake: soften
    assert scores["log_loss_scaled"] == pytest.approx(
        crossval.log_loss(test_logits / scores["temperature"], test_labels)
    )
    assert "temperature_inner" not in scores  # only with out-of-fold logits

    # A validation fold without a mistake: the trainer's prior on log T keeps T near 1 (no
    # collapse towards 0); out-of-fold train logits give T from thousands of photos.
    rng = np.random.default_rng(1)
    inner_logits = rng.normal(0, 4, 2000)
    inner_labels = (rng.random(2000) < 1 / (1 + np.exp(-inner_logits))).astype(int)
    scores = crossval.score_fold(
        test_logits, test_labels, np.array([6.0, -6.0]), np.array([1, 0]),
        inner_logits, inner_labels,
    )  # fmt: skip
    assert 0.5 < scores["temperature"] < 1  # sharper, but held by the prior
    assert scores["temperature_inner"] == pytest.approx(1, rel=0.15)
    assert scores["log_loss_scaled_inner"] == pytest.approx(
        crossval.log_loss(test_logits / scores["temperature_inner"], test_labels)
    )


def test_summary_means_sample_sds_and_pooled_errors():
    rows = [
        {
            "count": 10,
            "errors": 1,
            "accuracy": 0.9,
            "log_loss": 0.2,
            "log_loss_scaled": 0.1,
            "temperature": 1.0,
            "fit_seconds": 2.0,
        },
        {
            "count": 12,
            "errors": 0,
            "accuracy": 1.0,
            "log_loss": 0.4,
            "log_loss_scaled": 0.3,
            "temperature": 2.0,
            "fit_seconds": 4.0,
        },
    ]
    summary = crossval.summarize(rows)
    assert summary["folds"] == 2 and summary["errors"] == 1 and summary["count"] == 22
    assert summary["pooled_accuracy"] == pytest.approx(21 / 22)  # not the mean of the folds
    assert summary["accuracy_mean"] == pytest.approx(0.95)
    assert summary["accuracy_sd"] == pytest.approx(np.std([0.9, 1.0], ddof=1))
    assert summary["log_loss_mean"] == pytest.approx(0.3)
    assert summary["log_loss_sd"] == pytest.approx(np.sqrt(0.02))
    assert summary["fit_seconds_mean"] == pytest.approx(3.0)
    assert (summary["temperature_min"], summary["temperature_max"]) == (1.0, 2.0)
    assert "log_loss_scaled_inner_mean" not in summary
    assert crossval.summarize(rows[:1])["accuracy_sd"] == 0.0

    for row, value in zip(rows, (0.05, 0.15), strict=True):
        row |= {"log_loss_scaled_inner": value, "temperature_inner": 1.0}
    assert crossval.summarize(rows)["log_loss_scaled_inner_mean"] == pytest.approx(0.1)


def test_candidate_names_and_serving_cost():
    tta = crossval.Candidate((320,), "logreg", flip_train=True, tta=True)
    assert tta.name == "320 logreg flip-train tta" and tta.backbone_passes == [320, 320]
    pair = crossval.Candidate((224, 320), "logreg")
    assert pair.name == "224+320 logreg" and pair.backbone_passes == [224, 320]
    assert crossval.Candidate((224,), "keras", label_smoothing=0.1).name == "224 keras ls 0.1"


def test_paired_differences_use_the_folds_both_have():
    reference = [{"fold": 0, "errors": 3}, {"fold": 1, "errors": 5}, {"fold": 2, "errors": 1}]
    rows = [{"fold": 0, "errors": 2}, {"fold": 2, "errors": 2}]  # e.g. fine-tuned on 2 folds
    mean, sd = crossval.paired(rows, reference, "errors")
    assert mean == pytest.approx(0.0) and sd == pytest.approx(np.std([-1, 1], ddof=1))
    assert crossval.paired(reference, reference, "errors") == (0.0, 0.0)
