"""Every kind of bad input gets a 4xx with a JSON body that names the problem."""
from __future__ import annotations

import pytest
import websocket

LONG = "word " * 1001  # 5005 characters, over the default limit of 5000


@pytest.mark.parametrize("body,status,code,param", [
    ({"text": ""}, 400, "text_empty", "text"),
    ({"text": "   \n\t "}, 400, "text_empty", "text"),
    ({}, 400, "missing_field", "text"),
    ({"text": 42}, 400, "invalid_type", "text"),
    ({"text": LONG}, 400, "text_too_long", "text"),
    ({"text": "Hi.", "voice": "nobody"}, 404, "unknown_voice", "voice"),
    ({"text": "Hi.", "voice": 3}, 400, "invalid_type", "voice"),
    ({"text": "Hi.", "format": "aiff"}, 400, "unknown_format", "format"),
    ({"text": "Hi.", "params": {"length_scale": 5}}, 400, "out_of_range", "params.length_scale"),
    ({"text": "Hi.", "params": {"length_scale": "fast"}}, 400, "invalid_type", "params.length_scale"),
    ({"text": "Hi.", "params": {"length_scale": True}}, 400, "invalid_type", "params.length_scale"),
    ({"text": "Hi.", "params": {"speed": 1}}, 400, "unknown_parameter", "params.speed"),
    ({"text": "Hi.", "params": [1, 2]}, 400, "invalid_type", "params"),
    ({"text": "Hi.", "colour": "blue"}, 400, "unknown_field", "colour"),
])
def test_bad_synthesis_requests(system, body, status, code, param):
    response = system.api.post("/synthesize", json=body, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param
    assert error["message"]


def test_limit_is_named_in_the_message(system):
    error = system.api.post("/synthesize", json={"text": LONG}, timeout=10).json()["error"]
    assert "5005" in error["message"] and "5000" in error["message"]


@pytest.mark.parametrize("data,headers,status,code", [
    ("{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
    ('["a list"]', {"Content-Type": "application/json"}, 400, "invalid_body"),
    ("text=hello", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
])
def test_malformed_bodies(system, data, headers, status, code):
    response = system.api.post("/synthesize", data=data, headers=headers, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("method,path", [
    ("GET", "/jobs/{id}"), ("DELETE", "/jobs/{id}"), ("GET", "/jobs/{id}/audio"), ("GET", "/jobs/{id}/chunks/0"),
])
@pytest.mark.parametrize("job_id", ["0123456789abcdef0123456789abcdef", "../../etc/passwd", "x" * 100])
def test_unknown_job(system, method, path, job_id):
    response = system.api.request(method, path.format(id=job_id), timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"


def test_unknown_job_websocket_is_refused_before_the_handshake(system):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        system.api.ws("/ws/jobs/0123456789abcdef0123456789abcdef", timeout=10)
    assert info.value.status_code == 404
    assert b"job_not_found" in info.value.resp_body


def test_bad_resume_id_is_refused(live):
    job = live.submit("Resume me.")
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        live.api.ws(f"{job['events_url']}?after=yesterday", timeout=10)
    assert info.value.status_code == 400
    live.wait_job(job["job_id"])


def test_unknown_route_and_method(system):
    assert system.api.get("/nope", timeout=10).json()["error"]["code"] == "not_found"
    response = system.api.put("/synthesize", json={}, timeout=10)
    assert response.status_code == 405 and "error" in response.json()


def test_bad_list_limit(system):
    response = system.api.get("/jobs?limit=lots", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["param"] == "limit"


# -- odd and hostile input: a 4xx, never a 500 ----------------------------------------------------------------------

DIGITS = "1" * 4301  # one more than Python's int() takes from a string


@pytest.mark.parametrize("path,body,status,code,param", [
    ("/synthesize", {"text": "Hi.", "params": {"length_scale": 10 ** 4000}}, 400, "out_of_range",
     "params.length_scale"),
    ("/synthesize", {"text": "Hi.", "params": {"volume": -10 ** 300}}, 400, "out_of_range", "params.volume"),
    ("/synthesize", '{"text": "Hi.", "params": {"volume": ' + DIGITS + "}}", 400, "invalid_json", None),
    ("/synthesize", {"text": "Hi.", "voice": ["a", "list"]}, 400, "invalid_type", "voice"),
    ("/synthesize", {"text": "Hi.", "voice": {"id": "joe"}}, 400, "invalid_type", "voice"),
    ("/audiobooks", {"text": "Hi.", "voice": 123}, 400, "invalid_type", "voice"),
    ("/audiobooks", {"text": "Hi.", "params": {"noise_w": 10 ** 400}}, 400, "out_of_range", "params.noise_w"),
    ("/v1/audio/speech", {"model": "tts-1", "input": "Hi.", "voice": 123}, 400, "invalid_type", "voice"),
    ("/v1/audio/speech", {"model": "tts-1", "input": "Hi.", "voice": "alloy", "speed": 10 ** 400}, 400,
     "out_of_range", "speed"),
])
def test_odd_values_are_refused_by_name(system, path, body, status, code, param):
    raw = isinstance(body, str)
    kwargs = {"data": body, "headers": {"Content-Type": "application/json"}} if raw else {"json": body}
    response = system.api.post(path, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error


def test_thousands_of_digits_in_a_row_are_read_digit_by_digit(system):
    plan = system.api.post("/synthesize/plan", json={"text": f"The number is {DIGITS}."}, timeout=30)
    assert plan.status_code == 200, plan.text
    assert plan.json()["chunks"][0].startswith("The number is one one one")
    book = system.api.post("/audiobooks", json={"text": f"Count {DIGITS}."}, timeout=30)
    assert book.status_code == 202, book.text
    system.api.post(f"/audiobooks/{book.json()['job_id']}/cancel", timeout=10)  # minutes of "one"


def _voice_file(**parts) -> bytes:
    import io

    import torch

    from chatterbox.model.random_checkpoint import random_conds

    blob = {"format": "chatterbox-jobs voice 1", "meta": {"name": "Broken"}, "conds": random_conds(1), "files": {}}
    blob.update(parts)
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


def _bad_conds(change) -> dict:
    from chatterbox.model.random_checkpoint import random_conds

    conds = random_conds(1)
    change(conds)
    return conds


def _voice_import_cases():
    import torch

    return [
        _voice_file(meta=["not", "a", "dict"]),
        _voice_file(files=[1, 2]),
        _voice_file(files={"reference.wav": torch.zeros(3, dtype=torch.float32)}),
        _voice_file(files={"reference.wav": torch.frombuffer(bytearray(b"not a wav file"), dtype=torch.uint8)}),
        _voice_file(meta={"name": "Broken", "reference_seconds": "soon"}),
        _voice_file(conds={"t3": {}, "gen": {}}),
        _voice_file(conds={"t3": [], "gen": 1}),
        _voice_file(conds=_bad_conds(lambda c: c["t3"].update(speaker_emb=torch.zeros(1, 7)))),
        _voice_file(conds=_bad_conds(lambda c: c["t3"].update(speaker_emb=torch.full((1, 256), float("nan"))))),
        _voice_file(conds=_bad_conds(lambda c: c["gen"].update(prompt_token=torch.full((1, 250), 99999)))),
        _voice_file(conds=_bad_conds(lambda c: c["gen"].update(prompt_feat=torch.zeros(1, 3, 80)))),
        _voice_file(conds=_bad_conds(lambda c: c["gen"].update(embedding="an embedding"))),
        _voice_file(conds=_bad_conds(lambda c: c["t3"].update(emotion_adv=torch.zeros(4)))),
    ]


@pytest.mark.parametrize("case", range(13))
def test_malformed_voice_imports_are_refused(system, case):
    data = _voice_import_cases()[case]
    response = system.api.post("/voices/import", files={"file": ("v.voice", data)}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_voice_file", "invalid_name"), response.text
