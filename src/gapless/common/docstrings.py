"""Field meanings from attribute docstrings, read when a document is made, not at import.

Models document each field with a docstring under it (PEP 257's attribute docstrings). Pydantic
can read them itself (`use_attribute_docstrings`), but it does so for every model class as it is
created: about 70 ms of CPU in each process start (a recorder, a management server), while only
the OpenAPI documents and the configuration reference use them. So they are read here, once per
class, when one of those is made (`FieldDocs` for JSON schemas, `field_docs` for the reference).
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema


@functools.cache
def _own_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a class made at run time)
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs = {}
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """Each field's attribute docstring, inherited ones included (a subclass's own win)."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if issubclass(cls, BaseModel) and cls is not BaseModel:
            docs.update(_own_docs(cls))
    return docs


def field_description(model: type[BaseModel], name: str) -> str:
    """A field's meaning: its `Field(description=…)`, else its attribute docstring."""
    return model.model_fields[name].description or field_docs(model).get(name, "")


class FieldDocs(GenerateJsonSchema):
    """JSON schemas whose properties carry their fields' attribute docstrings as descriptions."""

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        model, properties = schema["cls"], json_schema.get("properties", {})
        docs = field_docs(model)
        for name, field in model.model_fields.items():
            key = (field.serialization_alias if self.mode == "serialization" else field.validation_alias) or name
            if name in docs and field.description is None and isinstance(key, str) and key in properties:
                properties[key]["description"] = docs[name]  # over one its type gives, as pydantic's own
        return json_schema
