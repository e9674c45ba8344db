"""Every kind of bad input gets a 4xx with a JSON body that names the problem."""
from __future__ import annotations

import pytest
import requests
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
    response = requests.post(system.url + "/synthesize", json=body, timeout=10)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param
    assert error["message"]


def test_limit_is_named_in_the_message(system):
    error = requests.post(system.url + "/synthesize", json={"text": LONG}, timeout=10).json()["error"]
    assert "5005" in error["message"] and "5000" in error["message"]


@pytest.mark.parametrize("data,headers,status,code", [
    ("{not json", {"Content-Type": "application/json"}, 400, "invalid_json"),
    ('["a list"]', {"Content-Type": "application/json"}, 400, "invalid_body"),
    ("text=hello", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
])
def test_malformed_bodies(system, data, headers, status, code):
    response = requests.post(system.url + "/synthesize", data=data, headers=headers, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("method,path", [
    ("GET", "/jobs/{id}"), ("DELETE", "/jobs/{id}"), ("GET", "/jobs/{id}/audio"), ("GET", "/jobs/{id}/chunks/0"),
])
@pytest.mark.parametrize("job_id", ["0123456789abcdef0123456789abcdef", "../../etc/passwd", "x" * 100])
def test_unknown_job(system, method, path, job_id):
    response = requests.request(method, system.url + path.format(id=job_id), timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"


def test_unknown_job_websocket_is_refused_before_the_handshake(system):
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(system.ws_url + "/ws/jobs/0123456789abcdef0123456789abcdef", timeout=10)
    assert info.value.status_code == 404
    assert b"job_not_found" in info.value.resp_body


def test_bad_resume_id_is_refused(live):
    job = live.submit("Resume me.")
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(f"{live.ws_url}{job['events_url']}?after=yesterday", timeout=10)
    assert info.value.status_code == 400
    live.wait_job(job["job_id"])


def test_unknown_route_and_method(system):
    assert requests.get(system.url + "/nope", timeout=10).json()["error"]["code"] == "not_found"
    response = requests.put(system.url + "/synthesize", json={}, timeout=10)
    assert response.status_code == 405 and "error" in response.json()


def test_bad_list_limit(system):
    response = requests.get(system.url + "/jobs?limit=lots", timeout=10)
    assert response.status_code == 400 and response.json()["error"]["param"] == "limit"
