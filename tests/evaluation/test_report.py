"""``triphase evaluate``: the report's numbers, its HTML (parsed) equal to its JSON, and the CLI."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from db.engine import Database
from db.migrate import upgrade
from db.repository import Repository
from models.evaluation import metrics as m
from models.evaluation.delong import delong_test
from models.evaluation.summary import BootstrapSettings
from tests.evaluation.conftest import CLASSES, MODEL, add_study, analyse
from worker.evaluation.cases import ModelCases
from worker.evaluation.imports import import_file
from worker.evaluation.render import fmt, write_report
from worker.evaluation.report import evaluate

SETTINGS = BootstrapSettings(n_resamples=200, seed=3)


class Cells(HTMLParser):
    """Numbers tagged with their JSON path, and whether the page holds scripts or remote resources."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, str] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "td" and values.get("data-key"):
            self._key = values["data-key"]
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag in ("script", "link") or (values.get("src") or "").startswith("http"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.cells[self._key] = self.cells.get(self._key, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None


def pointer(document: object, path: str) -> object:
    for part in path.split("/"):
        document = document[int(part)] if isinstance(document, list) else document[part]  # type: ignore[index]
    return document


def check_reader_comparison(comparison: list, cases: ModelCases, reads_csv: Path) -> None:
    # The model against R1 (group "general", one reader) on AUC of the positive class, from the reads
    # on disk and scikit-learn: the readers' figure is R1's own AUC, never an averaged reader's.
    [general] = [e for e in comparison if e["reader_group"] == "general" and e["reader"] is None]
    order = {key: k for k, key in enumerate(cases.keys())}
    reads = [r for r in csv.DictReader(reads_csv.open()) if r["reader_id"] == "R1"]
    rows = np.array([order[(r["study_uid"], r["lesion_id"])] for r in reads])
    positive_score = np.array([float(r["confidence"]) if r["label"] == "progressed_hcc" else 1 - float(r["confidence"])
                               for r in reads])
    truth = cases.y_true[rows] == "progressed_hcc"
    assert general["metric"] == "auc" and general["class"] == "progressed_hcc"
    assert general["readers"] == pytest.approx(roc_auc_score(truth, positive_score))
    assert general["model"] == pytest.approx(roc_auc_score(truth, cases.scores[rows, 1]))
    assert general["difference"] == pytest.approx(general["model"] - general["readers"])
    assert general["n"] == int(truth.sum()) and general["ci_method"] == "normal"  # one reader: readers fixed
    # One reader's AUC against the model's: DeLong's test, its variance clustered by patient.
    delong = delong_test(truth, cases.scores[rows, 1], positive_score, clusters=cases.patient_ids[rows])
    assert "DeLong" in general["method"] and general["p_value"] == pytest.approx(delong.p_value)
    half_width = 1.959963985 * delong.difference / delong.z
    assert general["ci95"] == pytest.approx([delong.difference - half_width, delong.difference + half_width])
    [abdominal] = [e for e in comparison if e["reader_group"] == "abdominal" and e["reader"] is None]
    assert abdominal["per_reader"].keys() == {"R2", "R3"} and "Hillis" in abdominal["method"]
    assert abdominal["ci_method"] == "hillis_t"
    accuracy = [e for e in comparison if e["metric"] == "accuracy"]
    assert [e["reader"] for e in accuracy] == ["R2", "R3", "R1"]
    assert {e["ci_method"] for e in accuracy} <= {"bca", "percentile"}
    for entry in comparison:
        assert 0 <= entry["p_value"] <= entry["p_adjusted"] <= 1
        assert entry["ci95"][0] <= entry["difference"] <= entry["ci95"][1]


def intervals_and_class_tables(node: object, classes: set[str], path: str = "") -> tuple[list[str], list[str]]:
    """Walk the report: the paths of every bootstrap interval (a dict with low, high and resamples)
    and of every per-class table (a dict keyed by classes, or a list of entries with a class)."""
    intervals: list[str] = []
    tables: list[str] = []
    if isinstance(node, dict):
        if {"low", "high", "resamples"} <= node.keys():
            intervals.append(path)
        if node and set(node) <= classes:
            tables.append(path)
        items: list[tuple[str, object]] = list(node.items())
    elif isinstance(node, list):
        if any(isinstance(e, dict) and e.get("class") for e in node):
            tables.append(path)
        items = [(str(k), v) for k, v in enumerate(node)]
    else:
        return intervals, tables
    for key, value in items:
        found = intervals_and_class_tables(value, classes, f"{path}/{key}")
        intervals += found[0]
        tables += found[1]
    return intervals, tables


def check_methods_and_support(document: dict, classes: list[str]) -> None:
    """Every interval says how it was formed; every per-class table carries each class's support."""
    intervals, tables = intervals_and_class_tables(document, set(classes))
    assert len(intervals) > 50 and len(tables) > 10
    methods = {str(pointer(document, p[1:])["ci_method"]) for p in intervals}  # type: ignore[index]
    assert methods <= {"bca", "percentile"} and "bca" in methods
    for path in tables:
        table = pointer(document, path[1:])
        entries = table.values() if isinstance(table, dict) else [e for e in table if e.get("class")]  # type: ignore[union-attr]
        for entry in entries:
            if isinstance(entry, dict):
                assert isinstance(entry["n"], int), path
            else:  # class -> count (support itself, resamples lacking a class): support beside it
                assert "support" in pointer(document, path[1:].rpartition("/")[0]), path  # type: ignore[operator]
    for entry in document["reader_comparison"]:
        assert entry["ci_method"] in {"bca", "percentile", "hillis_t", "normal"}
        if entry["class"]:
            assert 0 < entry["n"] < entry["lesions"]


def test_report_numbers_html_and_csv(repository: Repository, database: Database, populated: Callable[..., dict],
                                     tmp_path: Path) -> None:
    files = populated()
    import_file("truth", files["labels"], repository)
    import_file("reads", files["reads"], repository)
    document = evaluate(database, settings=SETTINGS)
    assert document["skipped_studies"]["skipped"] == {"studies": 1, "reasons": {"incomplete: no arterial phase": 1}}
    [section] = document["models"]
    summary = section["summary"]
    assert section["model"] == MODEL and summary["lesions"] == files["lesions"] \
        and summary["patients"] == files["patients"]

    # The same numbers straight from scikit-learn on the stored rows.
    from worker.evaluation.cases import load_cases
    [cases] = load_cases(database)
    assert summary["metrics"]["accuracy"]["estimate"] == pytest.approx(m.accuracy_score(cases.y_true, cases.y_pred))
    assert summary["metrics"]["roc_auc"]["estimate"] == pytest.approx(
        m.roc_auc_score(cases.y_true, cases.scores, labels=CLASSES))
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "roc_auc"):
        interval = summary["metrics"][name]
        assert interval["low"] <= interval["estimate"] <= interval["high"], name
    assert section["indeterminate"] == int(np.sum(cases.y_pred == "indeterminate"))
    assert section["majority_baseline"]["summary"]["metrics"]["roc_auc"]["estimate"] == 0.5

    groups = section["readers"]["groups"]
    assert set(groups) == {"general", "abdominal"} and groups["abdominal"]["readers"] == ["R2", "R3"]
    assert groups["abdominal"]["reads"] == 2 * files["lesions"]
    check_reader_comparison(section["reader_comparison"], cases, files["reads"])
    check_methods_and_support(document, CLASSES)
    assert document["bootstrap"]["n_resamples"] == SETTINGS.n_resamples and "BCa" in document["bootstrap"]["interval"]
    for label in CLASSES:
        support = int(np.sum(cases.y_true == label))
        assert summary["metrics"]["recall"][label]["n"] == summary["support"][label] == support
        assert summary["roc"][label]["n"] == summary["support"][label]
        others = cases.y_true != label  # one-vs-rest specificity: an abstention calls no class
        assert summary["metrics"]["specificity"][label]["estimate"] == pytest.approx(
            np.mean(cases.y_pred[others] != label))

    paths = write_report(document, tmp_path / "report")
    assert json.loads(paths["json"].read_text()) == document
    parser = Cells()
    parser.feed(paths["html"].read_text())
    assert len(parser.cells) > 100 and not parser.external
    assert len(parser.images) >= 3 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    for key, text in parser.cells.items():
        assert text == fmt(pointer(document, key)), key
    assert parser.cells["models/0/summary/metrics/accuracy/estimate"] == fmt(summary["metrics"]["accuracy"]["estimate"])
    with paths["csv"].open() as handle:
        table = list(csv.DictReader(handle))
    accuracy = next(r for r in table if r["subject"] == "model" and r["metric"] == "accuracy")
    assert float(accuracy["estimate"]) == summary["metrics"]["accuracy"]["estimate"]
    assert {r["subject"] for r in table} >= {"model", "majority_baseline", "group:general", "reader:R2",
                                            "model_on_cases_of:abdominal", "comparison:general:all"}


def test_filters_latest_prediction_and_left_out(repository: Repository, database: Database, tmp_path: Path) -> None:
    job = add_study(repository, 0, patient="P0")
    probabilities = {"early_hcc": 0.8, "progressed_hcc": 0.2}
    lesions = [{"lesion_id": "L1", "label": "early_hcc", "probabilities": probabilities, "roi_source": "seg"},
               {"lesion_id": "L9", "label": "early_hcc", "probabilities": probabilities, "roi_source": "seg"}]
    analyse(repository, job, lesions)
    other = add_study(repository, 1, patient="P1")
    analyse(repository, other, [{"lesion_id": "L1", "label": "progressed_hcc", "roi_source": "seg",
                                 "probabilities": {"early_hcc": 0.1, "progressed_hcc": 0.9}}], model="ffff" * 16)
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,study_uid,accession_number,lesion_id,label\n"
                      "P0,1.2.826.0.1.3680043.8.498.1,,L1,early_hcc\nP1,1.2.826.0.1.3680043.8.498.2,,L1,early_hcc\n")
    import_file("truth", labels, repository)
    document = evaluate(database, settings=SETTINGS, readers=False)
    assert [s["model"][:4] for s in document["models"]] == ["a1b2", "ffff"]
    first = document["models"][0]
    assert first["left_out"] == {"no ground truth for the lesion": 1}
    assert first["summary"]["lesions"] == 1 and "readers" not in first
    only = evaluate(database, model="ffff", settings=SETTINGS)
    assert [s["model"][:4] for s in only["models"]] == ["ffff"]
    assert only["models"][0]["summary"]["metrics"]["accuracy"]["estimate"] == 0.0
    assert evaluate(database, task="ct-histology", settings=SETTINGS)["models"] == []


