"""The whole system through its public interfaces: REST, websocket, the Celery API, with real processes."""
from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import wave

import pytest

from chatterbox import audio

from .conftest import ROOT, wait_until, ws_events

PARAGRAPH = ("The old lighthouse stood at the edge of the cliff. Every night its beam swept across the dark water, "
             "warning ships away from the rocks below. Nobody had kept it for years, yet the light never failed. ")


def wav_info(data: bytes) -> tuple[int, float]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnframes() / w.getframerate()


def test_rest_job_runs_and_records_how(live):
    job = live.submit("Hello from the job system. This is a short test.")
    assert set(job) >= {"job_id", "status_url", "events_url", "audio_url"}
    assert job["status"] == "queued"
    done = live.wait_job(job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0
    assert done["worker"].startswith("cpu@") and done["engine"] == "piper"
    assert done["rtf"] > 0 and done["duration_s"] > 1 and done["synth_s"] > 0 and "queued_s" in done
    response = live.api.get(job["audio_url"], timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "audio/wav"
    rate, seconds = wav_info(response.content)
    assert rate == 22050 and abs(seconds - done["duration_s"]) < 0.05
    samples, _ = audio.decode(response.content)
    assert not audio.is_silent(samples)


@pytest.mark.parametrize("fmt,content_type", [("mp3", "audio/mpeg"), ("ogg", "audio/ogg"), ("flac", "audio/flac")])
def test_wait_answers_the_audio_in_each_format(live, fmt, content_type):
    response = live.api.post("/synthesize?wait=1", json={"text": "Formats matter.", "format": fmt}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == content_type
    samples, rate = audio.decode(response.content)
    assert 0.5 < len(samples) / rate < 5


def test_audio_length_grows_with_text(live):
    def seconds(text):
        response = live.api.post("/synthesize?wait=1", json={"text": text}, timeout=120)
        assert response.status_code == 200, response.text
        return wav_info(response.content)[1]

    short, long = seconds("One sentence."), seconds(PARAGRAPH)
    assert long > 3 * short


def test_celery_api_from_another_process(live):
    script = ("import json; from tasks import synthesize; "
              "r = synthesize.delay(text='Submitted through Celery.', format='flac'); "
              "print(json.dumps(r.get(timeout=120)))")
    out = subprocess.run([sys.executable, "-c", script], env=live.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["source"] == "celery"
    samples, rate = audio.decode(open(result["audio_path"], "rb").read())
    assert rate == 22050 and len(samples) > rate
    # the same job is visible through the REST API
    assert live.job(result["id"])["status"] == "succeeded"


def test_celery_api_refuses_bad_input(live):
    script = ("from tasks import synthesize\n"
              "try:\n    synthesize.delay(text='Hi.', params={'length_scale': 9}).get(timeout=120)\n"
              "except Exception as exc:\n    print('ERROR', exc)\n")
    out = subprocess.run([sys.executable, "-c", script], env=live.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert "ERROR params.length_scale must be between 0.5 and 2.0" in out.stdout, out.stdout + out.stderr


def test_websocket_events_in_order_then_resume(live):
    job = live.submit(PARAGRAPH * 2)
    events = ws_events(live.api, job["events_url"])
    types = [e["type"] for e in events]
    assert types[0] == "progress" and types[-1] == "done"
    assert all(t in ("progress", "chunk", "words", "done", "error") for t in types)
    # each text chunk's words come once its audio has all gone out, before the next chunk's audio
    for i, event in enumerate(events):
        if event["type"] == "words":
            before = [e for e in events[:i] if e["type"] == "chunk"]
            assert before and before[-1]["text_index"] == event["text_index"] and event["words"]
    ids = [tuple(map(int, e["id"].split("-"))) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    progress = [e["progress"] for e in events if e["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    chunks = [e for e in events if e["type"] == "chunk"]
    assert [c["index"] for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    chunk_audio = live.api.get(chunks[0]["url"], timeout=10)
    assert chunk_audio.status_code == 200 and wav_info(chunk_audio.content)[0] == 22050
    assert events[-1]["audio_url"] == job["audio_url"]
    # a client that reconnects with the last id it saw gets exactly the rest
    resumed = ws_events(live.api, f"{job['events_url']}?after={events[2]['id']}")
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    # and after the end, nothing more
    assert ws_events(live.api, f"{job['events_url']}?after={events[-1]['id']}", timeout=10) == []


def test_late_client_replays_everything(live):
    job = live.submit("A late listener still hears the whole story.")
    live.wait_job(job["job_id"])
    events = ws_events(live.api, job["events_url"])
    assert events[0]["type"] == "progress" and events[0]["status"] == "queued"
    assert events[-1]["type"] == "done"


def test_cancel_running_job_stops_within_a_chunk(live):
    job = live.submit(PARAGRAPH * 12)
    wait_until(lambda: live.job(job["job_id"]).get("chunks_done", 0) >= 1, 60, what="the first chunk")
    response = live.api.delete(f"/jobs/{job['job_id']}", timeout=10)
    assert response.status_code == 202 and response.json()["status"] == "running"
    final = live.wait_job(job["job_id"], timeout=30)
    assert final["status"] == "cancelled"
    assert final["chunks_done"] < final["chunks_total"]
    events = ws_events(live.api, job["events_url"])
    assert events[-1]["type"] == "error" and events[-1]["status"] == "cancelled"
    assert live.api.get(job["audio_url"], timeout=10).status_code == 409
    again = live.api.delete(f"/jobs/{job['job_id']}", timeout=10)
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]


def test_cancel_queued_job_at_once(live):
    # The worker runs as many jobs at once as it has threads (one per core for Piper): fill them all, so that the
    # last job stays queued.
    worker = next(w for w in live.store.workers() if w["pid"] == live.worker.pid)
    blockers = [live.submit(PARAGRAPH * 6) for _ in range(worker["batch"]["capacity"])]
    queued = live.submit("I never get to speak.")
    for blocker in blockers:
        wait_until(lambda: live.job(blocker["job_id"])["status"] == "running", 60, what="the blockers to run")
    assert live.job(queued["job_id"])["status"] == "queued"
    response = live.api.delete(f"/jobs/{queued['job_id']}", timeout=10)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    for blocker in blockers:
        live.api.delete(f"/jobs/{blocker['job_id']}", timeout=10)
    for blocker in blockers:
        assert live.wait_job(blocker["job_id"], timeout=60)["status"] == "cancelled"
    assert live.job(queued["job_id"])["status"] == "cancelled"


def test_health_lists_the_worker(live):
    body = live.api.get("/health", timeout=10).json()
    assert body["status"] == "ok" and body["redis"]["ok"] and body["redis"]["aof"]
    mine = [w for w in body["workers"] if w["pid"] == live.worker.pid]
    assert mine and mine[0]["device"] == "cpu" and mine[0]["engine"] == "piper" and mine[0]["model_loaded"]
    assert mine[0]["consuming"]  # its Celery consumer is connected: it takes tasks
    assert mine[0]["state"] in ("idle", "busy") and "interactive" in body["queues"]


def test_worker_killed_mid_job_is_run_again(live):
    job = live.submit(PARAGRAPH * 5)
    wait_until(lambda: live.job(job["job_id"]).get("chunks_done", 0) >= 1, 60, what="a chunk")
    live.worker.kill(signal.SIGKILL)
    live.start_worker()
    final = live.wait_job(job["job_id"], timeout=120)
    assert final["status"] == "succeeded", final
    assert final["attempt"] == 2 and "stopped while running" in final["last_error"]
    events = ws_events(live.api, job["events_url"])
    assert any("running it again" in e.get("message", "") for e in events)
    assert events[-1]["type"] == "done"


def test_worker_killed_on_every_attempt_fails_with_reason(live):
    job = live.submit(PARAGRAPH * 5)
    for attempt in (1, 2):
        wait_until(lambda: (j := live.job(job["job_id"]))["status"] == "running" and j["attempt"] == attempt
                   and j.get("chunks_done", 0) >= 1, 60, what=f"attempt {attempt} to run")
        live.worker.kill(signal.SIGKILL)
        live.start_worker()
    final = live.wait_job(job["job_id"], timeout=60)
    assert final["status"] == "failed"
    assert "stopped while running this job (attempt 2 of 2)" in final["error"]
