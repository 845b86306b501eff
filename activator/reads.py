"""Reads of state: which requests they are, the last answer Ollama gave to each,
and what the activator can truthfully say about them while the worker sleeps
(DESIGN decision 12).

Chat UIs list the models on every page load and uptime checks poll `/` or
`/api/version`; if those woke the GPU or counted as work, a client polling more
often than `idleMinutes` would keep a GPU billing for good. So a read never
wakes a worker and is never work. While Ollama is awake it is forwarded and its
answer kept (decoded: the activator asks Ollama for no compression, so a client
that did not ask for compression never gets it); while Ollama sleeps it is
answered from the last answer seen for the same method, path and query (for
`/api/show`, the same model), else from what the activator knows, in Ollama's
own JSON shapes, else 503 with `Retry-After`: a read it can say nothing true
about (a blob check, an unknown model) gets no guess.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from activator.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD"})
READ_POSTS = frozenset({"/api/show"})
# Ollama (server/routes.go, v0.32.15) answers HEAD on these paths only; elsewhere HEAD is a 405.
HEAD_PATHS = frozenset({"/", "/api/version", "/api/tags"})
JSON = "application/json; charset=utf-8"   # gin's c.JSON
OPENAI_JSON = "application/json"           # Ollama's /v1 writers
TEXT = "text/plain; charset=utf-8"


def is_read(method: str, path: str) -> bool:
    return method in READ_METHODS or (method == "POST" and path in READ_POSTS)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def cache_key(method: str, path: str, query: str, body: bytes) -> Optional[tuple[str, ...]]:
    """What makes two reads the same read; None for one that cannot be keyed (an
    `/api/show` whose body names no model)."""
    if path not in READ_POSTS:
        return (method, path, query)
    payload = json_object(body)
    model = model_of(payload)
    if model is None:
        return None
    return (method, path, query, model, "verbose" if payload.get("verbose") else "")


def json_object(body: bytes) -> dict:
    """A request's JSON body, or {} when it is not a JSON object."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def model_of(payload: dict) -> Optional[str]:
    """The model a request names (`model`, or `name` in older clients), as Ollama lists it."""
    model = payload.get("model") or payload.get("name")
    return full_name(model) if isinstance(model, str) and model else None


class ReadCache:
    """The last answers, least recently used dropped first."""

    def __init__(self, entries: int, body_bytes: int) -> None:
        self._entries = entries
        self.body_bytes = body_bytes
        self._answers: OrderedDict[tuple[str, ...], Answer] = OrderedDict()

    def get(self, key: Optional[tuple[str, ...]]) -> Optional[Answer]:
        if key is None or key not in self._answers:
            return None
        self._answers.move_to_end(key)
        return self._answers[key]

    def put(self, key: Optional[tuple[str, ...]], answer: Answer) -> None:
        """Keep a decoded answer from Ollama itself (not a 5xx: that is no answer about state)."""
        if key is None or answer.status >= 500 or len(answer.body) > self.body_bytes:
            return
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self._entries:
            self._answers.popitem(last=False)


def full_name(model: str) -> str:
    """Ollama lists a model pulled without a tag as `<name>:latest`."""
    last = model.rsplit("/", 1)[-1]
    return model if ":" in last else f"{model}:latest"


def owner(model: str) -> str:
    """The namespace Ollama's `/v1/models` puts in `owned_by`: `library` for
    official models, else the part before the name."""
    parts = model.split(":", 1)[0].split("/")
    return parts[-2] if len(parts) >= 2 else "library"


def _json(payload: object, content_type: str = JSON) -> Answer:
    return Answer(200, json.dumps(payload, separators=(",", ":")).encode(), content_type)


def known(method: str, path: str, settings: Settings) -> Optional[Answer]:
    """What the activator can truthfully answer before it has seen Ollama's
    answer, in the shapes of Ollama's api/types.go and openai/openai.go: the
    configured models (no size, digest or date: only Ollama knows those),
    nothing loaded, the configured version."""
    if method not in READ_METHODS or method == "HEAD" and path not in HEAD_PATHS:
        return None
    models = [full_name(m) for m in settings.models]
    if path == "/":
        return Answer(200, b"Ollama is running", TEXT)
    if path == "/api/version":
        return _json({"version": settings.ollama_version})
    if path == "/api/tags":
        return _json({"models": [{"name": m, "model": m} for m in models]})
    if path == "/api/ps":
        return _json({"models": []})
    if path == "/v1/models":
        # Ollama sends `"data": null` when it has no model (middleware/openai_test.go).
        return _json({"object": "list", "data": [_openai_model(m) for m in models] or None}, OPENAI_JSON)
    if path.startswith("/v1/models/"):
        asked = path[len("/v1/models/"):]  # Ollama answers with the id as asked (openai.ToModel)
        return _json(_openai_model(asked), OPENAI_JSON) if full_name(asked) in models else None
    return None


def _openai_model(model: str) -> dict[str, object]:
    # `created` is the model's modification time, which only Ollama knows: 0 says "unknown".
    return {"id": model, "object": "model", "created": 0, "owned_by": owner(model)}


def unknown(path: str, retry_after: int) -> tuple[Answer, dict[str, str]]:
    """A read the activator can say nothing true about while Ollama sleeps."""
    message = (f"the GPU worker is asleep and the activator has no answer for {path}; reads never "
               f"wake it (POST /hybrid-llm/wake does)")
    if path.startswith("/v1/"):
        body: dict[str, object] = {"error": {"message": message, "type": "api_error", "param": None,
                                             "code": None}}
    else:
        body = {"error": message}
    return (Answer(503, json.dumps(body).encode(), JSON), {"Retry-After": str(retry_after)})
