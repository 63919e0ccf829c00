"""The HTTP API's request limits, response bodies and OpenAPI document.

``recstream api`` serves them; the document is exported beside the message
schemas (``schemas/json/openapi.json``) so that clients can be generated
without a running server. The request body of ``POST /v1/events`` is the
``events`` topic's :class:`~recstream.schemas.messages.Event`, validated by the
same code as the topic's messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from recstream.schemas.messages import Event

#: Largest request body, in bytes (a batch of MAX_BATCH events of ~200 bytes fits).
MAX_BODY_BYTES = 1024 * 1024
#: Most events in one ``POST /v1/events``.
MAX_BATCH = 1000
#: Largest ``k`` a list request may ask for.
MAX_K = 100
DEFAULT_K = 10
#: Most item ids in one ``exclude`` parameter.
MAX_EXCLUDE = 1000
#: ``GET /v1/popular?window=``: the decay half-lives, in seconds, an app may ask for.
POPULAR_WINDOWS = {"1h": 3600.0, "1d": 86400.0, "7d": 604800.0}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiItem(_Body):
    item_id: str
    score: float


class UserRecommendations(_Body):
    """A user's latest list: the stream's (``source: stream``) or, for a user
    without one, the popular list (``source: popular``)."""

    user_id: str
    source: Literal["stream", "popular"]
    items: list[ApiItem]
    model_version: str | None = Field(description="the version that ranked the list; "
                                      "null for the popular list")
    emitted_ms: int | None = Field(description="when the scorer emitted the list")
    age_ms: int | None = Field(description="how old the list is at the answer")
    trigger_event_id: str | None = Field(description="the event that caused the list")
    filled_from_popular: int = Field(
        default=0, description="with `category`: how many of the last items come from the "
        "category's trending list, where the user's own list held fewer than k of it")


class PopularItems(_Body):
    """Items ranked by interactions with exponential time decay (event time)."""

    items: list[ApiItem]
    half_life_s: float = Field(description="the decay's half-life (the `window` asked for)")
    events: int = Field(description="events the ranking has counted")


class SimilarItems(_Body):
    """Nearest items by cosine over the served model's item table."""

    item_id: str
    source: Literal["model", "none"] = Field(description="none: no model loaded, or the "
                                             "item unknown to it (not an error)")
    model_version: str | None
    items: list[ApiItem]


class EventsAccepted(_Body):
    accepted: int = Field(description="events the broker acknowledged")
    event_ids: list[str]


class ApiError(_Body):
    """A refused request: ``field`` names what was wrong (e.g. ``k``, ``events[3].ts``)."""

    error: str = Field(description="short machine-readable code, e.g. bad_parameter")
    field: str | None
    detail: str


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_ERRORS = {
    "400": _answer("ApiError", "a bad parameter or body; `field` names it"),
    "404": _answer("ApiError", "no such route"),
}
_K = {"name": "k", "in": "query", "required": False,
      "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": DEFAULT_K}}


def _id_in_path(name: str) -> dict[str, Any]:
    """A path parameter with the messages' id rule (``schemas.messages.Id``)."""
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 256,
                       "pattern": "^[^\\x00-\\x1f]+$"}}  # fmt: skip


_USER = _id_in_path("user_id")
_EXCLUDE = {"name": "exclude", "in": "query", "required": False,
            "description": f"item ids never to return, comma-separated (at most {MAX_EXCLUDE})",
            "schema": {"type": "string"}}
_ITEM = _id_in_path("item_id")
_CATEGORY = {"name": "category", "in": "query", "required": False,
             "description": "only items of this category (as the `items` topic states it)",
             "schema": {"type": "string", "minLength": 1, "maxLength": 256}}
_WINDOW = {"name": "window", "in": "query", "required": False,
           "description": "the decay's half-life; default: RECSTREAM_POPULAR_HALF_LIFE_S",
           "schema": {"type": "string", "enum": list(POPULAR_WINDOWS)}}


def _paths() -> dict[str, Any]:
    batch = {"type": "array", "items": _ref("Event"), "minItems": 1, "maxItems": MAX_BATCH}
    return {
        "/v1/users/{user_id}/recommendations": {"get": {
            "summary": "The user's latest recommendations (the popular list if none)",
            "operationId": "userRecommendations",
            "parameters": [_USER, _K, _EXCLUDE, _CATEGORY],
            "responses": {"200": _answer("UserRecommendations", "the list"), **_ERRORS},
        }},
        "/v1/popular": {"get": {
            "summary": "Trending items, time-decayed",
            "operationId": "popular",
            "parameters": [_K, _EXCLUDE, _CATEGORY, _WINDOW],
            "responses": {"200": _answer("PopularItems", "the list"), **_ERRORS},
        }},
        "/v1/items/{item_id}/similar": {"get": {
            "summary": "Nearest items by the served model's item table (retired ones left out)",
            "operationId": "similarItems",
            "parameters": [_ITEM, _K, _EXCLUDE],
            "responses": {"200": _answer("SimilarItems", "the list"), **_ERRORS},
        }},
        "/v1/events": {"post": {
            "summary": "Produce events to the `events` topic; answers once the broker acknowledged",
            "operationId": "postEvents",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("Event"), batch]}}}},
            "responses": {
                "202": _answer("EventsAccepted", "every event acknowledged by the broker"),
                **_ERRORS,
                "413": _answer("ApiError", f"body over {MAX_BODY_BYTES} bytes"),
                "503": _answer("ApiError", "the broker did not acknowledge in time; retry"),
            },
        }},
    }


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document, generated from the code."""
    models: dict[str, type[BaseModel]] = {
        "Event": Event, "ApiItem": ApiItem, "UserRecommendations": UserRecommendations,
        "PopularItems": PopularItems, "SimilarItems": SimilarItems,
        "EventsAccepted": EventsAccepted, "ApiError": ApiError,
    }  # fmt: skip
    schemas: dict[str, Any] = {}
    for name, model in models.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "recstream API", "version": "1",
                 "description": "Users' latest lists, trending items and event intake, "
                                "answered from the stream's own topics."},
        "paths": _paths(),
        "components": {"schemas": schemas},
    }
