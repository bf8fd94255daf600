"""Self-contained HTML reports (one file, images inlined) rendered with Jinja2.

One report template serves every model family (:func:`render_report`): what the model
is, the conditions it was scored under (the model, its controls, its baselines) with
their metrics side by side, the training curves, cards of samples (input images, the
reference text, each condition's output and notes) and the run's parameters. A base
page, macros and helpers (metrics frame -> table, nested params -> rows) are shared by
the other pages (``render_page``).

Autoescaping is on for every template: generated text is model output and reference
stories come from scraped sources, so either may contain markup.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd

from multimodal_lab.reporting.figures import (
    image_data_uri,
    loss_curve_png,
    png_data_uri,
)

if TYPE_CHECKING:  # import only for annotations: evaluation must not depend on reporting
    from multimodal_lab.evaluation.harness import Evaluation

_BASE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.params td:first-child { font-family: ui-monospace, monospace; }
.note { color: #555; font-size: 0.9rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.7rem; background: #fff; }
.card.wide { grid-column: span 2; }
.card img.figure { max-width: 100%; }
.card img { width: 100%; max-width: 224px; display: block; margin-bottom: 0.5rem;
            image-rendering: pixelated; /* small scene images are shown enlarged, crisp */ }
.story { white-space: pre-wrap; margin: 0.2rem 0 0.6rem 0; }
.label { font-size: 0.78rem; text-transform: uppercase; color: #777; letter-spacing: 0.04em; }
.controls { display: grid; grid-template-columns: 1fr 1fr; gap: 0.6rem; background: #fafafa;
            padding: 0.4rem; border-radius: 4px; }
.pairs { font-family: ui-monospace, monospace; font-size: 0.85rem; }
.id { font-family: ui-monospace, monospace; font-size: 0.75rem; color: #999; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% if subtitle %}<p class="subtitle">{{ subtitle }}</p>{% endif %}
{% block content %}{% endblock %}
</body>
</html>
"""

_MACROS = """
{% macro metrics_table(table) -%}
<table class="metrics">
<thead><tr><th>{{ table.corner }}</th>{% for column in table.columns %}<th>{{ column }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}<tr><th>{{ row.name }}</th>{% for value in row.cells %}<td class="num">{{ value }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{%- endmacro %}

{% macro params_table(params) -%}
{% if params %}<table class="params"><thead><tr><th>parameter</th><th>value</th></tr></thead><tbody>
{% for key, value in params.items() %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="note">No parameters recorded.</p>{% endif %}
{%- endmacro %}

{% macro figure(uri, alt, missing="No data to plot.") -%}
{% if uri %}<img src="{{ uri }}" alt="{{ alt }}">{% else %}<p class="note">{{ missing }}</p>{% endif %}
{%- endmacro %}

{% macro key_values(values) -%}
<table class="params"><tbody>
{% for key, value in values.items() %}<tr><td>{{ key }}</td><td class="num">{{ value }}</td></tr>
{% endfor %}</tbody></table>
{%- endmacro %}
"""

