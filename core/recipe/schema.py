"""``orch-tui schema``: the JSON Schema of the recipe format, for editors, made by msgspec from
the model itself, so it cannot drift from what the loader accepts.

What msgspec writes is tidied for the YAML a person edits: a field the recipe may leave out is
absent, never ``null`` (msgspec says ``anyOf: [..., null]`` for the model's ``| None``); the
fields the loader sets (``index``, ``line``) are not the user's to write; every property carries
its description (msgspec leaves it off a ``$ref``), in the order of the field tables; and a
``ready`` or ``health`` mapping needs exactly one condition (and a ``ready`` option such as
``host`` the condition it goes with). Rules a schema cannot say (unique names, known
dependencies, no cycles, importable modules, which fields need ``background: true``) are left
to ``orch-tui validate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core.recipe.kinds import HEALTH_KINDS, READY_KINDS, READY_OPTIONS
from core.recipe.model import (
    EXTENSION_PREFIX,
    HEALTH_FIELDS,
    LOADER_FIELDS,
    READY_FIELDS,
    RECIPE_FIELDS,
    STEP_CLASSES,
    STEP_FIELDS,
    FieldSpec,
    HealthCheck,
    Readiness,
    RecipeFile,
    Step,
)

_NULL = {"type": "null"}


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12): a list of steps, or a mapping with ``steps``."""
    steps = Annotated[tuple[Step, ...], Meta(min_length=1)]
    (listed, mapped), defs = msgspec.json.schema_components(
        [steps, RecipeFile], ref_template="#/$defs/{name}"
    )
    tables: dict[str, Mapping[str, FieldSpec]] = {
        RecipeFile.__name__: RECIPE_FIELDS,
        Readiness.__name__: READY_FIELDS,
        HealthCheck.__name__: HEALTH_FIELDS,
    }
    tables.update((cls.__name__, STEP_FIELDS) for cls in STEP_CLASSES.values())
    for name, table in tables.items():
        _tidy(defs[name], table)
    for name in (RecipeFile.__name__, *(cls.__name__ for cls in STEP_CLASSES.values())):
        defs[name]["patternProperties"] = {f"^{EXTENSION_PREFIX}": {}}  # anchors' place
    defs[Readiness.__name__]["oneOf"] = [{"required": [kind]} for kind in READY_KINDS]
    defs[Readiness.__name__]["dependentSchemas"] = {  # host only with port, ...
        option: {"anyOf": [{"required": [kind]} for kind in kinds]}
        for option, kinds in READY_OPTIONS.items()
    }
    defs[HealthCheck.__name__]["oneOf"] = [{"required": [kind]} for kind in HEALTH_KINDS]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "orch-tui recipe",
        "description": "A list of steps, or a mapping with 'steps' and recipe-wide settings.",
        "oneOf": [listed, mapped],
        "$defs": defs,
    }


def _tidy(struct: dict[str, Any], table: Mapping[str, FieldSpec]) -> None:
    properties = struct["properties"]
    struct["properties"] = {
        name: _absent_not_null(properties[name]) | {"description": spec.description}
        for name, spec in table.items()
        if name in properties and name not in LOADER_FIELDS
    }


def _absent_not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """An optional field without its ``null``: the value is written, or the field left out."""
    prop = dict(prop)
    if prop.get("default", ...) is None:
        del prop["default"]
    if _NULL in prop.get("anyOf", ()):
        rest = [p for p in prop.pop("anyOf") if p != _NULL]
        if len(rest) == 1:
            prop = rest[0] | prop
        else:
            prop["anyOf"] = rest
    return prop
