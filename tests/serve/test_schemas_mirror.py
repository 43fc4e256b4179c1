"""The API's schema of an explanation step is the explain page's own data: the pydantic models that
document it (qkv.serve.schemas) name the same fields as the dataclasses that build it
(qkv.explain.steps), so a field added to one and not the other fails here, not in a browser."""

import dataclasses

import pytest

pytest.importorskip("pydantic", reason="the serve extra is not installed: pip install 'qkv[serve]'")

from qkv.explain import steps  # noqa: E402
from qkv.serve import schemas  # noqa: E402


@pytest.mark.parametrize("built, documented", [(steps.Table, schemas.MatrixTable), (steps.Step, schemas.WalkStep)])
def test_the_schema_names_the_fields_the_explain_steps_build(built, documented):
    assert [f.name for f in dataclasses.fields(built)] == list(documented.model_fields)


def test_a_built_step_validates_against_its_schema():
    import torch

    table = steps.table(torch.arange(6.0).view(2, 3), ["a", "b"], name="q")
    step = steps.Step({"key": "x", "args": {}}, [], {"key": "y", "args": {}}, [table])
    assert schemas.WalkStep.model_validate(steps.to_json(step)).tables[0].name == "q"
