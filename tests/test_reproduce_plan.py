"""reproduce's plan (what is rerun, which versions are pinned) and its comparison, without running anything."""
from __future__ import annotations

import math

import pytest
from kedro.pipeline import Pipeline, node

from multimodal_lab.reproduce import Recorded, ReproduceError, compare, plan


def _identity(*inputs):
    return inputs[0]


PIPELINES = {
    "prep": Pipeline([node(_identity, "raw", "corpus", name="prep")]),
    "fam_model": Pipeline([node(_identity, ["corpus", "params:fam"], "fam.metrics", name="train")]),
}
PIPELINES["fam"] = PIPELINES["prep"] + PIPELINES["fam_model"]


def test_a_family_run_that_prepared_its_corpus_reruns_its_model_part_on_that_corpus():
    recorded = Recorded("r", {"pipelines": ["fam"], "loaded": {"raw": "v0"}, "saved": {"corpus": "v1", "fam.metrics": "v1"}})
    assert plan(recorded, PIPELINES) == (["fam_model"], {"corpus": "v1"})
    assert plan(recorded, PIPELINES, {"corpus": "v9"}) == (["fam_model"], {"corpus": "v9"})


def test_a_run_without_its_model_parts_inputs_reruns_whole_with_its_inputs_pinned():
    recorded = Recorded("r", {"pipelines": ["prep"], "loaded": {"raw": "v0"}, "saved": {"corpus": "v1"}})
    assert plan(recorded, PIPELINES) == (["prep"], {"raw": "v0"})
    with pytest.raises(ReproduceError, match="does not exist"):
        plan(Recorded("r", {"pipelines": ["gone"]}), PIPELINES)


def test_compare_names_every_difference():
    same = {"a": 1.0, "b": math.nan}
    assert compare(same, dict(same)) == []
    differ = compare({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.5, "c": 1.0})
    assert [d[0] for d in differ] == ["b", "c"]
