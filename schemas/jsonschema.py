"""Export the message types as JSON Schema files for producers in other languages,
and the HTTP API's OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

from recstream.schemas.api import openapi_document
from recstream.schemas.messages import MESSAGE_TYPES

SCHEMA_DIR = Path(__file__).parent / "json"


def render_all() -> dict[str, str]:
    """File name -> JSON Schema text, generated from the code."""
    out = {}
    for name, model in MESSAGE_TYPES.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://recstream.dev/schemas/{name}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    out["openapi.json"] = json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"
    return out


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in render_all().items():
        path = directory / fname
        path.write_text(text)
        written.append(path)
    return written
