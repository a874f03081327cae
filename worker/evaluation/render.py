"""The evaluation document as files: ``report.json`` (the source), ``metrics.csv`` and a
self-contained ``report.html`` (plots embedded as PNG data URIs, no network, no scripts).

Every number in the HTML tables carries the JSON path it came from (``data-key``), so a test, or
a sceptical reader, can check that the page and the JSON agree.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from worker.evaluation.document import ExperimentResult, ExperimentRow, ModelSection, ReadersSection, Report, Summary
from worker.evaluation.reader_comparison import ReaderComparison

DIGITS = 4
CsvRow = list[str | float | int | None]


def fmt(value: float | None) -> str:
    """How every number is printed in the HTML (the test parses it back with the same rule)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{float(value):.{DIGITS}f}"


def _cell(value: float | None, key: str) -> str:
    return f'<td data-key="{html.escape(key)}">{fmt(value)}</td>'


def _png(figure: Figure) -> str:
    """The figure as an embedded PNG (drawn without pyplot, so no global figure state is kept)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _numbers(values: Sequence[float | None]) -> list[float]:
    """A JSON series for plotting: null (a non-finite value) back to NaN, which leaves a gap."""
    return [float("nan") if v is None else v for v in values]


def _roc_plot(summary: Summary, roc: Mapping[str, Mapping[str, Sequence[float | None]]], title: str) -> str:
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    for label, curve in roc.items():
        auc = summary["metrics"]["roc_auc_ovr"][label]["estimate"]
        fpr = _numbers(curve["fpr"])
        line, = axis.plot(fpr, _numbers(curve["tpr"]), label=f"{label} (AUC {fmt(auc)})")
        axis.fill_between(fpr, _numbers(curve["tpr_low"]), _numbers(curve["tpr_high"]), alpha=0.15,
                          color=line.get_color())
    axis.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {title} (95% bands)")
    axis.legend(fontsize=7, loc="lower right")
    return _png(figure)


def _confusion_plot(summary: Summary, title: str) -> str:
    cm = summary["confusion_matrix"]
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    axis.imshow(cm["matrix"], cmap="Blues")
    for r, row in enumerate(cm["matrix"]):
        for c, value in enumerate(row):
            axis.text(c, r, str(value), ha="center", va="center", fontsize=8)
    columns = cm.get("columns", cm["labels"])
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(len(cm["labels"])), cm["labels"], fontsize=7)
    axis.set(xlabel="predicted", ylabel="truth", title=f"Confusion matrix, {title}")
    return _png(figure)


def _reliability_plot(edges: Sequence[float], accuracy: Sequence[float | None], ece: float | None,
                      title: str) -> str:
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.subplots()
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    axis.bar(centres, _numbers(accuracy), width=edges[1] - edges[0], edgecolor="k", alpha=0.6, label="accuracy")
    axis.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="perfect calibration")
    axis.set(xlabel="confidence of the top class", ylabel="accuracy",
             title=f"Reliability, {title} (ECE {fmt(ece)})")
    axis.legend(fontsize=7)
    return _png(figure)


def _plots(summary: Summary, title: str) -> str:
    parts = []
    roc = summary.get("roc") or {}
    if roc:
        parts.append(_roc_plot(summary, roc, title))
    parts.append(_confusion_plot(summary, title))
    reliability = summary.get("reliability")
    if reliability:
        parts.append(_reliability_plot(reliability["bin_edges"], reliability["accuracy"], reliability["ece"][0], title))
    return "<div class='plots'>" + "".join(parts) + "</div>"


def _metrics_table(summary: Summary, key: str) -> str:
    metrics = summary["metrics"]
    rows = ["<tr><th>metric</th><th>class</th><th>n</th><th>estimate</th><th>95% low</th><th>95% high</th>"
            "<th>interval</th></tr>"]
    for name, value in metrics.items():
        entries = [("", value, f"{key}/metrics/{name}")] if "estimate" in value else \
            [(label, v, f"{key}/metrics/{name}/{label}") for label, v in value.items()]
        for label, interval, path in entries:
            support = _cell(interval["n"], f"{path}/n") if "n" in interval else "<td></td>"
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(label)}</td>{support}"
                        + "".join(_cell(interval[part], f"{path}/{part}") for part in ("estimate", "low", "high"))
                        + f"<td>{html.escape(interval.get('ci_method', ''))}</td></tr>")
    return f"<p>{summary['lesions']} lesions of {summary['patients']} patients.</p><table>{''.join(rows)}</table>"


def _comparison_table(entries: list[ReaderComparison], key: str) -> str:
    """The model against each reader group (MRMC) and each reader (accuracy), Holm-adjusted."""
    head = ("<tr><th>group</th><th>reader</th><th>class</th><th>metric</th><th>model</th><th>readers</th>"
            "<th>n</th><th>difference</th><th>95% low</th><th>95% high</th><th>interval</th><th>p</th><th>p (Holm)</th>"
            "<th>method</th></tr>")
    rows = [head]
    for k, entry in enumerate(entries):
        path = f"{key}/{k}"
        values = (("model", entry["model"]), ("readers", entry["readers"]), ("difference", entry["difference"]),
                  ("ci95/0", entry["ci95"][0]), ("ci95/1", entry["ci95"][1]), ("p_value", entry["p_value"]),
                  ("p_adjusted", entry["p_adjusted"]))
        cells = [_cell(value, f"{path}/{name}") for name, value in values]
        cells.insert(2, _cell(entry["n"], f"{path}/n") if "n" in entry else "<td></td>")
        cells.insert(6, f"<td>{html.escape(entry.get('ci_method', ''))}</td>")
        text = [entry["reader_group"], entry["reader"] or "all", entry["class"] or "", entry["metric"]]
        rows.append("<tr>" + "".join(f"<td>{html.escape(t)}</td>" for t in text) + "".join(cells)
                    + f"<td>{html.escape(entry['method'])}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _counts(title: str, counts: dict[str, int]) -> str:
    if not counts:
        return f"<p>{html.escape(title)}: none.</p>"
    items = "".join(f"<li>{html.escape(reason)}: {n}</li>" for reason, n in counts.items())
    return f"<p>{html.escape(title)}:</p><ul>{items}</ul>"


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
         "margin:.5em 0}td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
         "td:first-child,td:nth-child(2){text-align:left}.plots img{margin:4px}"
         ".resubstitution{background:#b00;color:#fff;font-weight:bold;padding:.5em;margin:.5em 0}"
         "@media print{.resubstitution{position:fixed;top:0;left:0;right:0}}")


RESUBSTITUTION_BANNER = ("<div class='resubstitution'>RESUBSTITUTION: lesions of the model's own training "
                         "patients are included (--include-training). These figures are not a validation and "
                         "overstate performance.</div>")


def _training_html(section: ModelSection, key: str) -> str:
    if section.get("resubstitution"):
        return (f"{RESUBSTITUTION_BANNER}<p>Training lesions included: "
                f"<span data-key='{key}/training_lesions_included'>{section.get('training_lesions_included')}"
                "</span>.</p>")
    return (f"<p>Lesions of the model's training patients left out: "
            f"<span data-key='{key}/excluded_training_lesions'>{section.get('excluded_training_lesions', 0)}</span> "
            f"({html.escape(section.get('training_check', 'not checked'))}).</p>")


def _coverage_html(section: ModelSection, key: str) -> str:
    cov = section.get("coverage")
    if not cov:
        return ""
    return ("<table><tr><th>answered</th><th>abstained</th><th>accuracy (answered)</th>"
            "<th>accuracy (abstention = wrong)</th></tr><tr>"
            + "".join(_cell(value, f"{key}/coverage/{name}") for name, value in (
                ("answered", cov["answered"]), ("abstained", cov["abstained"]),
                ("accuracy_answered", cov["accuracy_answered"]),
                ("accuracy_abstain_as_wrong", cov["accuracy_abstain_as_wrong"])))
            + "</tr></table>")


CALIBRATION_COLUMNS = ("mean_predicted", "observed_rate", "ece", "n")


def _calibration_html(section: ModelSection, key: str) -> str:
    calibration = section.get("calibration")
    if not calibration:
        return ""
    rows = ["<tr><th>class</th>" + "".join(f"<th>{c}</th>" for c in CALIBRATION_COLUMNS) + "</tr>"]
    for k, entry in enumerate(calibration["per_class"]):
        values = (entry["mean_predicted"], entry["observed_rate"], entry["ece"], entry["n"])
        rows.append(f"<tr><td>{html.escape(entry['class'])}</td>"
                    + "".join(_cell(v, f"{key}/calibration/per_class/{k}/{c}")
                              for c, v in zip(CALIBRATION_COLUMNS, values, strict=True)) + "</tr>")
    return (f"<h3>Calibration per class</h3><p>{html.escape(calibration['definition'])}.</p>"
            f"<table>{''.join(rows)}</table>")


def _model_html(section: ModelSection, key: str) -> list[str]:
    out = [f"<h2>Model {html.escape(section['model'])} ({html.escape(section['task'])})</h2>",
           _training_html(section, key),
           _counts("Predictions left out", section["left_out"]),
           f"<p>Indeterminate predictions: {section['indeterminate']}.</p>"]
    summary = section["summary"]
    if summary is None:
        out.append("<p>No prediction could be joined to the ground truth.</p>")
        return out
    out.append("<h3>Coverage</h3>" + _coverage_html(section, key))
    out.append(_metrics_table(summary, f"{key}/summary"))
    out.append(_calibration_html(section, key))
    out.append(_plots(summary, "model"))
    baseline = section["majority_baseline"]
    out.append(f"<h3>Majority-class baseline (always {html.escape(baseline['class'])})</h3>")
    out.append(_metrics_table(baseline["summary"], f"{key}/majority_baseline/summary"))
    readers = section.get("readers")
    if readers:
        out.extend(_readers_html(readers, key))
    comparison = section.get("reader_comparison")
    if comparison:
        out.append("<h3>Model against readers</h3><p>Difference = model minus readers. Reader groups: "
                   "multi-reader multi-case analysis of each reader's own figure of merit on the lesions "
                   "all of the group read (never an averaged reader). Readers: accuracy on the lesions each "
                   "read. p-values Holm-adjusted within each of the two families.</p>")
        out.append(_comparison_table(comparison, f"{key}/reader_comparison"))
    return out


def _readers_html(readers: ReadersSection, key: str) -> list[str]:
    out = [f"<h3>Readers</h3><p>{html.escape(readers['score_rule'])}</p>"]
    for group, info in readers["groups"].items():
        gkey = f"{key}/readers/groups/{group}"
        out.append(f"<h4>Group {html.escape(group)}: {len(info['readers'])} reader(s), {info['reads']} reads</h4>")
        out.append(_metrics_table(info["summary"], f"{gkey}/summary"))
        out.append("<p>The model on the same lesions:</p>")
        out.append(_metrics_table(info["model_on_same_cases"], f"{gkey}/model_on_same_cases"))
    for reader_id, entry in readers["readers"].items():
        out.append(f"<h4>Reader {html.escape(reader_id)} ({html.escape(entry['group'])})</h4>")
        out.append(_metrics_table(entry["summary"], f"{key}/readers/readers/{reader_id}/summary"))
    return out


def render_html(document: Report) -> str:
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>triphase evaluation</title>",
           f"<style>{STYLE}</style></head><body>",
           RESUBSTITUTION_BANNER if document.get("resubstitution") else "",
           "<h1>triphase evaluation</h1>",
           "<p>Produced by an algorithm; research use only, not for diagnostic use. Intervals: 95% bootstrap "
           f"over patients ({document['bootstrap']['n_resamples']} resamples, seed {document['bootstrap']['seed']}), "
           "BCa where defined, else percentile (column 'interval'). "
           f"{html.escape(document['label_metrics_note'])}.</p>"]
    for state, info in document["skipped_studies"].items():
        out.append(_counts(f"Studies {state} ({info['studies']})", info["reasons"]))
    for m, section in enumerate(document["models"]):
        out.extend(_model_html(section, f"models/{m}"))
    out.append("</body></html>")
    return "\n".join(out)


def _metric_rows(model: str, subject: str, summary: Summary) -> Iterator[CsvRow]:
    for name, value in summary["metrics"].items():
        entries = [("", value)] if "estimate" in value else list(value.items())
        for label, interval in entries:
            yield [model, subject, name, label, interval["estimate"], interval["low"], interval["high"],
                   interval["resamples"], summary["lesions"], summary["patients"], interval.get("ci_method"),
                   interval.get("n")]


def _reader_rows(model: str, readers: ReadersSection) -> Iterator[CsvRow]:
    for group, info in readers["groups"].items():
        yield from _metric_rows(model, f"group:{group}", info["summary"])
        yield from _metric_rows(model, f"model_on_cases_of:{group}", info["model_on_same_cases"])
    for reader_id, reader in readers["readers"].items():
        yield from _metric_rows(model, f"reader:{reader_id}", reader["summary"])


def _csv_rows(document: Report) -> Iterator[CsvRow]:
    for section in document["models"]:
        summary = section["summary"]
        if summary is None:
            continue
        model = section["model"]
        yield from _metric_rows(model, "model", summary)
        yield from _metric_rows(model, "majority_baseline", section["majority_baseline"]["summary"])
        readers = section.get("readers")
        if readers:
            yield from _reader_rows(model, readers)
        for entry in section.get("reader_comparison", []):
            subject = f"comparison:{entry['reader_group']}:{entry['reader'] or 'all'}"
            yield [model, subject, f"{entry['metric']}_difference", entry["class"] or "", entry["difference"],
                   entry["ci95"][0], entry["ci95"][1], "", entry["lesions"], entry["patients"], entry.get("ci_method"),
                   entry.get("n")]


EXPERIMENT_COLUMNS = ("accuracy", "roc_auc", "hand_till", "balanced_accuracy", "macro_f1", "cohen_kappa")


def _experiment_rows(result: ExperimentResult) -> str:
    head = "<tr><th>arm</th>" + "".join(f"<th>{c}</th><th>95% CI</th><th>seed SD</th>" for c in EXPERIMENT_COLUMNS)
    head += "".join(f"<th>{c} vs {html.escape(result['reference'])}</th><th>95% CI</th><th>p (Holm)</th>"
                    for c in ("accuracy", "roc_auc")) + "</tr>"
    rows = [head]
    for k, row in enumerate(result["rows"]):
        cells = [f"<td>{html.escape(str(row['arm']))}</td>"]
        for name in EXPERIMENT_COLUMNS:
            cells += [_cell(_float(row.get(name)), f"rows/{k}/{name}"),
                      _cell(_float(row.get(f"{name}_low")), f"rows/{k}/{name}_low")
                      + _cell(_float(row.get(f"{name}_high")), f"rows/{k}/{name}_high"),
                      _cell(_float(row.get(f"{name}_seed_sd")), f"rows/{k}/{name}_seed_sd")]
        for name in ("accuracy", "roc_auc"):
            cells += [_cell(_float(row.get(f"{name}_difference")), f"rows/{k}/{name}_difference"),
                      _cell(_float(row.get(f"{name}_difference_low")), f"rows/{k}/{name}_difference_low")
                      + _cell(_float(row.get(f"{name}_difference_high")), f"rows/{k}/{name}_difference_high"),
                      _cell(_float(row.get(f"{name}_p_holm")), f"rows/{k}/{name}_p_holm")]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{''.join(rows)}</table>"


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _number(row: ExperimentRow, key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _accuracy_bars(rows: Sequence[ExperimentRow]) -> tuple[list[float], list[list[float]]]:
    """Accuracy of each row and its error bars (below, above) for the 95% interval."""
    y = [_number(r, "accuracy") for r in rows]
    errors = [[_number(r, "accuracy") - _number(r, "accuracy_low") for r in rows],
              [_number(r, "accuracy_high") - _number(r, "accuracy") for r in rows]]
    return y, errors


def plot_experiment(result: ExperimentResult) -> Figure:
    """Accuracy with its interval per arm (drawn without pyplot: no global figure state)."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    rows = result["rows"]
    if result["experiment"] == "misregistration":
        for row, style in zip((r for r in rows if r["transform"] == "none"), ("k--", "r:"), strict=False):
            axis.axhline(_number(row, "accuracy"), color=style[0], linestyle=style[1:], label=str(row["arm"]))
        for transform in dict.fromkeys(str(r["transform"]) for r in rows if r["transform"] != "none"):
            mine = [r for r in rows if r["transform"] == transform]
            y, errors = _accuracy_bars(mine)
            axis.errorbar([_number(r, "degree") for r in mine], y, yerr=errors, marker="o", capsize=3,
                          label=f"{transform} ({result.get('units', {}).get(transform, '')})")
        axis.set(xlabel="degree (mm for shifts, degrees otherwise)", ylabel="accuracy, mean over seeds (95% CI)",
                 title="Misregistration")
        axis.legend(fontsize=7)
    else:
        names = [f"{r['architecture']}\n{r['mode']}" for r in rows]
        y, errors = _accuracy_bars(rows)
        axis.bar(range(len(rows)), y, yerr=errors, capsize=3)
        axis.set_xticks(range(len(rows)), names, fontsize=7)
        axis.set(ylabel="accuracy, mean over seeds (95% CI)", title="Architectures")
    return figure


