"""``create_inference_pipeline(family)``: ``<family>.model`` + a folder of images -> JSON + HTML."""
from kedro.pipeline import Pipeline, node

from multimodal_lab.pipelines.model.pipeline import _bind

from .nodes import infer_folder


def create_inference_pipeline(family: str) -> Pipeline:
    """The inference pipeline of one family (outputs ``<family>_inference.outputs`` and ``.page``,
    and ``.images`` for a family that writes images)."""
    from multimodal_lab.families import get_family

    from multimodal_lab.families import served_model_dataset

    spec = get_family(family)
    model = served_model_dataset(family)
    outputs = [f"{family}_inference.outputs", f"{family}_inference.page"]
    if spec.folder_images:
        outputs.append(f"{family}_inference.images")
    return Pipeline(
        [
            node(
                _bind(infer_folder, family),
                [model, f"params:{family}_inference"],
                outputs,
                name=f"{family}_infer_folder",
            )
        ],
        tags=family,
    )
