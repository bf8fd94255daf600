"""Data-preparation nodes: clear errors at the node boundary, nothing lost on the way."""
from __future__ import annotations

import io
from collections import Counter

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.pickle import PickleDataset
from PIL import Image

from multimodal_lab.data.records import make_record, records_frame
from multimodal_lab.pipelines.ingest.nodes import ingest_records
from multimodal_lab.data.corpora import CorpusSpec
from multimodal_lab.data.corpora import select_corpus as select_corpus_library
from multimodal_lab.pipelines.prepare import create_pipeline as create_prepare_pipeline
from multimodal_lab.pipelines.prepare.nodes import build_tokenizer, select_corpus
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
    with pytest.raises(ValueError, match=r"missing parameter\(s\) \['path'\] in params:sources.local_folder"):
        load_local_folder({"enabled": True})
    with pytest.raises(ValueError, match=r"unknown parameter 'pth' \(did you mean 'path'\?\)"):
        load_local_folder({"enabled": True, "pth": str(tmp_path)})
    with pytest.raises(TypeError, match="params:sources.local_folder.max_bytes' must be an integer"):
        load_local_folder({"enabled": True, "path": str(tmp_path), "max_bytes": "1MB"})
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
    raw = merge_sources(raw, raw.iloc[:1])  # a second source delivers the first record again
    accepted, rejected, summary = ingest_records(raw, INGEST)
    assert sorted(accepted.record_id.tolist() + rejected.record_id.tolist()) == sorted(raw.record_id)
    assert summary["source_rows"] == 5 and summary["accepted"] == 1 and summary["rejected"] == 4
    assert set(rejected["stage"]) == {"duplicate_id", "license", "image", "dedup"}


def _splits(records, split="train"):
    return pd.DataFrame({"record_id": records["record_id"], "family_id": records["family_id"],
                         "split": [split] * len(records)})


def test_unknown_corpus_key_and_empty_corpus():
    records = records_frame([make_record(image=_png("red"), source="t", corpus="scene", caption="a", story="s")])
    with pytest.raises(ValueError, match="'text_feld'"):
        select_corpus(records, _splits(records), {"corpus": ["scene"], "text_feld": "story"})
    # no material at all for a corpus: empty splits (its families fail clearly when trained)
    train, val, test, skipped = select_corpus(records, _splits(records), {"corpus": ["art"], "text_field": "caption"})
    assert train.empty and val.empty and test.empty and skipped.empty
    assert len(build_tokenizer(train, {"corpus": ["art"], "text_field": "caption"})) == 4  # special tokens only
    with pytest.raises(ValueError, match=r"has no val or test records"):
        select_corpus(records, _splits(records), {"corpus": ["scene"], "text_field": "story"})
    with pytest.raises(ValueError, match="unknown parameter 'val_ratio'"):
        select_corpus(records, _splits(records), {"corpus": ["scene"], "text_field": "story", "val_ratio": 0.1})


def test_sequence_corpus_keeps_only_whole_groups_and_says_why():
    rows = [
        make_record(image=_png((i, 0, 0)), source="t", corpus="sequence", caption=f"f{i}", group_id="g1", frame_index=i)
        for i in range(5)
    ] + [
        make_record(image=_png((0, i, 0)), source="t", corpus="sequence", caption=f"h{i}", group_id="g2", frame_index=i)
        for i in (0, 1, 3)
    ]
    records = records_frame(rows)
    selection = select_corpus_library(records, pd.Series(["test"] * len(records)),
                                      CorpusSpec(corpus=["sequence"], text_field="caption", group_size=5), "sequence")
    selected = selection.splits["test"]
    assert selected.group_id.unique().tolist() == ["g1"]
    assert selected.frame_index.tolist() == [0, 1, 2, 3, 4]
    assert len(selection.skipped) == 3
    assert selection.skipped["reason"].str.contains("group g2 has frames \\[0, 1, 3\\], not 0-4").all()