def render_experiment_html(result: ExperimentResult) -> str:
    """An experiment's page: what was done, the table (each number tagged with its JSON path), the plot."""
    units = "; ".join(f"{k}: {v}" for k, v in result.get("units", {}).items())
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>triphase experiment</title>",
        f"<style>{STYLE}</style></head><body><h1>Experiment: {html.escape(result['experiment'])}</h1>",
        "<p>Produced by an algorithm; research use only, not for diagnostic use.</p>",
        f"<p>{result['lesions']} lesions of {result['patients']} patients; {result['folds']} outer patient-level "
        f"folds; seeds {', '.join(map(str, result['seeds']))}; reference arm {html.escape(result['reference'])}. "
        f"{html.escape(result['test'])}.{(' Units: ' + html.escape(units) + '.') if units else ''}</p>",
        _experiment_rows(result), "<div class='plots'>" + _png(plot_experiment(result)) + "</div>",
        "</body></html>"])


CSV_HEADER = ["model", "subject", "metric", "class", "estimate", "low", "high", "resamples", "lesions", "patients",
              "ci_method", "n"]


def write_report(document: Report, out_dir: Path) -> dict[str, Path]:
    """report.json, metrics.csv and report.html in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "csv": out_dir / "metrics.csv", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        writer.writerows(["" if v is None else v for v in row] for row in _csv_rows(document))
    paths["html"].write_text(render_html(document), encoding="utf-8")
    return paths
