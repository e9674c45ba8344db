"""``/openapi.json``'s component schemas, generated from the models that check the requests and describe the
answers (chatterbox/schemas), and completed with what only this server knows: its engine's parameters and
voices, its limits and the models its workers hold (the same settings and lists the checks read)."""
from __future__ import annotations

from typing import Any

from chatterbox.engines.models import ALIASES, MODELS
from chatterbox.schemas.base import openapi_schemas
from chatterbox.schemas.records import RECORDS
from chatterbox.schemas.requests import REQUESTS, engine_params_model
from chatterbox.settings import Settings

Schema = dict[str, Any]
# EngineParams is itself nullable (null: the defaults), so a plain $ref, which the docs page follows, says all.
PARAMS_REF = {"$ref": "#/components/schemas/EngineParams"}
KOKORO_MODEL = "kokoro"


def component_schemas(settings: Settings, described: dict, served: list[str]) -> dict[str, Schema]:
    """Every request body's and answer's schema, and EngineParams, for this server."""
    schemas = openapi_schemas([*REQUESTS, engine_params_model(described)], RECORDS)
    schemas["EngineParams"]["nullable"] = True
    props = {name: schema.get("properties", {}) for name, schema in schemas.items()}
    for name, field in (("SynthesizeRequest", "text"), ("SynthesizeForm", "text"), ("SpeechRequest", "input"),
                        ("CaptionedSpeechRequest", "input")):
        props[name][field]["maxLength"] = settings.max_text_chars
    for name in ("SynthesizeRequest", "BookRequest"):
        props[name]["params"] = PARAMS_REF
    builtin = [v["id"] for v in described["voices"] if v.get("builtin")]
    voices = f" (built in: {', '.join(f'`{v}`' for v in builtin)})" if builtin else ""
    for name in ("SynthesizeRequest", "SynthesizeForm", "BookRequest", "BookForm"):
        voice = props[name]["voice"]
        voice["description"] = voice["description"].replace("a voice of `GET /voices`", f"a voice of `GET /voices`"
                                                                                         f"{voices}", 1)
        model = props[name]["model"]
        model["enum"] = [*MODELS, *ALIASES, *([None] if model.get("nullable") else [])]
    props["SpeechRequest"]["model"]["enum"] = served
    props["CaptionedSpeechRequest"]["model"]["enum"] = [*served, KOKORO_MODEL, None]
    props["BookRequest"]["format"]["default"] = props["BookForm"]["format"]["default"] = settings.book_format
    lexicon = props["BookRequest"]["lexicon"]
    lexicon["oneOf"][0]["maxItems"] = settings.lexicon_max_entries
    param_names = [p["name"] for p in described["params"]]
    schemas["EngineParam"]["properties"]["name"]["enum"] = param_names
    return schemas
