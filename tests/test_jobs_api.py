"""The jobs API the dashboard's history and operations pages stand on: pages, filters, purge, formats, stats."""
from __future__ import annotations

import time

from chatterbox import audio


def test_pages_filters_and_search(live):
    tag = f"zebra{time.monotonic_ns()}"
    sent = [live.submit(f"The {tag} called {name} speaks.") for name in ("alpha", "bravo", "charlie")]
    for job in sent:
        live.wait_job(job["job_id"])
    page = live.api.get("/jobs", params={"q": tag, "limit": 2}, timeout=10).json()
    assert page["total"] == 3 and len(page["jobs"]) == 2 and page["offset"] == 0
    assert [j["id"] for j in page["jobs"]] == [sent[2]["job_id"], sent[1]["job_id"]]  # newest first
    rest = live.api.get("/jobs", params={"q": tag, "limit": 2, "offset": 2}, timeout=10).json()
    assert [j["id"] for j in rest["jobs"]] == [sent[0]["job_id"]]
    assert tag in rest["jobs"][0]["text_preview"]
    one = live.api.get("/jobs", params={"q": f"{tag} BRAVO"}, timeout=10).json()
    assert [j["id"] for j in one["jobs"]] == [sent[1]["job_id"]]
    assert live.api.get("/jobs", params={"q": tag, "status": "failed"}, timeout=10).json()["total"] == 0
    bad = live.api.get("/jobs", params={"status": "sleeping"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


def test_audio_in_another_format_and_purge(live):
    job = live.submit("Download me in any format.", format="wav")
    live.wait_job(job["job_id"])
    mp3 = live.api.get(f"/jobs/{job['job_id']}/audio", params={"format": "mp3", "download": 1}, timeout=30)
    assert mp3.status_code == 200 and mp3.headers["Content-Type"] == "audio/mpeg"
    assert "attachment" in mp3.headers["Content-Disposition"]
    samples, _ = audio.decode(mp3.content)
    assert samples.size > 0
    unknown = live.api.get(f"/jobs/{job['job_id']}/audio", params={"format": "aiff"}, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_format"
    output = live.data / "outputs" / f"{job['job_id']}.wav"
    assert output.is_file()
    # the MP3 was made once and kept: a second request is the same file, not another encode
    kept = live.data / "outputs" / f"{job['job_id']}.mp3"
    made_at = kept.stat().st_mtime_ns
    again = live.api.get(f"/jobs/{job['job_id']}/audio", params={"format": "mp3"}, timeout=30)
    assert again.content == mp3.content and kept.stat().st_mtime_ns == made_at
    gone = live.api.delete(f"/jobs/{job['job_id']}", params={"purge": 1}, timeout=10)
    assert gone.status_code == 200 and gone.json()["deleted"]
    assert live.api.get(f"/jobs/{job['job_id']}", timeout=10).status_code == 404
    assert not output.exists() and not kept.exists()


def test_a_running_job_is_not_purged(live):
    job = live.submit(" ".join(["A long text that keeps the worker busy for a little while."] * 12))
    refused = live.api.delete(f"/jobs/{job['job_id']}", params={"purge": 1}, timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_active"
    live.api.delete(f"/jobs/{job['job_id']}", timeout=10)
    live.wait_job(job["job_id"])


def test_stats_count_the_last_hour(live):
    before = live.api.get("/stats", timeout=10).json()
    job = live.submit("Counted in the last hour.")
    done = live.wait_job(job["job_id"])
    after = live.api.get("/stats", timeout=10).json()
    assert len(after["buckets"]) == 12 and after["window_s"] == 3600
    assert after["jobs"] == before["jobs"] + 1
    assert after["audio_s"] >= before["audio_s"] + done["duration_s"] - 0.05
    assert set(after["queues"]) >= {"interactive", "bulk"}


def test_the_chunk_plan_of_a_text(live):
    plan = live.api.post("/synthesize/plan", json={"text": "One. Two! Three?"}, timeout=10).json()
    assert plan["chunks"] == ["One. Two! Three?"] and plan["chars"] == 16
    long = " ".join(f"Sentence number {n} is here." for n in range(40))
    chunks = live.api.post("/synthesize/plan", json={"text": long}, timeout=10).json()["chunks"]
    assert len(chunks) > 1 and all(len(c) <= plan["chunk_chars"] for c in chunks)
    empty = live.api.post("/synthesize/plan", json={"text": "…"}, timeout=10)
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "text"