def test_cli_imports_and_evaluates(tmp_path: Path) -> None:
    from worker.cli import app

    database = Database(f"sqlite:///{tmp_path / 'cli.db'}")
    upgrade(database)
    repository = Repository(database)
    job = add_study(repository, 0, patient="P0")
    analyse(repository, job, [{"lesion_id": "L1", "label": "early_hcc", "roi_source": "seg",
                               "probabilities": {"early_hcc": 0.7, "progressed_hcc": 0.3}}])
    job = add_study(repository, 1, patient="P1")
    analyse(repository, job, [{"lesion_id": "L1", "label": "early_hcc", "roi_source": "seg",
                               "probabilities": {"early_hcc": 0.6, "progressed_hcc": 0.4}}])
    database.close()
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,study_uid,accession_number,lesion_id,label\n"
                      "P0,1.2.826.0.1.3680043.8.498.1,,L1,early_hcc\nP1,1.2.826.0.1.3680043.8.498.2,,L1,progressed_hcc\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,study_uid,accession_number,lesion_id,label\nP0,1.2.826.0.1.3680043.8.498.1,,L2,nope\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env |= {"TRIPHASE_DB__URL": f"sqlite:///{tmp_path / 'cli.db'}", "TRIPHASE_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    rejected = runner.invoke(app, ["truth", "import", str(bad)], env=env)
    assert rejected.exit_code == 1 and "line 2: unknown label 'nope'" in rejected.output
    done = runner.invoke(app, ["truth", "import", str(labels)], env=env)
    assert done.exit_code == 0, done.output
    report = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "out"), "--resamples", "50", "--json"], env=env)
    assert report.exit_code == 0, report.output
    document = json.loads(report.output)
    assert document["models"][0]["summary"]["metrics"]["accuracy"]["estimate"] == 0.5
    assert (tmp_path / "out" / "report.html").is_file()
    default = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "out2"), "--json"], env=env)
    assert default.exit_code == 0, default.output
    assert json.loads(default.output)["bootstrap"]["n_resamples"] == 2000


def test_since_and_until_select_predictions_by_time(repository: Repository, database: Database,
                                                     tmp_path: Path) -> None:
    import datetime as dt

    from db.schema import utcnow

    job = add_study(repository, 0, patient="P0")
    analyse(repository, job, [{"lesion_id": "L1", "label": "early_hcc", "roi_source": "seg",
                               "probabilities": {"early_hcc": 0.8, "progressed_hcc": 0.2}}])
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,study_uid,accession_number,lesion_id,label\n"
                      "P0,1.2.826.0.1.3680043.8.498.1,,L1,early_hcc\n")
    import_file("truth", labels, repository)
    now = utcnow()
    hour = dt.timedelta(hours=1)
    assert len(evaluate(database, since=now - hour, until=now + hour, settings=SETTINGS, readers=False)["models"]) == 1
    assert evaluate(database, since=now + hour, settings=SETTINGS, readers=False)["models"] == []
    assert evaluate(database, until=now - hour, settings=SETTINGS, readers=False)["models"] == []
    document = evaluate(database, since=now - hour, settings=SETTINGS, readers=False)
    assert document["filters"]["since"] == (now - hour).isoformat()
