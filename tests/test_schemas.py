"""The request and answer models (chatterbox/schemas): they refuse a body in the API's one error shape (the field
at fault as `param`, a code per fault), they are what /openapi.json's schemas are made of, and the client's
answers read as objects and as the JSON they came from. The live server's side is tests/test_openapi.py's
schemathesis run."""
from __future__ import annotations

import json

import pytest

from chatterbox.engines import InvalidRequest
from chatterbox.errors import RequestError
from chatterbox.schemas import requests as rq
from chatterbox.schemas.base import openapi_schemas
from chatterbox.schemas.records import RECORDS, JobDetail
from chatterbox.settings import load
from web.openapi_schemas import component_schemas

SPEECH = {"model": "tts-1", "input": "Hello."}


@pytest.mark.parametrize("model, body, code, param", [
    (rq.SynthesizeRequest, [], "invalid_body", "body"),
    (rq.SynthesizeRequest, {}, "missing_field", "text"),
    (rq.SynthesizeRequest, {"text": "Hi.", "temprature": 0.5}, "unknown_field", "temprature"),
    (rq.SynthesizeRequest, {"text": 5}, "invalid_type", "text"),
    (rq.SynthesizeRequest, {"text": ""}, "text_empty", "text"),
    (rq.SynthesizeRequest, {"text": "Hi.", "format": "aiff"}, "unknown_format", "format"),
    (rq.SynthesizeRequest, {"text": "Hi.", "params": [1]}, "invalid_type", "params"),
    (rq.SpeechRequest, {**SPEECH, "speed": "1"}, "invalid_type", "speed"),
    (rq.SpeechRequest, {**SPEECH, "speed": True}, "invalid_type", "speed"),
    (rq.SpeechRequest, {**SPEECH, "speed": 9}, "out_of_range", "speed"),
    (rq.SpeechRequest, {**SPEECH, "speed": 10 ** 400}, "out_of_range", "speed"),
    (rq.SpeechRequest, {**SPEECH, "stream_format": "ws"}, "unknown_stream_format", "stream_format"),
    (rq.SpeechRequest, {**SPEECH, "voice": {"id": "joe", "mood": "calm"}}, "unknown_field", "voice.mood"),
    (rq.SpeechRequest, {**SPEECH, "voice": 7}, "invalid_type", "voice"),
    (rq.CaptionedSpeechRequest, {"input": "Hi.", "voice_aliases": {"a": {"voice": "b", "rate": 9}}},
     "out_of_range", "voice_aliases.a.rate"),
    (rq.CaptionedSpeechRequest, {"input": "Hi.", "normalization_options": {"x": "no"}}, "invalid_type",
     "normalization_options.x"),
    (rq.VoicePatch, {"tags": ["x" * 40]}, "invalid_tags", "tags[0]"),
    (rq.BookRequest, {"chapters": []}, "invalid_chapters", "chapters"),
    (rq.BookRequest, {"chapters": [{"text": 5}]}, "invalid_type", "chapters[0].text"),
    (rq.LexiconEntryRequest, {"say": "Win", "kind": "ipa"}, "invalid_value", "kind"),
])
def test_a_refused_body_names_its_field_and_fault(model, body, code, param):
    with pytest.raises(InvalidRequest) as caught:
        model.check(body)
    assert (caught.value.code, caught.value.field, caught.value.status) == (code, param, 400)
    assert caught.value.message and len(caught.value.message) < 300


def test_what_clients_send_is_taken_as_they_send_it():
    assert rq.SynthesizeRequest.check({"text": "Hi.", "format": "MP3"}).format == "mp3"
    assert rq.SynthesizeRequest.check({"text": "Hi.", "format": ""}).format is None  # the default
    assert rq.SpeechRequest.check({**SPEECH, "speed": 2}).speed == 2.0  # a JSON integer is a number
    voice = rq.SpeechRequest.check({**SPEECH, "voice": {"id": "joe"}}).voice
    assert isinstance(voice, rq.VoiceId) and voice.id == "joe"


