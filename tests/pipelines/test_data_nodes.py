"""Data-preparation nodes: clear errors at the node boundary, nothing lost on the way."""
from __future__ import annotations

import io

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pickle import PickleDataset
from PIL import Image

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.pipelines.ingest.nodes import ingest_records
from multimodal_lab.pipelines.prepare import create_corpus_pipeline
from multimodal_lab.pipelines.prepare.nodes import select_corpus
from multimodal_lab.pipelines.sources.nodes import load_local_folder, load_scene_world, merge_sources

INGEST = {
    "license_allow": ["CC0-1.0", "CC-BY-4.0"],
    "near_duplicate_distance": 0,
    "workers": 1,
}


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mistyped_scene_world_key_is_named():
    with pytest.raises(ValueError, match=r"'n_scene' \(did you mean 'n_scenes'\?\) in params:sources.scene_world"):
        load_scene_world({"enabled": True, "n_scene": 5})


def test_disabled_source_gives_an_empty_record_frame():
    frame = load_scene_world({"enabled": False, "n_scenes": 5})
    assert frame.empty and "record_id" in frame.columns


def test_local_folder_needs_a_path_and_rejects_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="local_folder.path is required"):
        load_local_folder({"enabled": True})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['pth'\]"):
        load_local_folder({"enabled": True, "pth": str(tmp_path)})
    with pytest.raises(Exception, match="does not exist"):
        load_local_folder({"enabled": True, "path": str(tmp_path / "missing")})


def test_merge_without_any_source_says_which_parameters_to_change():
    with pytest.raises(ValueError, match="enable at least one of params:sources.scene_world"):
        merge_sources(records_frame([]), records_frame([]))


def test_ingest_that_rejects_everything_names_the_reasons():
    raw = records_frame(
        [make_record(image=_png("red"), source="t", corpus="scene", caption="c", license="All rights reserved")]
    )
    with pytest.raises(ValueError, match="no record survived ingest.*license_allow"):
        ingest_records(raw, INGEST)


def test_ingest_conserves_records_and_summarises(tmp_path):
    raw = records_frame(
        [
            make_record(image=_png("red"), source="t", corpus="scene", caption="a", license="CC0"),
            make_record(image=_png("blue"), source="t", corpus="scene", caption="b", license="CC BY-NC-ND 4.0"),
            make_record(image=b"not an image", source="t", corpus="scene", caption="c", license="CC BY 4.0"),
            make_record(image=_png("red"), source="t", corpus="scene", caption="d", license="CC BY 4.0"),
        ]
    )
    accepted, rejected, summary = ingest_records(raw, INGEST)
    assert sorted(accepted.record_id.tolist() + rejected.record_id.tolist()) == sorted(raw.record_id)
    assert summary["input"] == 4 and summary["accepted"] == 1 and summary["rejected"] == 3
    assert set(rejected["stage"]) == {"license", "image", "dedup"}


def test_unknown_corpus_key_and_empty_corpus():
    records = records_frame([make_record(image=_png("red"), source="t", corpus="scene", caption="a", story="s")])
    with pytest.raises(ValueError, match="'text_feld'"):
        select_corpus(records, {"corpus": ["scene"], "text_feld": "story"})
    with pytest.raises(ValueError, match=r"corpus \['art'\] is empty after ingest"):
        select_corpus(records, {"corpus": ["art"], "text_field": "caption"})


def test_sequence_corpus_keeps_only_whole_groups():
    rows = [
        make_record(image=_png((i, 0, 0)), source="t", corpus="sequence", caption=f"f{i}", group_id="g1", frame_index=i)
        for i in range(5)
    ] + [
        make_record(image=_png((0, i, 0)), source="t", corpus="sequence", caption=f"h{i}", group_id="g2", frame_index=i)
        for i in (0, 1, 3)
    ]
    selected = select_corpus(records_frame(rows), {"corpus": ["sequence"], "text_field": "caption", "group_size": 5})
    assert selected.group_id.unique().tolist() == ["g1"]
    assert selected.frame_index.tolist() == [0, 1, 2, 3, 4]


def test_corpus_pipeline_slice_with_in_memory_catalog(tmp_path):
    from multimodal_lab.data.scene_world import SceneWorldConfig, generate_scene_world

    records = generate_scene_world(SceneWorldConfig(seed=1, n_scenes=80, n_engravings=0, n_sequences=0,
                                                    bad_license_fraction=0.0, damaged_fraction=0.0))
    # a word unique to each record: only train records' words may enter the vocabulary
    records = records.assign(story=records.story + " marker" + records.record_id.str[:6] + ".")
    spec = {"corpus": ["scene"], "text_field": "story", "val_ratio": 0.2,
            "vocab": {"kind": "word", "min_frequency": 1, "max_size": 500}}
    catalog = DataCatalog(
        {
            "captioned_records": MemoryDataset(records),
            "params:story.corpus": MemoryDataset(spec),
            # the runner releases in-memory intermediates; pickles keep them for the asserts
            "story.train_records": PickleDataset(filepath=str(tmp_path / "train.pkl")),
            "story.val_records": PickleDataset(filepath=str(tmp_path / "val.pkl")),
        }
    )
    outputs = SequentialRunner().run(create_corpus_pipeline("story"), catalog)
    train, val = catalog.load("story.train_records"), catalog.load("story.val_records")
    tokenizer = outputs["story.tokenizer"].load()
    assert len(train) + len(val) == 80 and len(val) > 0
    assert set(train.group_id).isdisjoint(val.group_id)
    unk = tokenizer.unk_token_id
    assert all(tokenizer.convert_tokens_to_ids(f"marker{r[:6]}") != unk for r in train.record_id)
    assert all(tokenizer.convert_tokens_to_ids(f"marker{r[:6]}") == unk for r in val.record_id)
