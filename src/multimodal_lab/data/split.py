"""Train/validation split by group, stable when records are added.

Each group id is hashed (sha256 of ``salt + group_id``) to a number in [0, 1); the
group goes to validation when that number is below ``val_ratio``. Consequences:

* a group (story, sequence) never straddles train and val;
* the assignment of a group depends on its id, the salt and the ratio only, so
  adding records (or removing others) never moves an existing record;
* the validation share is ``val_ratio`` in expectation over groups, not exactly.
  Changing ``salt`` draws a different split.
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)


def group_fraction(group_id: str, salt: str = "") -> float:
    """Map a group id to a number in [0, 1), uniformly and deterministically."""
    digest = hashlib.sha256((salt + group_id).encode("utf-8")).digest()
    # 53 bits: exactly representable in a float, so the value is < 1 without rounding up.
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def split_by_group(
    records: pd.DataFrame, val_ratio: float = 0.1, salt: str = ""
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split records into train and validation by a hash of their ``group_id``.

    Args:
        records: frame with a ``group_id`` column (any other columns are carried);
            not modified.
        val_ratio: expected share of groups in validation, strictly between 0 and 1.
        salt: mixed into the hash; change it to draw a different split.

    Returns:
        ``(train, val)``, each in input order with a fresh index.

    Raises:
        ValueError: ``val_ratio`` is outside (0, 1), or ``group_id`` is missing.
    """
    if not 0.0 < float(val_ratio) < 1.0:
        raise ValueError(
            f"val_ratio must be strictly between 0 and 1, got {val_ratio}; e.g. 0.1 puts about "
            f"10% of the groups in validation"
        )
    if "group_id" not in records.columns:
        raise ValueError("records have no 'group_id' column; every record needs a group id to be split")
    groups = records["group_id"]
    if groups.isna().any():
        bad = records.loc[groups.isna()].index[:5].tolist()
        raise ValueError(f"group_id is missing for {int(groups.isna().sum())} record(s) (rows {bad})")

    fraction = {g: group_fraction(str(g), salt) for g in pd.unique(groups)}
    is_val = np.array([fraction[g] < val_ratio for g in groups], dtype=bool)
    train = records.loc[~is_val].reset_index(drop=True)
    val = records.loc[is_val].reset_index(drop=True)
    if len(records) and val.empty:
        logger.warning(
            "validation split is empty: %d group(s) and val_ratio=%s; add groups, raise "
            "val_ratio or change the salt", len(fraction), val_ratio,
        )
    if len(records) and train.empty:
        logger.warning("train split is empty: all %d group(s) fell in validation", len(fraction))
    logger.info(
        "split: %d train / %d val records (%d groups)", len(train), len(val), len(fraction)
    )
    return train, val