def test_a_form_is_read_as_a_browser_sends_it():
    """Forms come as text: a number is read from it, a blank optional field is left out (a browser sends every
    input), a blank required one is refused as such, the CSRF token is the sign-in check's, unknown fields are
    refused as in JSON."""
    clip = {"file": b"RIFF"}
    form = rq.CloneForm.check_form({"name": "Ann", "exaggeration": "0.7", "tags": " ", "csrf_token": "x"}, clip)
    assert (form.name, form.exaggeration, form.tags, form.file) == ("Ann", 0.7, None, b"RIFF")
    assert rq.CloneForm.check_form({"name": "Ann", "exaggeration": ""}, clip).exaggeration == 0.5
    book = rq.BookForm.check_form({"format": "MP3", "params": ""}, {"file": b"x"}).model_dump(exclude_unset=True)
    assert book == {"format": "mp3", "file": b"x"}
    assert rq.LoginForm.check_form({"key": "k", "csrf_token": "t"}).csrf_token == "t"
    for model, fields, files, code, param in [
            (rq.CloneForm, {"name": "Ann", "exaggeration": "loud"}, clip, "invalid_type", "exaggeration"),
            (rq.CloneForm, {"name": "Ann", "exaggeration": "3"}, clip, "out_of_range", "exaggeration"),
            (rq.CloneForm, {"name": "Ann", "exagerration": "1"}, clip, "unknown_field", "exagerration"),
            (rq.CloneForm, {"name": "Ann"}, {}, "missing_field", "file"),
            (rq.SynthesizeForm, {"text": ""}, {"audio_prompt": b"x"}, "text_empty", "text"),
            (rq.SynthesizeForm, {"text": "Hi.", "format": "aiff"}, {"audio_prompt": b"x"}, "unknown_format",
             "format"),
            (rq.BookForm, {"source_format": "doc"}, {"file": b"x"}, "unsupported_format", "source_format"),
            (rq.LoginForm, {"key": "k"}, {}, "missing_field", "csrf_token")]:
        with pytest.raises(InvalidRequest) as caught:
            model.check_form(fields, files)
        assert (caught.value.code, caught.value.field) == (code, param), (fields, caught.value.message)


def test_every_error_class_takes_its_arguments_in_one_order():
    from chatterbox.books.sections import BookError
    from chatterbox.books.transitions import BookStateError
    from chatterbox.keys import ApiKeyError
    from chatterbox.lexicon import LexiconError
    from chatterbox.voices import VoiceError

    for cls, status in ((InvalidRequest, 400), (VoiceError, 404), (LexiconError, 400), (BookError, 400),
                        (BookStateError, 409), (ApiKeyError, 400)):
        error = cls("no such thing", "unknown_voice", "voice")
        assert isinstance(error, RequestError)
        assert (error.message, error.code, error.field, error.status, str(error)) == \
            ("no such thing", "unknown_voice", "voice", status, "no such thing")
        assert cls(*error.args).__dict__ == error.__dict__  # as Celery rebuilds it from a result


def test_the_documents_schemas_are_the_models(tmp_path):
    from chatterbox.access import ANYONE
    from chatterbox.engines import create_engine

    settings = load({"data_dir": str(tmp_path), "max_text_chars": 1234}, environ={})
    described = create_engine(settings, "piper").describe(ANYONE)
    schemas = component_schemas(settings, described, ["tts-1", "chatterbox"])
    plain = openapi_schemas(rq.REQUESTS, RECORDS)
    assert set(plain) <= set(schemas) and "EngineParams" in schemas
    assert schemas["JobDetail"] == plain["JobDetail"]
    # the server's own facts, filled in from what the checks read
    assert schemas["SynthesizeRequest"]["properties"]["text"]["maxLength"] == 1234
    assert schemas["SynthesizeRequest"]["additionalProperties"] is False
    names = [p["name"] for p in described["params"]]
    assert set(schemas["EngineParams"]["properties"]) == set(names)
    assert schemas["EngineParam"]["properties"]["name"]["enum"] == names
    assert schemas["SpeechRequest"]["properties"]["model"]["enum"] == ["tts-1", "chatterbox"]
    # OpenAPI 3.0.3's dialect: no null branches, consts or titles anywhere
    text = json.dumps(schemas)
    assert '"type": "null"' not in text and '"const"' not in text and '"title": "' not in text


def test_a_client_answer_reads_as_an_object_and_as_its_json():
    answer = {"id": "j1", "kind": "synthesize", "status": "queued", "progress": 0, "format": "wav", "params": {},
              "engine": "piper", "source": "rest", "created_at": 1.5, "chunks_total": 1, "chunks_done": 0,
              "attempt": 1, "max_attempts": 3, "text_chars": 3, "status_url": "/jobs/j1",
              "events_url": "/ws/jobs/j1", "audio_url": "/jobs/j1/audio", "from_a_newer_server": [1]}
    job = JobDetail.model_validate(answer)
    assert job.status == job["status"] == "queued" and job.created_at == 1.5
    assert "model" not in job and job.get("model", "-") == "-" and job.model is None
    with pytest.raises(KeyError):
        job["model"]
    assert job["from_a_newer_server"] == [1]  # kept, not dropped
    assert job.as_dict() == answer and list(job.as_dict()) == list(answer)  # in its own order too (jobs show)


def test_an_answer_the_client_does_not_expect_is_kept_as_it_came(caplog):
    from chatterbox.schemas.records import BookAction
    from web.client import _parsed

    odd = {"job_id": "b1", "status": "archived", "note": "from a newer server"}
    action = _parsed(BookAction, odd, "POST /audiobooks/b1/pause")
    assert action["status"] == "archived" and action.as_dict() == odd
    assert "not what this client expects" in caplog.text
    assert _parsed(list[BookAction], [odd], "GET")[0]["note"] == "from a newer server"
    assert _parsed(BookAction, {"job_id": "b1", "status": "paused"}, "POST").status == "paused"
