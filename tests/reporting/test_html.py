import base64
import io
import math
import re

import pandas as pd
import pytest
from PIL import Image

from multimodal_lab.evaluation.harness import Evaluation
from multimodal_lab.reporting.figures import image_data_uri, image_png, loss_curve_png, to_display_rgb
from multimodal_lab.reporting.html import (
    flatten_params,
    format_value,
    metrics_table,
    render_page,
    render_report,
)

METRIC_COLUMNS = ("pair_precision", "pair_recall", "pair_f1", "colour_f1", "shape_f1", "num_grounded",
                  "distinct_1", "distinct_2", "perplexity", "num_records")


def _png(colour, size=(20, 12), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _evaluation(story="a red circle.") -> Evaluation:
    rows = []
    for k, name in enumerate(("model", "shuffled_images", "zeroed_prefix")):
        row = {column: 0.0 for column in METRIC_COLUMNS}
        row.update(pair_f1=[0.8125, 0.1875, 0.0625][k], perplexity=[3.25, 7.5, 11.75][k], num_records=8.0)
        rows.append({"condition": name, "kind": "model" if k == 0 else "control", **row})
    rows[2]["colour_f1"] = math.nan
    samples = [
        {
            "record_id": f"rec{i:02d}",
            "images": [_png((200, 30 * i, 40))],
            "reference": "There was a red circle & a <b>blue</b> star.",
            "reference_note": "blue star, red circle",
            "outputs": {"model": story if i == 0 else f"model story {i}",
                        "shuffled_images": f"shuffled story {i}", "zeroed_prefix": f"zeroed story {i}"},
            "notes": {"model": "red circle", "shuffled_images": "green ring", "zeroed_prefix": ""},
            "inputs_from": {"shuffled_images": "other"},
        }
        for i in range(4)
    ]
    summary = {"test/pair_f1": 0.8125, "test/shuffled_images/pair_f1": 0.1875,
               "test/pair_f1_margin/shuffled_images": 0.625, "test/num_records": 8.0}
    conditions = [{"name": "model", "kind": "model", "description": "the model"},
                  {"name": "shuffled_images", "kind": "control", "description": "another record's image"},
                  {"name": "zeroed_prefix", "kind": "control", "description": "a zero prefix"}]
    return Evaluation(metrics=pd.DataFrame(rows), samples=samples, summary=summary, conditions=conditions)


HISTORY = [
    {"step": 0, "train_loss": 4.0, "lr": 1e-4},
    {"step": 10, "train_loss": 3.0, "val_loss": 3.2, "lr": 3e-4},
    {"step": 20, "train_loss": 2.5, "val_loss": float("nan"), "lr": 2e-4},
    {"step": 30, "train_loss": 2.0, "val_loss": 2.4, "lr": 1e-4},
]


def _data_uris(html: str) -> list[str]:
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_report_contains_metrics_controls_params_and_figures():
    params = {"model": {"n_layer": 2, "channels": [32, 64]}, "train": {"lr": 0.0003}, "seed": 7}
    html = render_report(_evaluation(), HISTORY, params, title="Run 42", description="What <it> does.")
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>Run 42</title>" in html
    # metrics table: conditions as columns, values as formatted
    for text in ("model", "shuffled_images", "zeroed_prefix", "pair_f1", "0.8125", "0.1875", "0.0625",
                 "3.25", "7.5", "11.75", "n/a", "test/pair_f1_margin/shuffled_images", "0.625",
                 "another record&#39;s image", "What &lt;it&gt; does.", "8 test records evaluated"):
        assert text in html, text
    header = re.search(r"<thead><tr><th>metric</th>(.*?)</tr></thead>", html).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == ["model", "shuffled_images", "zeroed_prefix"]
    # parameters flattened
    for text in ("model.n_layer", "model.channels", "[32, 64]", "train.lr", "0.0003", "seed"):
        assert text in html, text
    # 4 sample images + the loss curve, all decodable PNGs
    uris = _data_uris(html)
    assert len(uris) == 5
    for uri in uris:
        assert Image.open(io.BytesIO(base64.b64decode(uri))).format == "PNG"
    assert "shuffled story 0" in html and "zeroed story 0" in html
    assert "red circle" in html and "green ring" in html
    assert "true: blue star, red circle" in html and "input of other" in html


def test_report_escapes_generated_and_reference_text():
    evil = '<script>alert("x")</script> a red circle.'
    html = render_report(_evaluation(story=evil), [], {"note": "<img src=x onerror=y>"}, title="<i>t</i>")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;b&gt;blue&lt;/b&gt;" in html and "&amp;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=y&gt;" in html
    assert "<title>&lt;i&gt;t&lt;/i&gt;</title>" in html
    assert "No loss history was recorded." in html


def test_report_limits_samples_and_controls():
    html = render_report(_evaluation(), HISTORY, {}, "t", max_samples=3, samples_with_controls=1)
    assert "model story 2" in html and "model story 3" not in html
    assert "shuffled story 0" in html and "shuffled story 1" not in html
    assert "No parameters recorded." in html


def test_metrics_table_puts_conditions_side_by_side():
    frame = pd.DataFrame({"condition": ["model", "control"], "f1": [0.5, 0.25], "n": [3, 3]})
    table = metrics_table(frame)
    assert table["columns"] == ["model", "control"]
    assert table["rows"] == [{"name": "f1", "cells": ["0.5", "0.25"]}, {"name": "n", "cells": ["3", "3"]}]


def test_format_value():
    assert format_value(0.123456789) == "0.1235"
    assert format_value(float("nan")) == "n/a"
    assert format_value(None) == "n/a"
    assert format_value(12) == "12"
    assert format_value(2.0) == "2"
    assert format_value(float("inf")) == "inf"
    assert format_value("abc") == "abc"


def test_flatten_params():
    flat = flatten_params({"b": {"c": 1, "d": None}, "a": [1, 2], "e": [{"x": 1}], "f": {}})
    assert flat == {"a": "[1, 2]", "b.c": "1", "b.d": "null", "e.0.x": "1", "f": "{}"}
    assert list(flat) == sorted(flat)


def test_render_page_lets_other_reports_extend_the_base():
    extra = {"mine.html": '{% extends "base.html" %}{% import "macros.html" as m %}'
                          '{% block content %}{{ m.params_table(params) }}{% endblock %}'}
    html = render_page("mine.html", templates=extra, title="Art", subtitle="", params={"k": "<v>"})
    assert "<h1>Art</h1>" in html and "&lt;v&gt;" in html


def test_loss_curve_png():
    png = loss_curve_png(HISTORY)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (700, 350)
    assert loss_curve_png([]) is None
    assert loss_curve_png([{"step": 1, "lr": 0.1}]) is None
    assert loss_curve_png([{"step": 1, "val_loss": 2.0}]) is not None


@pytest.mark.parametrize("mode,colour", [("RGBA", (255, 0, 0, 0)), ("LA", (0, 0)), ("L", 128), ("CMYK", (0, 255, 0, 0))])
def test_image_png_converts_any_mode(mode, colour):
    png = image_png(Image.new(mode, (600, 300), colour), max_side=100)
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGB" and image.size == (100, 50)
    if mode in ("RGBA", "LA"):  # fully transparent becomes white
        assert image.getpixel((0, 0)) == (255, 255, 255)


def test_image_data_uri_from_bytes_and_palette_transparency():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert to_display_rgb(palette).getpixel((0, 0)) == (255, 255, 255)
    uri = image_data_uri(_png((1, 2, 3)), max_side=8)
    assert uri.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (8, 5) and decoded.getpixel((0, 0)) == (1, 2, 3)
    sixteen = Image.new("I;16", (4, 4), 1000)
    sixteen.putpixel((0, 0), 3000)
    grey = to_display_rgb(sixteen)
    # 16-bit grey is scaled as ingest scales it (value // 257), not stretched per image
    assert grey.getpixel((0, 0)) == (11, 11, 11) and grey.getpixel((1, 1)) == (3, 3, 3)


def test_report_counts_records_from_the_table_when_the_summary_has_no_count():
    """A comparison of variants names its keys by variant: the subtitle reads the table's num_records."""
    evaluation = _evaluation()
    assert "8 test records evaluated" in render_report(evaluation, [], {}, "t")
    evaluation.summary = {k: v for k, v in evaluation.summary.items() if k != "test/num_records"}
    assert "8 test records evaluated" in render_report(evaluation, [], {}, "t")
    evaluation.metrics = evaluation.metrics.drop(columns=["num_records"])
    assert "0 test records evaluated" in render_report(evaluation, [], {}, "t")
