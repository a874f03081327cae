"""Point metrics agree with scikit-learn; the fast bootstrap path agrees with the point metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from models.evaluation import metrics as m
from models.evaluation.baseline import majority_predictions, majority_scores

LABELS = ["a", "b", "c", "d"]


def random_case(seed: int, n: int = 60, labels: list[str] = LABELS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(labels, n).astype(object)
    p = np.where(rng.uniform(size=n) < 0.5, y, rng.choice(labels, n)).astype(object)
    s = rng.dirichlet(np.ones(len(labels)), n)
    return y, p, s


CASES = {
    "random": random_case(0),
    "random-small": random_case(1, n=7),
    "perfect": (np.array(list("abcdabcd"), dtype=object),) * 2 + (np.eye(4)[[0, 1, 2, 3] * 2],),
    "inverted": (np.array(list("aabb"), dtype=object), np.array(list("bbaa"), dtype=object),
                 np.array([[0.1, 0.9, 0, 0], [0.2, 0.8, 0, 0], [0.9, 0.1, 0, 0], [0.7, 0.3, 0, 0]])),
    "single-class": (np.array(list("aaaa"), dtype=object), np.array(list("abaa"), dtype=object),
                     np.full((4, 4), 0.25)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_label_metrics_match_sklearn(name: str) -> None:
    y, p, _ = CASES[name]
    present = [c for c in LABELS if c in set(y)]
    assert m.accuracy_score(y, p, labels=LABELS) == pytest.approx(sk.accuracy_score(y, p))
    assert np.array_equal(m.confusion_matrix(y, p, labels=LABELS), sk.confusion_matrix(y, p, labels=LABELS))
    assert m.macro_f1_score(y, p, labels=LABELS) == pytest.approx(
        sk.f1_score(y, p, labels=present, average="macro", zero_division=0))
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected_bacc = sk.balanced_accuracy_score(y, p)
    assert m.balanced_accuracy_score(y, p, labels=LABELS) == pytest.approx(expected_bacc)
    recall = m.recall_per_class(y, p, labels=LABELS)
    sk_recall = sk.recall_score(y, p, labels=LABELS, average=None, zero_division=0)
    for k, label in enumerate(LABELS):
        if label in present:
            assert recall[k] == pytest.approx(sk_recall[k])
        else:
            assert np.isnan(recall[k])  # absent class: undefined, not 0 and not 1
    cm = sk.confusion_matrix(y, p, labels=LABELS)  # one-vs-rest specificity from the confusion matrix
    specificity = m.specificity_per_class(y, p, labels=LABELS)
    for k, label in enumerate(LABELS):
        negatives = int(np.sum(y != label))
        if negatives:
            assert specificity[k] == pytest.approx(1 - (cm[:, k].sum() - cm[k, k]) / negatives)
        else:
            assert np.isnan(specificity[k])
    kappa = m.cohen_kappa_score(y, p, labels=LABELS)
    if name == "single-class" or len(set(y) | set(p)) == 1:
        assert np.isnan(kappa) or kappa == pytest.approx(sk.cohen_kappa_score(y, p, labels=LABELS))
    else:
        assert kappa == pytest.approx(sk.cohen_kappa_score(y, p, labels=LABELS))


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_equals_sklearn_path(name: str) -> None:
    y, p, s = CASES[name]
    fast = m.metrics_from_codes(m.encode(y, LABELS), m.encode(p, LABELS), len(LABELS))
    for key, function in (("accuracy", m.accuracy_score), ("balanced_accuracy", m.balanced_accuracy_score),
                          ("macro_f1", m.macro_f1_score), ("cohen_kappa", m.cohen_kappa_score)):
        np.testing.assert_allclose(fast[key], function(y, p, labels=LABELS), equal_nan=True)
    for key, function in (("recall", m.recall_per_class), ("specificity", m.specificity_per_class),
                          ("precision", m.precision_per_class), ("f1", m.f1_per_class)):
        np.testing.assert_allclose(fast[key], function(y, p, labels=LABELS), equal_nan=True)
    np.testing.assert_allclose(m.fast_auc_ovr(m.encode(y, LABELS), s), m.roc_auc_ovr(y, s, labels=LABELS),
                               equal_nan=True)


def test_indeterminate_predictions_count_as_wrong_like_sklearn() -> None:
    y = np.array(list("aabbcc"), dtype=object)
    p = np.array(["a", "indeterminate", "b", "b", "indeterminate", "c"], dtype=object)
    labels = ["a", "b", "c"]
    fast = m.metrics_from_codes(m.encode(y, labels), m.encode(p, labels), 3)
    assert fast["accuracy"] == pytest.approx(sk.accuracy_score(y, p)) == pytest.approx(4 / 6)
    np.testing.assert_allclose(fast["recall"], sk.recall_score(y, p, labels=labels, average=None))
    np.testing.assert_allclose(fast["f1"], sk.f1_score(y, p, labels=labels, average=None))
    # An abstention calls no class: a true negative for the other classes (the b and c lesions'
    # abstentions for a, c and a, b), though a miss for its own class's recall.
    np.testing.assert_allclose(fast["specificity"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(m.specificity_per_class(y, p, labels=labels), fast["specificity"])
    called_b = np.array(["b", "indeterminate", "b", "b", "indeterminate", "c"], dtype=object)
    np.testing.assert_allclose(m.specificity_per_class(y, called_b, labels=labels), [1.0, 3 / 4, 1.0])
    assert fast["cohen_kappa"] == pytest.approx(sk.cohen_kappa_score(y, p, labels=labels))


def test_auc_matches_sklearn_on_random_scores_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.choice(["neg", "pos"], 80).astype(object)
    s = np.round(rng.uniform(size=80), 1)  # many ties
    scores = np.c_[1 - s, s]
    assert m.roc_auc_score(y, scores, labels=["neg", "pos"]) == pytest.approx(sk.roc_auc_score(y == "pos", s))
    y4, _, s4 = random_case(4)
    assert m.roc_auc_score(y4, s4, labels=LABELS) == pytest.approx(
        sk.roc_auc_score(y4, s4, labels=LABELS, multi_class="ovr", average="macro"))


def test_perfect_and_inverted_extremes() -> None:
    y, p, s = CASES["perfect"]
    assert m.accuracy_score(y, p) == 1.0 and m.cohen_kappa_score(y, p) == 1.0
    assert m.roc_auc_score(y, s, labels=LABELS) == 1.0
    y, p, s = CASES["inverted"]
    assert m.accuracy_score(y, p) == 0.0 and m.cohen_kappa_score(y, p) == pytest.approx(-1.0)
    assert m.roc_auc_ovr(y, s, labels=LABELS)[0] == 0.0
    assert np.isnan(m.roc_auc_ovr(y, s, labels=LABELS)[2])  # class c absent


@pytest.mark.parametrize("metric", [x for x in m.METRICS if not x.needs_scores], ids=lambda x: x.name)
def test_every_label_metric_is_invariant_to_sample_order_and_label_names(metric: m.PointMetric) -> None:
    y, p, _ = random_case(5)
    order = np.random.default_rng(6).permutation(y.size)
    base = np.asarray(metric.function(y, p, labels=LABELS))
    np.testing.assert_allclose(metric.function(y[order], p[order], labels=LABELS), base, equal_nan=True)
    rename = {"a": "w", "b": "x", "c": "y", "d": "z"}
    renamed = np.asarray(metric.function(np.array([rename[v] for v in y], dtype=object),
                                         np.array([rename[v] for v in p], dtype=object),
                                         labels=[rename[c] for c in LABELS]))
    np.testing.assert_allclose(renamed, base, equal_nan=True)


def test_shared_input_check_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="equal length"):
        m.accuracy_score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no samples"):
        m.accuracy_score([], [])
    with pytest.raises(ValueError, match="outside"):
        m.macro_f1_score(["a", "zz"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(ValueError, match="n_samples, n_labels"):
        m.roc_auc_ovr(["a", "b"], np.ones((2, 3)), labels=["a", "b"])


def test_majority_baseline() -> None:
    y = np.array(["moderate"] * 5 + ["well"] * 3 + ["poor"] * 2, dtype=object)
    predictions = majority_predictions(y)
    assert set(predictions) == {"moderate"}
    assert m.accuracy_score(y, predictions) == 0.5
    assert m.balanced_accuracy_score(y, predictions) == pytest.approx(1 / 3)
    scores = majority_scores(y, labels=["moderate", "poor", "well"])
    assert np.allclose(m.roc_auc_ovr(y, scores, labels=["moderate", "poor", "well"]), 0.5)
    tie = np.array(["b", "a", "b", "a"], dtype=object)
    assert majority_predictions(tie)[0] == "a"  # ties: first in sorted order, reproducible
    assert majority_predictions(tie, y_reference=["b", "b", "a"])[0] == "b"


HISTOLOGY = ["early_hcc", "well_hcc", "moderate_hcc", "poor_hcc", "non_hcc_cc"]


def _histology(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 5, n)
    logits = rng.normal(size=(n, 5))
    logits[np.arange(n), codes] += 1.2
    logits[np.arange(n), np.clip(codes + 1, 0, 3)] += 0.5  # confusions with the next grade
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.asarray(HISTOLOGY, dtype=object)
    return labels[codes], labels[probabilities.argmax(axis=1)], probabilities


def test_hand_till_auc_is_scikit_learns_one_vs_one() -> None:
    from sklearn.metrics import roc_auc_score as sk_auc

    y, _, p = _histology(300, seed=1)
    order = np.argsort(HISTOLOGY)
    expected = sk_auc(y, p[:, order], multi_class="ovo", labels=sorted(HISTOLOGY))
    assert m.hand_till_auc(y, p, labels=HISTOLOGY) == pytest.approx(expected)
    assert m.fast_hand_till(m.encode(y, HISTOLOGY), p) == pytest.approx(expected)
    assert m.hand_till_auc(y, p, labels=HISTOLOGY) != pytest.approx(m.roc_auc_score(y, p, labels=HISTOLOGY))


def test_quadratic_kappa_on_the_grade_scale_is_scikit_learns() -> None:
    from sklearn.metrics import cohen_kappa_score

    y, pred, _ = _histology(300, seed=2)
    scale = m.grade_scale(HISTOLOGY)
    assert scale == ["early_hcc", "well_hcc", "moderate_hcc", "poor_hcc"]  # non_hcc_cc is not a grade
    keep = np.isin(y, scale) & np.isin(pred, scale)
    expected = cohen_kappa_score(y[keep], pred[keep], labels=scale, weights="quadratic")
    kappa, used = m.quadratic_kappa(y, pred, scale=scale)
    assert used == int(keep.sum()) < y.size and kappa == pytest.approx(expected)
    fast = m.fast_quadratic_kappa(m.encode(y, HISTOLOGY), m.encode(pred, HISTOLOGY), m.encode(scale, HISTOLOGY))
    assert fast == pytest.approx(expected)
    assert kappa != pytest.approx(cohen_kappa_score(y[keep], pred[keep]))


def test_summary_names_both_aucs_both_kappas_and_missing_classes() -> None:
    from models.evaluation.summary import BootstrapSettings, summarise

    y, pred, p = _histology(120, seed=3)
    y[:2] = "early_hcc"
    y[2:] = np.where(y[2:] == "early_hcc", "well_hcc", y[2:])  # early HCC: 2 lesions, often not drawn
    ids = np.array([f"P{i // 2}" for i in range(y.size)], dtype=object)
    summary = summarise(y, pred, ids, labels=HISTOLOGY, y_score=p, settings=BootstrapSettings(n_resamples=200),
                        scale=m.grade_scale(HISTOLOGY), curves=False)
    metrics = summary["metrics"]
    assert metrics["auc"]["macro_ovr"] == metrics["roc_auc"]
    assert metrics["auc"]["hand_till"]["estimate"] == pytest.approx(m.hand_till_auc(y, p, labels=HISTOLOGY))
    assert metrics["kappa"]["unweighted"] == metrics["cohen_kappa"]
    assert metrics["kappa"]["quadratic"]["estimate"] == pytest.approx(
        m.quadratic_kappa(y, pred, scale=m.grade_scale(HISTOLOGY))[0])
    assert summary["kappa_scale"]["order"][0] == "early_hcc"
    assert 20 < summary["resamples_lacking_class"]["early_hcc"] < 100  # (1 - 1/60)^60 ~ 0.37 of 200
    assert summary["resamples_lacking_class"]["well_hcc"] == 0
    assert summary["support"]["early_hcc"] == 2
