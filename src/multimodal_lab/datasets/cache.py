"""A versioned JSON cache that loads as empty before its first version exists.

An incremental cache (e.g. BLIP-2 captions by image hash) is read at the start of a
run and written, extended, at its end. Kedro forbids a node reading and writing one
dataset, so the catalog declares two entries over the same versioned file: the input
loads the newest version, or ``{}`` on the very first run; the output saves a new one.
"""
from __future__ import annotations

import logging
from typing import Any

from kedro.io.core import DatasetError
from kedro_datasets.json import JSONDataset

log = logging.getLogger(__name__)


class JSONCacheDataset(JSONDataset):
    """``json.JSONDataset`` whose load gives ``{}`` when no version was saved yet."""

    def load(self) -> Any:
        try:
            return super().load()
        except DatasetError as exc:
            if "Did not find any versions" not in str(exc) and "No such file" not in str(exc):
                raise
            log.info("%s: no cache saved yet, starting empty", self._filepath)
            return {}
