"""``create_model_pipeline(family)``: train -> evaluate -> report under the family's namespace.

Inside the namespace the datasets are ``<family>.model``, ``<family>.training``,
``<family>.metrics``, ``<family>.metrics_table``, ``<family>.samples`` and
``<family>.report`` (versioned by the catalog's ``{family}.*`` factories), and the
parameters ``params:<family>.model|train|evaluation``. The corpus datasets come from the
shared data preparation (``<corpus>.train_records``, ...).
"""
from functools import partial

from kedro.pipeline import Pipeline, node

from multimodal_lab.families import get_family

from .nodes import compare_variants, evaluate_model, repeat_top_variants, report_model, train_model


def _bind(func, family: str, **kwargs):
    """``func`` with the family (and options) bound, named ``<func>`` for Kedro's logs and kedro-viz."""
    bound = partial(func, family=family, **kwargs)
    bound.__name__ = bound.__qualname__ = func.__name__
    bound.__module__ = func.__module__
    bound.__doc__ = func.__doc__
    return bound


def _train_evaluate(family: str, eval_split: str, variant: str | None = None,
                    evaluation_outputs: tuple[str, ...] = ("metrics", "metrics_table", "samples")) -> list:
    """The train and evaluate nodes of one model (names local to its namespace)."""
    extra = get_family(family).evaluation_inputs
    return [
        node(
            _bind(train_model, family, **({"variant": variant} if variant else {})),
            ["train_records", "val_records", "tokenizer", "params:model", "params:train", "params:ingest"],
            ["model", "training"],
            name="train_model",
        ),
        node(
            _bind(evaluate_model, family, split=eval_split),
            {"model": "model", "records": "eval_records", "train_records": "train_records",
             "params": "params:evaluation", **{name: name for name in extra}},
            ["evaluation", *evaluation_outputs],
            name="evaluate_model",
        ),
    ]


def _corpus_inputs(corpus: str, eval_split: str, family: str | None = None) -> dict[str, str]:
    """The namespace's free inputs: the corpus splits and tokenizer, and the family's evaluation inputs."""
    extra = get_family(family).evaluation_inputs if family else {}
    return {
        "train_records": f"{corpus}.train_records",
        "val_records": f"{corpus}.val_records",
        "eval_records": f"{corpus}.{eval_split}_records",
        "tokenizer": f"{corpus}.tokenizer",
        **extra,
    }


def _auxiliary(family: str) -> Pipeline:
    spec = get_family(family)
    return spec.auxiliary_pipeline(spec.corpus_prefix) if spec.auxiliary_pipeline else Pipeline([])


def create_model_pipeline(family: str, *, eval_split: str = "test") -> Pipeline:
    """The train -> evaluate -> report pipeline of one registered family.

    Args:
        family: the family's registry name.
        eval_split: the corpus split the evaluation reports on.
    """
    spec = get_family(family)
    if spec.variants:
        return _variants_pipeline(family, spec.corpus_prefix, eval_split)
    report = node(
        _bind(report_model, family),
        ["evaluation", "training", "params:model", "params:train", "params:evaluation"],
        "report",
        name="report_model",
    )
    return _auxiliary(family) + Pipeline(
        Pipeline([*_train_evaluate(family, eval_split), report]),
        namespace=family,
        inputs=_corpus_inputs(spec.corpus_prefix, eval_split, family),
        parameters={"params:ingest": "params:ingest"},  # the shared ingest block, not the family's
        tags=family,
    )


def _variants_pipeline(family: str, corpus: str, eval_split: str) -> Pipeline:
    """Each variant trained and evaluated under ``<family>.<variant>``, then one comparison.

    The variants share the family's parameters (``params:<family>.model|train|evaluation``;
    a variant overrides only its switches). Each variant's model and training history are
    versioned (``<family>.<variant>.model``, ``.training``); its evaluation is passed in
    memory to the comparison, which writes ``<family>.metrics`` (keys ``<variant>/<metric>``),
    ``.metrics_table``, ``.samples`` and one ``.report``. Before it, the best variants are
    trained again with the seeds of ``params:<family>.compare`` (``<family>.seed_repeats``;
    nothing when no seeds are given).
    """
    variants = list(get_family(family).variants)
    shared = {"params:model": f"params:{family}.model", "params:train": f"params:{family}.train",
              "params:evaluation": f"params:{family}.evaluation", "params:ingest": "params:ingest"}
    parts = [
        Pipeline(
            Pipeline(_train_evaluate(family, eval_split, variant,
                                     ("variant_metrics", "variant_metrics_table", "variant_samples"))),
            namespace=f"{family}.{variant}",
            inputs=_corpus_inputs(corpus, eval_split, family),
            parameters=shared,
            tags=family,
        )
        for variant in variants
    ]
    evaluations = {f"evaluation__{v}": f"{family}.{v}.evaluation" for v in variants}
    corpus_inputs = _corpus_inputs(corpus, eval_split)
    extra = {f"input__{name}": dataset for name, dataset in get_family(family).evaluation_inputs.items()}
    repeat = node(
        _bind(repeat_top_variants, family, split=eval_split),
        {**{k: corpus_inputs[k] for k in ("train_records", "val_records", "eval_records", "tokenizer")},
         "model_params": f"params:{family}.model", "train_params": f"params:{family}.train",
         "eval_params": f"params:{family}.evaluation", "ingest_params": "params:ingest",
         "compare_params": f"params:{family}.compare", **evaluations, **extra},
        f"{family}.seed_repeats",
        name=f"{family}.repeat_top_variants",
        tags=family,
    )
    inputs = dict(evaluations)
    inputs.update({f"training__{v}": f"{family}.{v}.training" for v in variants})
    inputs.update({"model_params": f"params:{family}.model", "train_params": f"params:{family}.train",
                   "eval_params": f"params:{family}.evaluation", "repeats": f"{family}.seed_repeats"})
    compare = node(
        _bind(compare_variants, family, split=eval_split),
        inputs,
        [f"{family}.metrics", f"{family}.metrics_table", f"{family}.samples", f"{family}.report"],
        name=f"{family}.compare_variants",
        tags=family,
    )
    return _auxiliary(family) + sum(parts, Pipeline([])) + Pipeline([repeat, compare])
