"""The one inference node: the newest (or a pinned) model of a family on a folder of images."""
from __future__ import annotations

import logging
from typing import Any

from multimodal_lab.families import get_family

log = logging.getLogger(__name__)


def infer_folder(model, params: dict[str, Any], *, family: str) -> tuple:
    """Run a family's model on every item of the user's folder (``params["images_dir"]`` by default).

    Args:
        model: the trained model (the newest version, or one pinned with
            ``--load-versions=<family>.model:<version>``).
        params: ``params:<family>_inference`` — the folder (``images_dir``, or what the
            family's ``folder_reader`` reads), ``batch_size`` and the family's decoding settings.
        family: the family's registry name.

    Returns:
        One JSON row per item (its name and what the model wrote) and an HTML page, plus
        ``{file name: PIL image}`` when the family writes images (``folder_images``).
    """
    from multimodal_lab.config import from_params
    from multimodal_lab.inference import load_image_folder

    spec = get_family(family)
    if spec.folder_inference is None or spec.inference_params_class is None:
        raise ValueError(f"the {family} family has no folder inference")
    settings = from_params(spec.inference_params_class, params, where=f"params:{family}_inference")
    named = spec.folder_reader(settings) if spec.folder_reader is not None else load_image_folder(settings.images_dir)
    result = spec.folder_inference(model, named, settings)
    log.info("%s: %d item(s) read and written", family, len(result[0]))
    return result
