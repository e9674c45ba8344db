"""The API description: /openapi.json is valid OpenAPI, names every route, matches what the live server answers
(schemathesis, on every documented operation), and /docs shows it in a browser."""
from __future__ import annotations

import copy
import functools
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from tests.books import make_epub
from tests.conftest import System, exported_voice, wait_until

METHODS = ("get", "post", "put", "patch", "delete")
EXAMPLES_PER_OPERATION = 3  # generated requests per operation and mode (valid, invalid), after its examples
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
# Routes that are not API operations: pages, static files and the websocket (described in the document's text).
NOT_OPERATIONS = {"static", "events.job_events", "docs.docs_page"}
STEERING = [("post", "/audiobooks/{job_id}/chunks/{index}/regenerate"), ("post", "/audiobooks/{job_id}/pause"),
            ("post", "/audiobooks/{job_id}/resume"), ("post", "/audiobooks/{job_id}/cancel"),
            ("delete", "/audiobooks/{job_id}")]
# The test's copy of the document keeps generated texts short: a 5000-character text is valid (and documented),
# but would keep the one Piper worker busy for the rest of the run.
SHORT_TEXTS = {"SynthesizeRequest": ("text", 40), "SynthesizeForm": ("text", 40), "SpeechRequest": ("input", 40),
               "CaptionedSpeechRequest": ("input", 40), "BookRequest": ("text", 120)}


def auth(system: System) -> dict[str, str]:
    return {"Authorization": f"Bearer {system.api_key}"}