_REPORT = """{% extends "base.html" %}
{% import "macros.html" as m %}
{% block content %}
{% if description %}<p>{{ description }}</p>{% endif %}
<h2>Metrics</h2>
<p class="note">Every condition runs on the same {{ split }} records (controls with the model's own
decoding; "decoding" rows are the model decoded another way). A model that uses its input scores
clearly above its controls, and above the baselines.</p>
<table class="conditions"><thead><tr><th>condition</th><th>kind</th><th>what it is</th></tr></thead><tbody>
{% for c in conditions %}<tr><td>{{ c.name }}</td><td>{{ c.kind }}</td><td>{{ c.description }}</td></tr>
{% endfor %}</tbody></table>
{{ m.metrics_table(metrics) }}
{% for note in notes %}<p class="note">{{ note }}</p>{% endfor %}
{% if headline %}<h3>Headline numbers</h3>{{ m.key_values(headline) }}{% endif %}

<h2>Training curves</h2>
{% for curve in loss_curves %}{% if curve.label %}<div class="label">{{ curve.label }}</div>{% endif %}
{{ m.figure(curve.uri, "training and validation loss", "No loss history was recorded.") }}
{% endfor %}

<h2>Samples ({{ split }})</h2>
{% if samples %}<div class="grid">
{% for s in samples %}
<div class="card{% if s.others or s.figures %} wide{% endif %}">
{% for uri in s.image_uris %}<img src="{{ uri }}" alt="input image {{ loop.index }} of {{ s.record_id }}">{% endfor %}
{% if s.output %}<div class="label">model</div><p class="story">{{ s.output }}</p>{% endif %}
{% if s.note %}<div class="pairs">{{ s.note }}</div>{% endif %}
{% if s.alternatives %}<div class="label">beam alternatives (best first)</div><ol class="story">
{% for a in s.alternatives %}<li>{{ a }}</li>{% endfor %}</ol>{% endif %}
{% if s.references %}<div class="label">references ({{ s.references|length }})</div><ul class="story">
{% for r in s.references %}<li>{{ r }}</li>{% endfor %}</ul>
{% else %}<div class="label">reference</div><p class="story">{{ s.reference }}</p>{% endif %}
{% if s.reference_note %}<div class="pairs">true: {{ s.reference_note }}</div>{% endif %}
{% if s.others %}<div class="controls">
{% for c in s.others %}<div><div class="label">{{ c.name }}</div><p class="story">{{ c.output }}</p>
{% if c.note %}<div class="pairs">{{ c.note }}</div>{% endif %}
{% if c.source %}<div class="id">input of {{ c.source }}</div>{% endif %}</div>
{% endfor %}</div>{% endif %}
{% for f in s.figures %}<div class="label">{{ f.label }}</div><img class="figure" src="{{ f.uri }}" alt="{{ f.label }}">{% endfor %}
<div class="id">{{ s.record_id }}</div>
</div>
{% endfor %}
</div>{% else %}<p class="note">No samples were kept.</p>{% endif %}

<h2>Parameters</h2>
{{ m.params_table(params) }}
{% endblock %}
"""

_STORIES_PAGE = """{% extends "base.html" %}
{% block content %}
{% if items %}<div class="grid">
{% for item in items %}<div class="card">
<img src="{{ item.image_uri }}" alt="{{ item.name }}">
<div class="label">{{ item.name }}</div><p class="story">{{ item.story }}</p>
{% if item.figure_uri %}<img class="figure" src="{{ item.figure_uri }}" alt="{{ item.figure_label }}">
<div class="note">{{ item.figure_label }}</div>{% endif %}
</div>
{% endfor %}</div>{% else %}<p class="note">No images.</p>{% endif %}
{% endblock %}
"""

#: Templates every report can use; a family passes its own in ``render_page(templates=)``.
BASE_TEMPLATES: dict[str, str] = {
    "base.html": _BASE,
    "macros.html": _MACROS,
    "report.html": _REPORT,
    "stories.html": _STORIES_PAGE,
}


def report_environment(templates: Mapping[str, str] | None = None) -> jinja2.Environment:
    """A Jinja2 environment with the base templates (plus extra ones) and autoescape on.

    ``StrictUndefined`` makes a typo in a template variable fail the render instead of
    silently printing nothing.
    """
    loader = jinja2.DictLoader({**BASE_TEMPLATES, **dict(templates or {})})
    return jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


def render_page(template: str, *, templates: Mapping[str, str] | None = None, **context: Any) -> str:
    """Render a named template (a base one or one passed in ``templates``) to an HTML string."""
    return report_environment(templates).get_template(template).render(**context)


