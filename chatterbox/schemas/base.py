"""What every request and record model shares: how a refused request is told (our error shape, from pydantic's
errors), and how the models are written out as OpenAPI 3.0.3 schemas (``/openapi.json``).

Requests are strict (JSON's types, no coercion: ``"5"`` is not a number) and closed (an unknown field is an error,
``unknown_field``, because a misspelt ``temprature`` silently ignored is a bug report later). Records are open: a
client keeps fields a newer server adds.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_validator
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import core_schema

from ..engines.base import InvalidRequest

REF = "#/components/schemas/{model}"


class Request(BaseModel):
    """A request body. ``codes``: the error code of a field whose value is refused (``format`` -> ``unknown_format``);
    a type error is ``invalid_type``, a missing field ``missing_field``, an unknown one ``unknown_field``."""
    model_config = ConfigDict(extra="forbid", strict=True)
    codes: ClassVar[dict[str, str]] = {}

    @classmethod
    def check(cls, body: Any) -> "Request":
        """The body as this model; raises InvalidRequest naming the first field at fault, as every route answers."""
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object", "invalid_body", "body")
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise refusal(cls, _first(exc.errors(include_url=False)), body) from None


class Form(Request):
    """A form (multipart or urlencoded). Its fields come as text, so a number is read from it (``"0.5"``); an
    optional field left blank counts as left out (a browser sends every input of its form, filled or not); a file
    is its bytes. ``csrf_token`` is the sign-in check's (web/auth.py), not part of the request."""
    model_config = ConfigDict(extra="forbid", strict=False)
    ignored: ClassVar[tuple[str, ...]] = ("csrf_token",)

    @classmethod
    def check_form(cls, fields: Mapping[str, str], files: Mapping[str, bytes] | None = None) -> "Form":
        body: dict[str, Any] = {}
        for name, value in fields.items():
            field = cls.model_fields.get(name)
            if name in cls.ignored or (field is not None and not field.is_required() and not value.strip()):
                continue
            body[name] = value
        return cls.check({**body, **(files or {})})