def operations(document: dict) -> Iterator[tuple[str, str, dict]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def flask_path(rule: str) -> str:
    """/jobs/<job_id>/chunks/<int:index> -> /jobs/{job_id}/chunks/{index}"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


# -- the things the documented operations need: real ids ------------------------------------------------------------

def wait_book(system: System, job_id: str) -> dict:
    def finished():
        book = requests.get(f"{system.url}/audiobooks/{job_id}", headers=auth(system), timeout=10).json()
        return book if book["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(finished, 180, 0.3, f"book {job_id}")


@pytest.fixture(scope="module")
def ids(system: System, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A finished job, a job to cancel, a finished book with a cover, a book to steer, two saved voices, a model;
    and the answers that made them, under "answers", to be checked against the document too."""
    system.ensure_worker()
    headers, url = auth(system), system.url
    tag = str(time.monotonic_ns())[-8:]
    chapters = [(f"Opening {tag}", ["The harbour was quiet."]), (f"Closing {tag}", ["Then the boats came home."])]
    answers = [
        ("post", "/audiobooks", requests.post(url + "/audiobooks", headers=headers, timeout=30, files={
            "file": ("small.epub", make_epub(chapters, title=f"Small {tag}"))})),
        ("post", "/audiobooks", requests.post(url + "/audiobooks", headers=headers, timeout=30,
                                              json={"text": f"A second small book, {tag}.", "format": "ogg"})),
        ("post", "/synthesize", requests.post(url + "/synthesize", headers=headers, timeout=30,
                                              json={"text": f"A finished job, {tag}.", "format": "mp3"})),
    ]
    for name in ("voice", "voice to delete"):
        answers.append(("post", "/voices/import", requests.post(url + "/voices/import", headers=headers, timeout=30,
            files={"file": ("a.voice", exported_voice(tmp_path_factory.mktemp("voice"), f"{name} {tag}"))})))
    answers.append(("get", "/v1/models", requests.get(url + "/v1/models", headers=headers, timeout=10)))
    assert [a.status_code for _, _, a in answers] == [202, 202, 202, 201, 201, 200], [a.text for _, _, a in answers]
    book, book2, job, voice, voice2, models = (a.json() for _, _, a in answers)
    assert system.wait_job(job["job_id"])["status"] == "succeeded"
    # DELETE ?purge=1 forgets a finished job; the examples keep DELETE for cancelling, so it is done here.
    forgotten = system.submit(f"A job to forget, {tag}.")
    system.wait_job(forgotten["job_id"])
    answers.append(("delete", "/jobs/{job_id}", requests.delete(f"{url}/jobs/{forgotten['job_id']}?purge=1",
                                                               headers=headers, timeout=10)))
    assert answers[-1][2].json() == {"job_id": forgotten["job_id"], "deleted": True}
    for submitted in (book, book2):
        assert wait_book(system, submitted["job_id"])["status"] == "succeeded"
    # Long enough to be queued or running still when DELETE /jobs/{job_id} comes (else it answers 409).
    to_cancel = system.submit(" ".join(f"Sentence {i} of a job that runs a while, to be cancelled." for i in range(40)))
    yield {"job": job["job_id"], "job_to_cancel": to_cancel["job_id"], "book": book["job_id"],
           "book_to_steer": book2["job_id"], "voice": voice["id"], "voice_to_delete": voice2["id"],
           "model": models["data"][0]["id"], "api_key": system.api_key, "answers": answers}
    requests.delete(f"{url}/jobs/{to_cancel['job_id']}", headers=headers, timeout=10)  # if no test did
    # Generated requests set entries in the admin key's lexicon: its later jobs, in other tests, must not say them.
    requests.delete(f"{url}/lexicon", headers=headers, timeout=10)


def example_for(method: str, path: str, name: str, ids: dict[str, Any]) -> Any:
    """The real id an operation's path parameter gets in schemathesis' examples phase."""
    if name == "index":
        return 0
    if name == "model_id":
        return ids["model"]
    if name == "voice_id":
        return ids["voice_to_delete"] if method == "delete" else ids["voice"]
    if path.startswith("/audiobooks/"):
        steering = method == "delete" or path.endswith(("/pause", "/resume", "/cancel", "/regenerate"))
        return ids["book_to_steer"] if steering else ids["book"]
    return ids["job_to_cancel"] if method == "delete" else ids["job"]


def for_testing(document: dict, ids: dict[str, Any]) -> dict:
    """The served document with real ids as examples and short texts (see SHORT_TEXTS); nothing else changes."""
    document = copy.deepcopy(document)
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                parameter["example"] = example_for(method, path, parameter["name"], ids)
    # Signing in with the real key (else every generated key is refused with 401).
    form = document["paths"]["/login"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    form["example"] = {"key": ids["api_key"], "next": "/docs", "csrf_token": "no browser: refused with 403"}
    schemas = document["components"]["schemas"]
    for name, (field, limit) in SHORT_TEXTS.items():
        if name in schemas:
            schemas[name]["properties"][field]["maxLength"] = limit
    if "BookRequest" in schemas:
        schemas["BookRequest"]["properties"]["chapters"]["maxItems"] = 2
        schemas["BookChapter"]["properties"]["text"]["maxLength"] = 80
    return document


@pytest.fixture(scope="module")
def document(system: System) -> dict:
    response = requests.get(system.url + "/openapi.json", headers={"Authorization": None}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    return response.json()


@pytest.fixture(scope="module")
def api_schema(system: System, document: dict, ids: dict[str, Any]):
    schema = schemathesis.openapi.from_dict(for_testing(document, ids))
    schema.config.update(base_url=system.url, headers=auth(system), request_timeout=150)
    schema.config.generation.update(with_security_parameters=False)
    return schema


@functools.lru_cache(maxsize=1)
def collection_document() -> dict:
    """The document, built in-process without Redis, so that the operations are known at collection time and each
    is its own test (schemathesis' lazy fixture loader needs pytest internals that pytest 9 no longer has). The
    paths do not depend on the server's state, so it lists the same ones as the live server's."""
    from chatterbox.settings import load
    from web.common import Services
    from web.openapi import build_document

    return build_document(Services(load({"tts_engine": "piper", "redis_url": "redis://127.0.0.1:9/0",
                                         "data_dir": Path(tempfile.gettempdir()) / "cbx-openapi-collect"})))


def documented_operations() -> list[tuple[str, str]]:
    """(method, path) of every documented operation."""
    found = [(method, path) for method, path, _ in operations(collection_document())]
    # The job to cancel goes first, while it still runs (and before it holds up the examples' ?wait=1); the book
    # to steer goes through its states in STEERING's order (regenerated: queued again; then paused, resumed,
    # cancelled), so that each action meets a state that allows it at least once.
    return sorted(found, key=lambda op: -1 if op == ("delete", "/jobs/{job_id}") else
                  STEERING.index(op) + 1 if op in STEERING else 0)


def run_cases(strategy, count: int, system: System) -> None:
    """Draw ``count`` cases (a fixed sequence: derandomized), send each, and check the answer against the document."""
    @settings(max_examples=count, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case) -> None:
        case.call_and_validate(headers=auth(system), checks=CHECKS, timeout=150)

    check()


# -- tests ----------------------------------------------------------------------------------------------------------

def test_the_document_is_valid_openapi(system: System, document: dict):
    loaded = schemathesis.openapi.from_url(system.url + "/openapi.json", headers={"Authorization": None})
    loaded.validate()  # against the OpenAPI 3.0 meta-schema
    assert all(isinstance(result, Ok) for result in loaded.get_all_operations())
    assert document["openapi"].startswith("3.")
    bearer = document["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert {"bearerAuth": []} in document["security"]
    # The engine's real parameters, with their ranges, are what /synthesize takes.
    engine = requests.get(system.url + "/engine", headers=auth(system), timeout=10).json()
    params = document["components"]["schemas"]["EngineParams"]["properties"]
    assert {p["name"]: (p["min"], p["max"]) for p in engine["params"]} == {
        name: (p["minimum"], p["maximum"]) for name, p in params.items()}
    assert document["components"]["schemas"]["SynthesizeRequest"]["properties"]["format"]["enum"][:-1] == \
        engine["formats"]


def test_every_route_is_documented_and_every_operation_is_a_route(system: System, document: dict):
    from web import create_app

    app = create_app({"redis_url": system.redis.url, "data_dir": system.data, "tts_engine": "piper",
                      "admin_key": system.api_key})
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_OPERATIONS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if rule.endpoint.startswith("pages.") and method == "GET":
                continue  # the dashboard's pages (HTML), not API operations
            routes.add((method.lower(), flask_path(rule.rule)))
    documented = {(method, path) for method, path, _ in operations(document)}
    assert sorted(routes - documented) == []
    assert sorted(documented - routes) == []


def test_errors_share_one_shape_and_protected_operations_answer_401_429(document: dict):
    for method, path, operation in operations(document):
        label = f"{method.upper()} {path}"
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and path not in ("/health", "/login"):
                target = response["$ref"].split("/")[-1] if "$ref" in response else None
                if target is not None:
                    response = document["components"]["responses"][target]
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, \
                    f"{label} {status}"
        public = operation.get("security") == []
        optional = {} in operation.get("security", [])
        assert public or optional or {"401", "429"} <= set(operation["responses"]), label
        if "requestBody" in operation:
            assert "413" in operation["responses"], label
    assert {p for p, item in document["paths"].items() for op in item.values() if op.get("security") == []} == {
        "/openapi.json", "/login", "/logout"}


def test_operations_want_a_key_exactly_where_the_document_says(live: System, document: dict, ids: dict[str, Any]):
    for method, path, operation in operations(document):
        url = live.url + re.sub(r"{(\w+)}", lambda m: str(example_for(method, path, m.group(1), ids)), path)
        # Harmless: without a key nothing is done, and the open operations change nothing without a body.
        response = requests.request(method, url, headers={"Authorization": None}, timeout=30)
        security = operation.get("security", document["security"])
        if security == [] or {} in security:
            assert response.status_code != 401 or path == "/login", f"{method} {path}"  # /login: no key in the form
        else:
            assert response.status_code == 401, f"{method} {path}: {response.status_code}"
            assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("method, path", documented_operations(), ids=lambda v: v.upper() if v in METHODS else v)
def test_the_server_answers_as_documented(method: str, path: str, api_schema, live: System):
    operation = api_schema[path][method.upper()]
    # The document's own examples first (with the real ids), then generated requests, valid and invalid alike:
    # every answer must have a documented status, content type, headers and body.
    for strategy in operation.get_strategies_from_examples():
        run_cases(strategy, 1, live)
    run_cases(operation.as_strategy(GenerationMode.POSITIVE), EXAMPLES_PER_OPERATION, live)
    try:
        run_cases(operation.as_strategy(GenerationMode.NEGATIVE), EXAMPLES_PER_OPERATION, live)
    except Unsatisfiable:
        pass  # nothing in the operation can be made invalid (no parameters, or only free-form strings)


def test_the_answers_that_made_the_test_data_are_as_documented(api_schema, ids: dict[str, Any]):
    # POST /voices/import succeeds only with a real exported voice, which generated requests never are; DELETE
    # /jobs/{job_id}?purge=1 needs a finished job of its own.
    for method, path, response in ids["answers"]:
        documented = api_schema[path][method.upper()].definition.raw["responses"]
        assert str(response.status_code) in documented, f"{method} {path} {response.status_code}"
        api_schema[path][method.upper()].validate_response(response)


def test_the_docs_page_lists_every_operation(live: System, browser, document: dict):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.url + "/docs")
    page.wait_for_selector("details.op")
    count = sum(1 for _ in operations(document))
    assert page.locator("details.op").count() == count
    assert page.text_content("#count") == f"{count} of {count} operations"
    summary = page.locator("details#synthesize > summary")
    assert "/synthesize" in summary.text_content() and "API key" in summary.text_content()
    # keyboard: focus the operation's summary and open it with Enter; its fields and responses are there
    summary.focus()
    page.keyboard.press("Enter")
    assert page.locator("details#synthesize").evaluate("d => d.open")
    body = page.locator("details#synthesize .body").text_content()
    assert "length_scale" in body and "audio_prompt" in body and "429" in body
    assert "/ws/jobs/" in page.text_content("#intro")
    page.fill("#filter", "audiobooks m4b")
    assert page.locator("details.op:not([hidden])").count() == 1
    assert errors == []


# -- fuzz: bodies far outside the schema ----------------------------------------------------------------------------

FUZZ_EXAMPLES = 40  # per operation that takes a JSON body


def json_bodies(field_names: list[str]):
    """JSON documents of any shape, leaning on the operation's own field names so that they get past the first
    checks: wrong types, nesting, nulls, NaN, integers of hundreds of digits, odd strings."""
    from hypothesis import strategies as st

    leaves = (st.none() | st.booleans() | st.integers(min_value=-10**400, max_value=10**400)
              | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
              | st.sampled_from(["", " ", "0", "-1", "1e999", "mp3", "joe", "alloy", "tts-1", "v_000000000000",
                                 "../../etc/passwd", "\x00", "\ud7ff" * 3, "Hello."]))
    keys = st.sampled_from(field_names) | st.text(max_size=12) if field_names else st.text(max_size=12)
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=6),
                        max_leaves=16)


def json_operations() -> list[tuple[str, str]]:
    return [(method, path) for method, path, op in operations(collection_document())
            if "application/json" in op.get("requestBody", {}).get("content", {})]


@pytest.mark.parametrize("method, path", json_operations(), ids=lambda v: v.upper() if v in METHODS else v)
def test_no_body_gets_a_server_error(method: str, path: str, document: dict, ids: dict[str, Any], live: System):
    import json as json_mod

    from hypothesis import strategies as st

    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].split("/")[-1]]
    url = live.url + re.sub(r"{(\w+)}", lambda m: str(example_for(method, path, m.group(1), ids)), path)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(value=json_bodies(sorted(schema.get("properties", {}))), raw=st.sampled_from([False, False, True]))
    def send(value, raw) -> None:
        data = json_mod.dumps(value, allow_nan=True)
        if raw:  # not even JSON: truncated, or a number past the digits int() takes
            data = data[: len(data) // 2] + "1" * 4301
        response = requests.request(method, url, data=data, headers={**auth(live), "Content-Type": "application/json"},
                                    timeout=150)
        assert response.status_code < 500, f"{method.upper()} {path} {data[:300]!r}: {response.text[:300]}"
        if response.status_code == 202 and "job_id" in response.text:  # a valid one by chance: do not keep the worker
            requests.delete(f"{live.url}/jobs/{response.json()['job_id']}", headers=auth(live), timeout=10)

    send()