def format_value(value: Any, digits: int = 4) -> str:
    """Format a table cell: floats to ``digits`` significant digits, NaN/None as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if number.is_integer() and abs(number) < 1e15 and not isinstance(value, float):
        return str(int(number))
    return f"{number:.{digits}g}"


def metrics_table(
    frame: pd.DataFrame, *, index_column: str = "condition", digits: int = 4
) -> dict[str, Any]:
    """Turn a metrics frame (one row per condition) into a table with conditions as columns.

    Conditions side by side make "model vs control" readable row by row, one metric each.

    Args:
        frame: one row per condition; ``index_column`` names it (or the index does).
        index_column: the column holding the condition names.
        digits: significant digits of the values.

    Returns:
        ``{"corner": str, "columns": [condition, ...], "rows": [{"name", "cells"}]}`` for
        the ``metrics_table`` macro.
    """
    table = frame.set_index(index_column) if index_column in frame.columns else frame
    columns = [str(name) for name in table.index]
    rows = [
        {"name": str(metric), "cells": [format_value(v, digits) for v in table[metric].tolist()]}
        for metric in table.columns
    ]
    return {"corner": "metric", "columns": columns, "rows": rows}


def flatten_params(params: Mapping[str, Any], *, sep: str = ".", prefix: str = "") -> dict[str, str]:
    """Flatten nested params into ``{"a.b.c": "value"}`` with sorted keys.

    Lists of scalars are shown as JSON; lists holding dicts are flattened by index
    (``a.0.b``) so nothing hides in one long cell.
    """
    flat: dict[str, str] = {}

    def visit(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            if not value and key:
                flat[key] = "{}"
            for child_key, child in value.items():
                visit(child, f"{key}{sep}{child_key}" if key else str(child_key))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
            for index, child in enumerate(value):
                visit(child, f"{key}{sep}{index}")
        elif isinstance(value, (list, tuple)):
            flat[key] = json.dumps(list(value), default=str)
        else:
            flat[key] = "null" if value is None else str(value)

    visit(params, prefix)
    return dict(sorted(flat.items()))


def _records_evaluated(evaluation: Evaluation) -> int:
    """The summary's ``<split>/num_records``, else the metrics table's largest ``num_records`` (a comparison
    of variants names its keys by variant)."""
    count = evaluation.summary.get(f"{evaluation.split}/num_records")
    if count is None and "num_records" in evaluation.metrics.columns:
        column = pd.to_numeric(evaluation.metrics["num_records"], errors="coerce").dropna()
        count = column.max() if len(column) else None
    return int(count) if count is not None and count == count else 0


def render_report(
    evaluation: Evaluation,
    history: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    params: Mapping[str, Any],
    title: str,
    *,
    description: str = "",
    max_samples: int = 24,
    samples_with_controls: int = 6,
    image_side: int = 224,
) -> str:
    """Render any family's evaluation as one self-contained HTML page.

    Args:
        evaluation: the harness's output: metrics per condition, samples, summary.
        history: training history rows ``{step, train_loss, val_loss, lr}`` (any may be
            missing in a row), or name -> such rows for several trained models (one curve each).
        params: the parameters of the run (nested dicts are flattened for display).
        title: page title.
        description: a paragraph on what the model does and how it is judged.
        max_samples: how many samples to show.
        samples_with_controls: how many of those also show the other conditions' outputs.
        image_side: longest side of the embedded thumbnails, in pixels.

    Returns:
        The HTML page as a string.
    """
    samples = []
    for index, sample in enumerate(list(evaluation.samples)[:max_samples]):
        outputs = sample.get("outputs", {})
        notes = sample.get("notes", {})
        sources = sample.get("inputs_from", {})
        others = []
        if index < samples_with_controls:
            others = [
                {"name": name, "output": output, "note": notes.get(name, ""), "source": sources.get(name, "")}
                for name, output in outputs.items()
                if name != "model"
            ]
        samples.append(
            {
                "record_id": sample.get("record_id", ""),
                "image_uris": [image_data_uri(image, max_side=image_side) for image in sample.get("images", [])],
                "output": outputs.get("model", ""),
                "note": notes.get("model", ""),
                "reference": sample.get("reference") or "",
                "reference_note": sample.get("reference_note", ""),
                "references": list(sample.get("references") or []),
                "alternatives": list(sample.get("alternatives") or []),
                "figures": [{"label": f.get("label", ""), "uri": png_data_uri(f["png"])}
                            for f in sample.get("figures") or [] if f.get("png")],
                "others": others,
            }
        )
    headline_keys = [key for key in evaluation.summary if "_margin/" in key or "perplexity_ratio/" in key]
    headline = {key: format_value(evaluation.summary[key]) for key in headline_keys}
    histories = history if isinstance(history, Mapping) else {"": history}
    curves = []
    for label, rows in histories.items():
        png = loss_curve_png(rows, title=f"{label}: training and validation loss" if label else
                             "training and validation loss")
        curves.append({"label": label, "uri": png_data_uri(png) if png else None})
    table = evaluation.metrics.drop(columns=[c for c in ("kind",) if c in evaluation.metrics.columns])
    return render_page(
        "report.html",
        title=title,
        subtitle=f"{len(evaluation.samples)} samples kept; {_records_evaluated(evaluation)} {evaluation.split} "
        "records evaluated",
        description=description,
        split=evaluation.split,
        conditions=evaluation.conditions,
        metrics=metrics_table(table),
        headline=headline,
        notes=list(getattr(evaluation, "notes", []) or []),
        loss_curves=curves,
        samples=samples,
        params=flatten_params(params),
    )
