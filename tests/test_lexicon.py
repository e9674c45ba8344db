"""The pronunciation lexicon: how entries match (whole words, case, longest first, punctuation, SSML text only), where
they live (Redis, per key), the REST routes with two keys kept apart, a real job that speaks by them, and the CLI."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from chatterbox.keys import KeyStore
from chatterbox.lexicon import Entry, Lexicon, LexiconError, apply, dumps, entry, loads
from chatterbox.synthesis import speech_plan

from .conftest import ROOT, ws_events


# -- applying ---------------------------------------------------------------------------------------------------------

def test_whole_words_only_never_inside_another_word():
    entries = [Entry("cat", "kitty"), Entry("SQL", "sequel")]
    assert apply("The cat sat; concatenate a category. Cat!", entries) == "The kitty sat; concatenate a category. kitty!"
    assert apply("MySQL and SQLite, but SQL alone.", entries) == "MySQL and SQLite, but sequel alone."


def test_case_is_ignored_unless_the_entry_says_so():
    assert apply("nguyen, Nguyen, NGUYEN", [Entry("Nguyen", "Win")]) == "Win, Win, Win"
    assert apply("the US and us", [Entry("US", "United States", case_sensitive=True)]) == "the United States and us"
    # Both: the exact entry wins where the case matches, the other takes the rest.
    both = [Entry("us", "uz"), Entry("US", "United States", case_sensitive=True)]
    assert apply("US, us, Us", both) == "United States, uz, uz"


def test_the_longest_term_wins_and_a_replacement_is_not_replaced_again():
    entries = [Entry("New York", "Noo York"), Entry("New York City", "Gotham"), Entry("York", "Yoik")]
    assert apply("New York City, New York, York.", entries) == "Gotham, Noo York, Yoik."
    # "Win" is a term too: what one entry said is never read again by another.
    assert apply("Nguyen", [Entry("Nguyen", "Win"), Entry("Win", "Lose")]) == "Win"


def test_terms_with_punctuation_match_as_words():
    entries = [Entry("C++", "C plus plus"), Entry("Dr.", "Doctor"), Entry(".NET", "dot net"), Entry("e.g.", "for example")]
    assert apply("C++ and c++, not C++11.", entries) == "C plus plus and C plus plus, not C++11."
    assert apply("Dr. Who; dr. No.", entries) == "Doctor Who; Doctor No."
    assert apply(".NET, not ASP.NET", entries) == "dot net, not ASP.NET"
    assert apply("Fruit, e.g. apples", entries) == "Fruit, for example apples"
    assert apply("Regex (.*) [x]", [Entry("(.*)", "anything")]) == "Regex anything [x]"  # escaped, not a pattern


def test_no_entries_change_nothing():
    assert apply("Hello there.", []) == "Hello there."
    assert apply("Hello there.", None) == "Hello there."


@pytest.fixture(scope="module")
def piper(piper_engine):
    return piper_engine


def test_ssml_tags_and_attributes_are_untouched_only_the_text_is_respelled(piper):
    engine, settings = piper
    entries = [Entry("time", "TIME"), Entry("break", "BRAKE"), Entry("slow", "SLOE"), Entry("Nguyen", "Win")]
    text = ('<speak>The time is <break time="1s"/> now. <prosody rate="slow">Ask Nguyen for a break.</prosody>'
            '</speak>')
    plan = speech_plan(engine, text, {}, settings, entries)
    assert [s.text for s in plan] == ["The TIME is", "now.", "Ask Win for a BRAKE."]
    assert plan[0].gap_s == 1.0  # the break is still a break
    assert plan[2].params["length_scale"] > 1  # and the rate still a rate
    # Plain text: [pause:] tags are markup too.
    assert [s.text for s in speech_plan(engine, "Nguyen [pause:1s] pause.", {}, settings,
                                        [Entry("pause", "rest")])] == ["Nguyen", "rest."]


def test_the_lexicon_comes_before_normalization(piper):
    engine, settings = piper
    # Without an entry the normalizer reads "Dr." as Doctor; the entry is applied to the text as written.
    plan = speech_plan(engine, "Dr. Smith.", {}, settings, [Entry("Dr.", "Drive")])
    assert [s.text for s in plan] == ["Drive Smith."]


def test_a_snapshot_keeps_the_entries():
    entries = [Entry("C++", "C plus plus", True), Entry("Nguyen", "Win")]
    assert loads(dumps(entries)) == [Entry("C++", "C plus plus", True), Entry("Nguyen", "Win")]
    assert loads(dumps([])) == [] and loads(None) == []


# -- entries and storage ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("term, body, field, code", [
    ("", {"say": "x"}, "term", "missing_field"),
    ("x" * 101, {"say": "x"}, "term", "too_long"),
    ("two\nlines", {"say": "x"}, "term", "invalid_value"),
    ("ok", {}, "say", "missing_field"),
    ("ok", {"say": "   "}, "say", "missing_field"),
    ("ok", {"say": "y" * 201}, "say", "too_long"),
    ("ok", {"say": 3}, "say", "invalid_type"),
    ("ok", {"say": "x", "case_sensitive": "yes"}, "case_sensitive", "invalid_type"),
    ("ok", {"say": "x", "kind": "phonemes"}, "phonemes", "missing_field"),
    ("ok", {"phonemes": "ˈaɪQ"}, "phonemes", "unknown_phoneme"),
    ("ok", {"say": "x", "kind": "respell", "phonemes": "ˈaɪ"}, "phonemes", "invalid_value"),
    ("ok", {"say": "x", "kind": "other"}, "kind", "invalid_value"),
    ("ok", {"say": "x", "colour": "red"}, "colour", "unknown_field"),
    ("ok", ["say"], "body", "invalid_body"),
])
def test_bad_entries_are_refused_naming_the_field(term, body, field, code):
    with pytest.raises(LexiconError) as info:
        entry(term, body)
    assert (info.value.field, info.value.code) == (field, code), info.value.message


def test_storage_per_owner_with_a_limit(fresh_redis):
    alice, bob = Lexicon(fresh_redis, "alice", 2), Lexicon(fresh_redis, "bob", 2)
    stored, created = alice.put(entry("Nguyen", {"say": "Win"}))
    assert created and stored.updated_at > 0
    assert alice.put(entry("Nguyen", {"say": "Wen"}))[1] is False  # replaced, not added
    alice.put(entry("SQL", {"say": "sequel", "case_sensitive": True}))
    assert [(e.term, e.say, e.case_sensitive) for e in alice.entries()] == [("Nguyen", "Wen", False),
                                                                            ("SQL", "sequel", True)]
    assert bob.entries() == []
    with pytest.raises(LexiconError) as full:
        alice.put(entry("third", {"say": "3"}))
    assert (full.value.status, full.value.code) == (409, "too_many_entries")
    alice.put(entry("SQL", {"say": "S Q L"}))  # a term it has may still change when full
    alice.remove("SQL")
    with pytest.raises(LexiconError) as gone:
        alice.remove("SQL")
    assert gone.value.status == 404
    assert [e.term for e in alice.replace([Entry("a", "b")])] == ["a"] and alice.get("a").say == "b"
    assert alice.clear() == 1 and alice.entries() == []


# -- REST, jobs and the CLI through the running system ----------------------------------------------------------------

def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def keys(system) -> dict[str, tuple[str, str]]:
    """Two plain keys: name -> (token, id)."""
    store = KeyStore(system.store.r)
    tag = str(time.time_ns())[-8:]
    out = {}
    for name in ("alice", "bob"):
        key, token = store.create(f"lex-{name}-{tag}")
        out[name] = (token, key.id)
    return out


def test_rest_round_trip_each_key_its_own(live, keys):
    (alice, alice_id), (bob, _) = keys["alice"], keys["bob"]
    url = live.url + "/lexicon"
    put = requests.put(url + "/Nguyen", json={"say": "Win"}, headers=bearer(alice), timeout=10)
    assert put.status_code == 201, put.text
    assert put.json()["term"] == "Nguyen" and put.json()["case_sensitive"] is False
    again = requests.put(url + "/Nguyen", json={"say": "Wen"}, headers=bearer(alice), timeout=10)
    assert again.status_code == 200 and again.json()["say"] == "Wen"
    plus = requests.put(url + "/C%2B%2B", json={"say": "C plus plus", "case_sensitive": True}, headers=bearer(alice),
                        timeout=10)
    assert plus.status_code == 201 and plus.json()["term"] == "C++"
    slash = requests.put(url + "/TCP%2FIP", json={"say": "T C P over I P"}, headers=bearer(alice), timeout=10)
    assert slash.status_code == 201 and slash.json()["term"] == "TCP/IP"

    listed = requests.get(url, headers=bearer(alice), timeout=10).json()
    assert [e["term"] for e in listed["entries"]] == ["C++", "Nguyen", "TCP/IP"]
    assert listed["max_entries"] == live.settings.lexicon_max_entries
    assert requests.get(url + "/TCP%2FIP", headers=bearer(alice), timeout=10).json()["say"] == "T C P over I P"
    # Bob sees none of them, cannot remove them, and may not name Alice's lexicon.
    assert requests.get(url, headers=bearer(bob), timeout=10).json()["entries"] == []
    assert requests.get(url + "/Nguyen", headers=bearer(bob), timeout=10).status_code == 404
    assert requests.delete(url + "/Nguyen", headers=bearer(bob), timeout=10).json()["error"]["code"] == "unknown_term"
    forbidden = requests.get(url, params={"owner": alice_id}, headers=bearer(bob), timeout=10)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["param"] == "owner"
    # An admin key reads (and may change) another key's.
    admin_view = live.api.get(url, params={"owner": alice_id}, timeout=10).json()
    assert [e["term"] for e in admin_view["entries"]] == ["C++", "Nguyen", "TCP/IP"]

    preview = requests.post(url + "/preview", json={"text": "Ask Nguyen about c++ and C++ over TCP/IP."},
                            headers=bearer(alice), timeout=10).json()
    assert preview == {"text": "Ask Wen about c++ and C plus plus over T C P over I P.", "changed": True}
    assert requests.post(url + "/preview", json={"text": "Ask Nguyen."}, headers=bearer(bob),
                         timeout=10).json() == {"text": "Ask Nguyen.", "changed": False}
    plan = requests.post(live.url + "/synthesize/plan", json={"text": "Ask Nguyen."}, headers=bearer(alice),
                         timeout=10).json()
    assert plan["chunks"] == ["Ask Wen."]

    removed = requests.delete(url + "/Nguyen", headers=bearer(alice), timeout=10)
    assert removed.json() == {"term": "Nguyen", "deleted": True}
    replaced = requests.put(url, json={"entries": [{"term": "SQL", "say": "sequel"}]}, headers=bearer(alice),
                            timeout=10)
    assert [e["term"] for e in replaced.json()["entries"]] == ["SQL"]
    assert requests.delete(url, headers=bearer(alice), timeout=10).json() == {"deleted": 1}


@pytest.mark.parametrize("path, body, status, field, code", [
    ("/lexicon/ok", {"say": "x", "kind": "phonemes"}, 400, "phonemes", "missing_field"),
    ("/lexicon/ok", {"say": ""}, 400, "say", "missing_field"),
    ("/lexicon/ok", {"case_sensitive": True}, 400, "say", "missing_field"),
    ("/lexicon/ok", {"say": "x", "extra": 1}, 400, "extra", "unknown_field"),
    ("/lexicon/" + "x" * 101, {"say": "x"}, 400, "term", "too_long"),
    ("/lexicon/a%09b", {"say": "x"}, 400, "term", "invalid_value"),  # a tab (a line break matches no route)
    ("/lexicon/ok", None, 400, "body", "invalid_body"),
    ("/lexicon", {"entries": [{"term": "a", "say": "b"}, {"term": "c"}]}, 400, "entries[1].say", "missing_field"),
    ("/lexicon", {"entries": "a"}, 400, "entries", "invalid_body"),
])
def test_bad_requests_are_4xx_naming_the_field(live, keys, path, body, status, field, code):
    token = keys["bob"][0]
    response = requests.put(live.url + path, json=body, headers=bearer(token), timeout=10)
    assert response.status_code == status, response.text
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (field, code)


def chunk_texts(live, job_id: str) -> list[str]:
    events = ws_events(live.api, f"/ws/jobs/{job_id}")
    assert events[-1]["type"] == "done", events[-1]
    return [e["text"] for e in events if e["type"] == "chunk"]


def test_a_job_speaks_by_its_owners_lexicon_as_it_was_when_it_was_asked_for(live, keys):
    (alice, _), (bob, _) = keys["alice"], keys["bob"]
    requests.put(live.url + "/lexicon/Nguyen", json={"say": "Win"}, headers=bearer(alice), timeout=10)
    try:
        jobs = {}
        for name, token in (("alice", alice), ("bob", bob)):
            response = requests.post(live.url + "/synthesize", json={"text": "Hello, Doctor Nguyen."},
                                     headers=bearer(token), timeout=30)
            assert response.status_code == 202, response.text
            jobs[name] = response.json()["job_id"]
        assert chunk_texts(live, jobs["alice"]) == ["Hello, Doctor Win."]
        assert chunk_texts(live, jobs["bob"]) == ["Hello, Doctor Nguyen."]
        # The record keeps what the job spoke by, so a later attempt says the same whatever changes meanwhile:
        # its plan, made once when it was asked for, and the entries it was made with.
        assert [text for text, _, _ in live.store.get(jobs["alice"])["plan"]] == ["Hello, Doctor Win."]
        assert loads(live.store.get(jobs["alice"])["lexicon"]) == [Entry("Nguyen", "Win")]
        assert loads(live.store.get(jobs["bob"])["lexicon"]) == []
        a, b = (live.api.get(f"/jobs/{jobs[n]}/audio", timeout=10).content for n in ("alice", "bob"))
        assert a != b
    finally:
        requests.delete(live.url + "/lexicon", headers=bearer(alice), timeout=10)


def run_cli(args, env):
    return subprocess.run([sys.executable, "-m", "chatterbox", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_set_list_remove_import_export(live, keys, tmp_path):
    env = {**live.env, "CHATTERBOX_SERVER": live.url, "CHATTERBOX_API_KEY": keys["bob"][0]}
    result = run_cli(["lexicon", "set", "SQL", "sequel", "--case-sensitive"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SQL -> sequel (case-sensitive)"
    listed = run_cli(["lexicon", "list"], env)
    assert "SQL" in listed.stdout and "sequel" in listed.stdout and "yes" in listed.stdout
    refused = run_cli(["lexicon", "set", "x", "y", "--key", keys["bob"][0]], {**env, "CHATTERBOX_API_KEY": ""})
    assert refused.returncode == 0  # --key works as everywhere
    bad = run_cli(["lexicon", "set", "a\tb", "y"], env)
    assert bad.returncode == 6 and "term" in bad.stderr
    missing = run_cli(["lexicon", "remove", "nothing-here"], env)
    assert missing.returncode == 5
    assert run_cli(["lexicon", "remove", "x"], env).returncode == 0

    csv = tmp_path / "words.csv"
    csv.write_text("term,say,case_sensitive\nNguyen,Win,false\n\"Smith, Jr.\",Smith Junior,true\n", encoding="utf-8")
    imported = run_cli(["lexicon", "import", str(csv)], env)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "3 entries in the lexicon"  # added to SQL
    exported = run_cli(["lexicon", "export"], env)
    assert exported.stdout.splitlines() == ["term,say,case_sensitive", "Nguyen,Win,false",
                                            "\"Smith, Jr.\",Smith Junior,true", "SQL,sequel,true"]
    replaced = run_cli(["lexicon", "import", "--replace", str(csv)], env)
    assert replaced.stdout.strip() == "2 entries in the lexicon"
    assert run_cli(["lexicon", "list", "--json"], env).stdout.count('"term"') == 2
    requests.delete(live.url + "/lexicon", headers=bearer(keys["bob"][0]), timeout=10)


# -- books ------------------------------------------------------------------------------------------------------------

def test_a_book_chunk_key_holds_the_text_as_spoken_so_an_entry_changes_only_its_chunks(piper):
    from chatterbox.access import SYSTEM
    from chatterbox.books.plan import make_plan
    from chatterbox.books.reader import Book, Chapter

    engine, settings = piper
    book = Book("Lexicon", "Test", "en", [Chapter("The Nguyen family", ["It rained all day.", "Nguyen came home.",
                                                                       "The dog slept."])])

    def plan(entries):
        return make_plan(book, job_id="lexicon-book", engine=engine, voice=engine.check_voice(None, SYSTEM),
                         params={}, fmt="mp3", settings=settings, lexicon=entries)

    before, after = plan([Entry("Nguyen", "Win")]), plan([Entry("Nguyen", "Wen")])
    assert [c.text for c in before.chunks] == ["The Win family.", "It rained all day.", "Win came home.",
                                               "The dog slept."]
    changed = [c.index for c, d in zip(before.chunks, after.chunks) if c.key != d.key]
    assert changed == [0, 2]  # the title and the paragraph that say the word; the rest are taken from the cache
    assert [c.key for c in plan(None).chunks][1::2] == [c.key for c in before.chunks][1::2]


def test_the_worker_speaks_the_plan_kept_with_the_job_and_plans_nothing_again(piper, fresh_redis, tmp_path,
                                                                              monkeypatch):
    from chatterbox import synthesis
    from chatterbox.access import SYSTEM
    from chatterbox.jobs import JobStore

    engine, settings = piper
    settings = settings.replace(data_dir=tmp_path)
    store = JobStore(fresh_redis, settings)
    request = synthesis.parse_request({"text": "Hello, Doctor Nguyen. [pause:0.7s] Good night."}, engine, settings,
                                      SYSTEM, [Entry("Nguyen", "Win")])
    assert request.plan == [["Hello, Doctor Win.", 0.7, 1.0], ["Good night.", settings.chunk_gap_s, 1.0]]
    store.create("j1", engine="piper", source="test", **request.as_dict())
    _, lease = store.claim("j1", 1, "w", "i")

    def planned_again(*args, **kwargs):
        raise AssertionError("the worker planned the text again")

    monkeypatch.setattr(synthesis, "speech_plan", planned_again)
    job = synthesis.run_job(engine, store, "j1", settings, lease)
    assert job["status"] == "succeeded" and job["chunks_total"] == 2
    said = [e["text"] for e in store.events_after("j1") if e["type"] == "chunk"]
    assert said and set(said) == {"Hello, Doctor Win.", "Good night."}

