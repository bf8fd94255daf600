"""Train / validation / test split by family, one split for every corpus, stable when records are added.

Each family id (``records.family_id``: a scene, a sequence, all windows of one source
story) is hashed (sha256 of ``salt + family_id``) to a number ``f`` in [0, 1):

    f < test              -> test   (the reported figures)
    f < test + val        -> val    (early stopping, model selection)
    otherwise             -> train

Consequences:

* a family never straddles two splits, and since the split is assigned once, before
  any corpus is selected, a scene's story (story corpus) and its captions (caption
  corpus) are on the same side: nothing a model family trains on is another family's
  validation or test material;
* a family's side depends on its id, the salt and the ratios only, so adding records
  (or removing others) never moves an existing one; changing ``val`` moves records
  between val and train only, never in or out of test;
* the shares are the ratios in expectation over families, not exactly. Changing
  ``salt`` draws a different split.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def group_fraction(group_id: str, salt: str = "") -> float:
    """Map an id to a number in [0, 1), uniformly and deterministically."""
    digest = hashlib.sha256((salt + group_id).encode("utf-8")).digest()
    # 53 bits: exactly representable in a float, so the value is < 1 without rounding up.
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


@dataclass(frozen=True)
class SplitConfig:
    """Shares of the three splits (``params:split``); they must add up to 1."""

    train: float = 0.85  # share of families trained on
    val: float = 0.05  # share held out for early stopping and model selection
    test: float = 0.10  # share held out for the reported figures
    salt: str = ""  # change to draw a different, still deterministic, split

    def __post_init__(self) -> None:
        for name in SPLITS:
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"split share {name} must be strictly between 0 and 1, got {value}")
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"split shares train {self.train} + val {self.val} + test {self.test} = {total:g}; "
                "they must add up to 1 (e.g. 0.85 / 0.05 / 0.10)"
            )

    def side(self, fraction: float) -> str:
        """The split of a family whose hash fraction is ``fraction``."""
        if fraction < self.test:
            return "test"
        if fraction < self.test + self.val:
            return "val"
        return "train"


def family_ids(records: pd.DataFrame) -> pd.Series:
    """The family id of each record (its group id where a frame has no family column)."""
    column = "family_id" if "family_id" in records.columns else "group_id"
    if column not in records.columns:
        raise ValueError("records have neither 'family_id' nor 'group_id'; every record needs one to be split")
    ids = records[column]
    if ids.isna().any():
        bad = records.loc[ids.isna()].index[:5].tolist()
        raise ValueError(f"{column} is missing for {int(ids.isna().sum())} record(s) (rows {bad})")
    return ids.astype(str)


def assign_splits(records: pd.DataFrame, config: SplitConfig) -> pd.Series:
    """The split ("train", "val" or "test") of every record, by a hash of its family id.

    Args:
        records: a record frame (``family_id`` or ``group_id`` needed); not modified.
        config: the shares and the salt.

    Returns:
        A string Series aligned with ``records``.
    """
    families = family_ids(records)
    side = {f: config.side(group_fraction(f, config.salt)) for f in pd.unique(families)}
    splits = pd.Series([side[f] for f in families], index=records.index, dtype=object)
    counts = {name: int((pd.Series(list(side.values())) == name).sum()) for name in SPLITS}
    logger.info("split of %d families: %s", len(side), counts)
    return splits


def split_by_group(
    records: pd.DataFrame, val_ratio: float = 0.1, salt: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two-way split by a hash of the family (or group) id, for callers that need no test side.

    Args:
        records: frame with a ``family_id`` or ``group_id`` column; not modified.
        val_ratio: expected share of families in validation, strictly between 0 and 1.
        salt: mixed into the hash; change it to draw a different split.

    Returns:
        ``(train, val)``, each in input order with a fresh index.
    """
    if not 0.0 < float(val_ratio) < 1.0:
        raise ValueError(
            f"val_ratio must be strictly between 0 and 1, got {val_ratio}; e.g. 0.1 puts about "
            f"10% of the groups in validation"
        )
    families = family_ids(records)
    fraction = {f: group_fraction(f, salt) for f in pd.unique(families)}
    is_val = np.array([fraction[f] < val_ratio for f in families], dtype=bool)
    train = records.loc[~is_val].reset_index(drop=True)
    val = records.loc[is_val].reset_index(drop=True)
    if len(records) and val.empty:
        logger.warning(
            "validation split is empty: %d group(s) and val_ratio=%s; add groups, raise "
            "val_ratio or change the salt", len(fraction), val_ratio,
        )
    return train, val
