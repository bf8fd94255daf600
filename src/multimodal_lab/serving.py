"""Every family's model as an MLflow ``pyfunc``: ``mlflow models serve`` and the model registry work.

The wrapper (:class:`FamilyModel`) holds the saved model directory as an artefact and answers
with the family's inference API (``multimodal_lab.inference.load``), so a served model gives
what Python code gets. Inputs and outputs are table columns; images travel as base64 PNG:

========================  ==========================================  ==============================
family                    input columns                               output columns
========================  ==========================================  ==============================
story_gpt2                ``image``                                   ``story``
vit_captioner             ``image``                                   ``caption``
art_generator             ``seed`` (integer)                          ``caption``, ``image``
story_continuation        ``frame1``..``frame4``, ``sentence1``..4    ``sentence``, ``image``
========================  ==========================================  ==============================

:func:`log_family_model` logs one versioned model directory to the active MLflow run and registers
it under the family's name; the pipelines do it for every trained model (``mlflow: model`` in the
catalog). The versioned catalog copy stays the source of truth; the MLflow copy is for serving.
"""
from __future__ import annotations

import base64
import io
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

ARTIFACT = "model_dir"


def png_base64(image) -> str:
    """A PIL image as base64 PNG text."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_from_base64(text: str):
    """base64 image bytes (PNG, JPEG, ...) -> a PIL image, opened with the project's limits."""
    from multimodal_lab.data.images import open_image

    return open_image(base64.b64decode(text))


def _mlflow_pyfunc():
    import mlflow.pyfunc

    return mlflow.pyfunc


class FamilyModel(_mlflow_pyfunc().PythonModel):
    """A pyfunc over one saved model directory of any family (see the module docstring)."""

    def load_context(self, context) -> None:
        from multimodal_lab.families import family_of_directory
        from multimodal_lab.inference import load

        directory = context.artifacts[ARTIFACT]
        self.family = family_of_directory(directory).name
        self.api = load(directory, device="cpu")

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_rows(self.family, self.api, pd.DataFrame(model_input))


def predict_rows(family: str, api, frame: pd.DataFrame) -> pd.DataFrame:
    """One output row per input row, with the family's columns."""
    if family == "story_gpt2":
        return pd.DataFrame({"story": api.tell([image_from_base64(t) for t in frame["image"]])})
    if family == "vit_captioner":
        return pd.DataFrame({"caption": api.caption([image_from_base64(t) for t in frame["image"]])})
    if family == "art_generator":
        pairs = api.generate_batch([int(s) for s in frame["seed"]])
        return pd.DataFrame({"caption": [c for _, c, _ in pairs], "image": [png_base64(i) for i, _, _ in pairs]})
    if family == "story_continuation":
        rows = []
        for record in frame.to_dict("records"):
            result = api.continue_story([image_from_base64(record[f"frame{i}"]) for i in range(1, 5)],
                                        [str(record[f"sentence{i}"]) for i in range(1, 5)])
            rows.append({"sentence": result["sentence"],
                         "image": png_base64(result["image"]) if result["image"] is not None else ""})
        return pd.DataFrame(rows, columns=["sentence", "image"])
    raise ValueError(f"no pyfunc input format for the family {family!r}")


def input_example(family: str, image_size: int = 64) -> pd.DataFrame:
    """A one-row input of the family's format (a plain grey image, seed 0)."""
    from PIL import Image

    grey = png_base64(Image.new("RGB", (image_size, image_size), (128, 128, 128)))
    if family in ("story_gpt2", "vit_captioner"):
        return pd.DataFrame({"image": [grey]})
    if family == "art_generator":
        return pd.DataFrame({"seed": [0]})
    if family == "story_continuation":
        return pd.DataFrame({**{f"frame{i}": [grey] for i in range(1, 5)},
                             **{f"sentence{i}": ["A small red circle is in the sky."] for i in range(1, 5)}})
    raise ValueError(f"no pyfunc input format for the family {family!r}")


def log_family_model(directory: str | os.PathLike, name: str, registered_name: str | None = None):
    """Log a saved model directory to the active MLflow run as a pyfunc (signature and input example
    from one real prediction) and register it as ``registered_name``; returns the model info."""
    import mlflow
    from mlflow.models import infer_signature

    from multimodal_lab.families import family_of_directory
    from multimodal_lab.inference import load

    directory = Path(directory)
    family = family_of_directory(directory).name
    api = load(directory, device="cpu")
    example = input_example(family)
    output = predict_rows(family, api, example)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=FamilyModel(),
        artifacts={ARTIFACT: str(directory)},
        signature=infer_signature(example, output),
        input_example=example,
        registered_model_name=registered_name,
        pip_requirements=["multimodal_lab"],  # serve from the project's environment: --env-manager local
    )