def test_prepare_pipeline_with_in_memory_catalog_splits_once_and_accounts_for_every_row(tmp_path):
    from multimodal_lab.data.scene_world import SceneWorldConfig, generate_scene_world

    raw = generate_scene_world(SceneWorldConfig(seed=1, n_scenes=120, n_engravings=40, n_sequences=8,
                                                bad_license_fraction=0.1, damaged_fraction=0.05))
    # a word unique to each record: only train records' words may enter the vocabulary
    raw = raw.assign(story=[s if s is None else f"{s} marker{r[:6]}." for s, r in zip(raw.story, raw.record_id)])
    accepted, ingest_rejected, _ = ingest_records(raw, {"near_duplicate_distance": 0})
    orphan = make_record(image=_png("green"), source="t", corpus="poems", caption="a poem", license="CC0")
    accepted = pd.concat([accepted, records_frame([orphan]).assign(
        license_spdx="CC0-1.0", image_hash="h", width=64, height=64)], ignore_index=True)
    raw = pd.concat([raw, records_frame([orphan])], ignore_index=True)
    vocab = {"kind": "word", "min_frequency": 1, "max_size": 500}
    data = {
        "raw_records": raw,
        "ingest_rejected_records": ingest_rejected,
        "text_rejected_records": ingest_rejected.iloc[:0],
        "captioned_records": accepted,
        "params:split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "params:ingest": {},
        "params:story.corpus": {"corpus": ["scene"], "text_field": "story", "vocab": vocab},
        "params:caption.corpus": {"corpus": ["scene"], "text_field": "caption", "vocab": vocab},
        "params:art.corpus": {"corpus": ["engraving"], "text_field": "caption", "vocab": vocab},
        "params:sequence.corpus": {"corpus": ["sequence"], "text_field": "caption", "group_size": 5,
                                   "vocab": vocab},
    }
    catalog = DataCatalog({name: MemoryDataset(value) for name, value in data.items()})
    # the runner releases in-memory intermediates; pickles keep them for the asserts
    kept = [f"{c}.{s}_records" for c in ("story", "caption", "art", "sequence") for s in ("train", "val", "test")]
    for name in [*kept, "rejected_records", "data_summary", "story.tokenizer"]:
        catalog[name] = PickleDataset(filepath=str(tmp_path / f"{name}.pkl"))
    SequentialRunner().run(create_prepare_pipeline(), catalog)
    load = catalog.load
    rejected, summary = load("rejected_records"), load("data_summary")

    # every source row: in a corpus split, or rejected with a stage and a reason
    placed = set().union(*(set(load(name)["record_id"]) for name in kept))
    assert Counter(raw["record_id"]) == Counter(list(rejected["record_id"]) + [r for r in raw["record_id"]
                                                                                  if r in placed])
    assert summary["source_rows"] == len(raw) == summary["in_corpora"] + summary["rejected"]
    assert rejected["reason"].map(lambda r: isinstance(r, str) and len(r) > 5).all()
    poem = rejected[rejected["record_id"] == orphan["record_id"]]
    assert poem["stage"].tolist() == ["corpus"] and "corpus 'poems'" in poem["reason"].iat[0]
    # one split for all corpora: a scene's story and its caption are on the same side
    for split in ("train", "val", "test"):
        assert set(load(f"story.{split}_records")["record_id"]) == set(load(f"caption.{split}_records")["record_id"])
    sides = [set(load(f"sequence.{split}_records")["group_id"]) for split in ("train", "val", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    # the vocabulary saw train stories only
    tokenizer = load("story.tokenizer")
    unk = tokenizer.unk_token_id
    assert all(tokenizer.convert_tokens_to_ids(f"marker{r[:6]}") != unk for r in load("story.train_records").record_id)
    for split in ("val", "test"):
        assert all(tokenizer.convert_tokens_to_ids(f"marker{r[:6]}") == unk
                   for r in load(f"story.{split}_records").record_id)
