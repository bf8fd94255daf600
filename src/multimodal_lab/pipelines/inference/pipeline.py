"""``create_inference_pipeline(family)``: ``<family>.model`` + a folder of images -> JSON + HTML."""
from kedro.pipeline import Pipeline, node

from multimodal_lab.pipelines.model.pipeline import _bind

from .nodes import infer_folder


def create_inference_pipeline(family: str) -> Pipeline:
    """The inference pipeline of one family (outputs ``<family>_inference.outputs`` and ``.page``)."""
    return Pipeline(
        [
            node(
                _bind(infer_folder, family),
                [f"{family}.model", f"params:{family}_inference"],
                [f"{family}_inference.outputs", f"{family}_inference.page"],
                name=f"{family}_infer_folder",
            )
        ],
        tags=family,
    )