class Record(BaseModel):
    """Something the API answers with. Read it as an object (``job.status``) or, as scripts written against the
    JSON answers do, by key (``job["status"]``, ``job.get("model")``, ``"model" in job``: only what the answer
    held); ``as_dict()`` is the answer as it came."""
    model_config = ConfigDict(extra="allow")
    _order: tuple[str, ...] = PrivateAttr(default=())  # the answer's own order of its fields

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: Any) -> Any:
        record = handler(data)
        if isinstance(data, dict):
            record._order = tuple(data)
        return record

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.model_fields_set or key in (self.__pydantic_extra__ or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def as_dict(self) -> dict[str, Any]:
        fields = self.model_dump(mode="json", exclude_unset=True)
        rank = {name: i for i, name in enumerate(self._order)}  # a model's own order puts inherited fields first
        return dict(sorted(fields.items(), key=lambda item: rank.get(item[0], len(rank))))


# pydantic's error types, as our codes
_TYPE_ERRORS = ("_type", "_parsing", "int_from_float", "finite_number", "model_attributes_type", "model_type")


def _first(errors: list[dict]) -> dict:
    """The error to answer with: the first field's; where it is a union (a voice given as a name or as {"id"}), the
    branch of the value's own type, whose error says more than "not a string"."""
    same = [e for e in errors if e["loc"][:1] == errors[0]["loc"][:1]]
    return next((e for e in same if not e["type"].endswith(_TYPE_ERRORS)), errors[0])


def refusal(model: type[Request], error: dict, body: dict) -> InvalidRequest:
    loc = _in_body(body, error["loc"])
    field = ".".join(p if not p.isdigit() else f"[{p}]" for p in loc).replace(".[", "[")
    top = loc[0] if loc else "body"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(model.model_fields) if len(loc) == 1 else ""
        return InvalidRequest(f"unknown field {loc[-1]!r}" + (f"; known fields: {known}" if known else ""),
                              "unknown_field", field)
    if kind == "missing":
        return InvalidRequest(f"{field} is required", "missing_field", field)
    value = _value(body, loc)
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        # an integer too large for a float (JSON allows thousands of digits): out of any range
        return InvalidRequest(f"{field} is out of range: {str(value)[:40]}...", model.codes.get(top, "out_of_range"),
                              field)
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return InvalidRequest(f"unknown {field} {str(value)[:80]!r}; choose one of {expected}",
                              model.codes.get(top, "invalid_value"), field)
    if kind.endswith(_TYPE_ERRORS) or kind in _TYPE_ERRORS:
        wanted = error["msg"].removeprefix("Input should be ").removesuffix(" instance").replace("a valid ", "a ")
        wanted = re.sub(r"\ba (?=[aeiou])", "an ", wanted.replace("a dictionary", "an object"))
        return InvalidRequest(f"{field} must be {wanted}, not {_json_type(value)}", "invalid_type", field)
    code = model.codes.get(top, "out_of_range" if kind in _RANGE_ERRORS else "invalid_value")
    return InvalidRequest(f"{field}: {error['msg'][0].lower()}{error['msg'][1:]}", code, field)


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _in_body(body: Any, loc: tuple) -> list[str]:
    """The error's place as the body's own path: pydantic's also names the branch of a union it tried
    (``("tags", "list[str]", 0)``), which is no part of the request."""
    path = []
    for part in loc:
        if isinstance(body, dict) and part in body:
            body = body[part]
        elif isinstance(body, list) and isinstance(part, int) and part < len(body):
            body = body[part]
        elif isinstance(part, str) and (part[:1].isupper() or "[" in part or part in _BRANCHES):
            continue  # a union's branch: a model's name, a generic type, a plain type's name
        path.append(str(part))
        if not isinstance(body, (dict, list)):
            continue
    return path


_BRANCHES = {"str", "int", "float", "bool", "none", "constrained-str", "function-before", "literal"}


def _value(body: Any, loc: list[str]) -> Any:
    for part in loc:
        try:
            body = body[int(part)] if isinstance(body, list) else body[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return None
    return body


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class OpenAPI30(GenerateJsonSchema):
    """pydantic writes JSON Schema 2020-12; OpenAPI 3.0.3 wants its own dialect: ``nullable`` instead of a null
    branch, ``enum`` instead of ``const``, ``example`` instead of ``examples``, and no ``title`` on every field."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> dict:
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:  # a $ref takes no siblings in 3.0
            return {"allOf": [inner], "nullable": True}
        out = {**inner, "nullable": True}
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out

    def literal_schema(self, schema: core_schema.LiteralSchema) -> dict:
        out = super().literal_schema(schema)
        if "const" in out:
            out["enum"] = [out.pop("const")]
        return out


def _dialect(node: Any) -> Any:
    if isinstance(node, dict):
        # no titles (the name is the key), and no ``default: null``: a field left out means its documented default
        node = {k: _dialect(v) for k, v in node.items()
                if not (k == "title" and isinstance(v, str)) and not (k == "default" and v is None)}
        if "examples" in node and isinstance(node["examples"], list) and node["examples"]:
            node["example"] = node.pop("examples")[0]
        return node
    if isinstance(node, list):
        return [_dialect(v) for v in node]
    return node


def openapi_schemas(requests: Iterable[type[BaseModel]], records: Iterable[type[BaseModel]]) -> dict[str, dict]:
    """components/schemas for these models and every model they name (by class name)."""
    pairs = [(m, "validation") for m in requests] + [(m, "serialization") for m in records]
    _, top = models_json_schema(pairs, ref_template=REF, schema_generator=OpenAPI30)
    return {name: _dialect(schema) for name, schema in top.get("$defs", {}).items()}
