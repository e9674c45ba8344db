"""Words said by their phonemes (IPA): lexicon entries of kind "phonemes" and SSML <phoneme>, which Piper says by
their phonemes (a phoneme token of the text front end, made into a raw [[ ]] block at the engine) and any other
engine by its words. The front end carries a token intact (never normalized, never split), the symbols are checked
against the voice, real Piper audio is what Piper makes of the raw block, and word timestamps still map the user's
words."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from chatterbox import align, markup
from chatterbox.engines import create_engine
from chatterbox.engines.piper import check_phonemes, phoneme_symbols, piper_text
from chatterbox.keys import KeyStore
from chatterbox.lexicon import Compiled, Entry, LexiconError, dumps, entry, loads
from chatterbox.markup import MarkupError
from chatterbox.settings import load
from chatterbox.synthesis import speech_plan
from chatterbox.text import chunk_text, normalize, phoneme_token

from .conftest import ROOT, ws_events

IPA = "ˈaɪpiːeɪ"
TOKEN = f"\u27e6{IPA}\u27e7"
QUIET = {"noise_scale": 0.0, "noise_w": 0.0}  # no noise: the same phonemes give the same samples


# -- the text front end ------------------------------------------------------------------------------------------------

def test_normalization_leaves_a_token_as_it_is_and_the_text_around_it_normalized():
    # Digits, "ʰ" (NFKC would make it "h"), a period and a comma among the phonemes: all kept.
    odd = phoneme_token("ˈaʰ1. b, c")
    assert odd == "\u27e6ˈaʰ1. b, c\u27e7"
    text = f"Dr. Smith paid $5 for {odd} at 3 pm... and {TOKEN}"
    assert normalize(text) == f"Doctor Smith paid five dollars for {odd} at three P M, and {TOKEN}"
    assert normalize(f"{TOKEN}.") == f"{TOKEN}."
    # A token glued to a number stays glued (as written), and private-use characters of the text itself are dropped.
    assert normalize(f"5{TOKEN} \U000f0000x") == f"five{TOKEN} x"


def test_chunking_never_splits_a_token_and_counts_its_length():
    odd = phoneme_token("ˈɛ. ˈbiː, ˈsiː")  # a ". " and a ", " inside: no sentence or clause ends there
    text = "One sentence here. " + f"Then {odd} is said. " * 3
    assert chunk_text(text, 30) == ["One sentence here.", *[f"Then {odd} is said."] * 3]
    chunks = chunk_text(text, 25)  # "Then ... said." is 30 characters with its token: split between words
    assert sum(c.count(odd) for c in chunks) == 3
    assert all(len(c) <= 25 for c in chunks), chunks  # the token counted as the characters it is
    assert chunks == ["One sentence here.", f"Then {odd} is", "said.", f"Then {odd} is", "said.", f"Then {odd} is",
                      "said."]
    # A token longer than a chunk is a chunk of its own, whole.
    long = phoneme_token(" ".join("ab" * 20))
    assert chunk_text(f"Before it, {long} and after.", 20) == ["Before it,", long, "and after."]


def test_a_users_own_marks_are_brackets_and_a_users_own_blocks_are_not_phonemes():
    assert markup.parse("Math: \u27e6x\u27e7 [pause:1s] ok") == [markup.Segment("Math: [x]", 1.0),
                                                               markup.Segment("ok")]
    assert markup.parse("<speak>\u27e6x\u27e7</speak>") == [markup.Segment("[x]")]
    # Piper is given only the front end's tokens as [[ ]] blocks; a text's own [[ ]] (a wiki link) is written apart.
    assert piper_text(f"See [[Main Page]] and {TOKEN}.") == f"See [ [Main Page] ] and [[{IPA}]]."
    assert piper_text(f"[{TOKEN}]") == f"[ [[{IPA}]] ]"


def test_the_symbols_are_the_voices_own():
    symbols = phoneme_symbols()  # from the voice's config; the model is not loaded for it
    assert {"ˈ", "ː", "ɪ", "ŋ", " "} <= symbols and not {"_", "^", "$", "[", "Q"} & symbols
    assert check_phonemes("  ˈaɪ   piː\teɪ ") == "ˈaɪ piː eɪ"
    assert check_phonemes("ç") == "c\u0327"  # NFD: as espeak-ng writes it
    with pytest.raises(ValueError) as bad:
        check_phonemes("ˈaɪQ/X/")
    assert "'Q' (U+0051), '/' (U+002F), 'X' (U+0058) are not phonemes" in str(bad.value)


# -- lexicon entries ---------------------------------------------------------------------------------------------------

def test_a_phoneme_entry_is_checked_and_kept():
    e = entry("IPA", {"phonemes": f" {IPA} "})
    assert (e.kind, e.phonemes, e.say) == ("phonemes", IPA, "")
    assert e.public() == {"term": "IPA", "say": "", "case_sensitive": False, "kind": "phonemes", "updated_at": 0.0,
                          "phonemes": IPA}
    assert "phonemes" not in entry("SQL", {"say": "sequel"}).public()  # a respelling's shape as it always was
    both = entry("IPA", {"kind": "phonemes", "phonemes": IPA, "say": "eye pea ay", "case_sensitive": True})
    assert (both.say, both.case_sensitive) == ("eye pea ay", True)
    # What the API shows (less the timestamp) is taken back as it is (a book keeps its entries so).
    assert entry("IPA", {k: v for k, v in both.public().items() if k != "updated_at"}) == both
    with pytest.raises(LexiconError) as bad:
        entry("IPA", {"phonemes": "ˈaɪ[pi]"})
    assert (bad.value.field, bad.value.code, bad.value.status) == ("phonemes", "unknown_phoneme", 400)
    assert "'['" in bad.value.message and "']'" in bad.value.message
    assert loads(dumps([both, Entry("a", "b")])) == [Entry("IPA", "eye pea ay", True, "phonemes", phonemes=IPA),
                                                     Entry("a", "b")]
    assert dumps([Entry("a", "b")]) == '[["a","b",false]]'  # a respelling's snapshot as it always was


def test_an_engine_without_phonemes_says_the_respelling_else_the_term_as_written(piper):
    entries = [Entry("IPA", "eye pea ay", kind="phonemes", phonemes=IPA), Entry("GIF", "", kind="phonemes",
                                                                                phonemes="dʒɪf"),
               Entry("gift", "present")]
    text = "The IPA of gif: GIF, a gift."
    assert Compiled(entries).apply(text) == "The eye pea ay of gif: GIF, a present."
    engine, _ = piper
    assert Compiled(entries, engine.phoneme_token).apply(text) == \
        f"The {TOKEN} of \u27e6dʒɪf\u27e7: \u27e6dʒɪf\u27e7, a present."
    # Phoneme tokens already in a text (SSML made them) are not words to respell.
    assert Compiled([Entry("a", "EH")]).apply("a \u27e6a b\u27e7 a") == "EH \u27e6a b\u27e7 EH"


@pytest.fixture(scope="module")
def piper(piper_engine):
    return piper_engine


def test_speech_plan_for_piper_carries_the_phonemes(piper):
    engine, settings = piper
    entries = [Entry("IPA", "eye pea ay", kind="phonemes", phonemes=IPA)]
    plan = speech_plan(engine, "Dr. Who reads IPA, then 2 more.", {}, settings, entries)
    assert [s.text for s in plan] == [f"Doctor Who reads {TOKEN}, then two more."]
    ssml = f'<speak>A <phoneme alphabet="ipa" ph="təˈmɑːtoʊ">tomato</phoneme>. <phoneme ph="{IPA}">x</phoneme></speak>'
    assert [s.text for s in speech_plan(engine, ssml, {}, settings)] == ["A \u27e6təˈmɑːtoʊ\u27e7. " + TOKEN]


def test_chatterbox_says_the_words(tmp_path):
    """The Chatterbox engine takes no phonemes: its plan (no weights needed to make one) says the words."""
    settings = load(environ={"TTS_ENGINE": "chatterbox", "CHATTERBOX_DATA_DIR": str(tmp_path)})
    engine = create_engine(settings, "cpu", "chatterbox")
    assert getattr(engine, "phoneme_token", None) is None
    entries = [Entry("IPA", "eye pea ay", kind="phonemes", phonemes=IPA), Entry("GIF", "", kind="phonemes",
                                                                                phonemes="dʒɪf")]
    assert [s.text for s in speech_plan(engine, "Say IPA and GIF.", {}, settings, entries)] == \
        ["Say eye pea ay and GIF."]
    ssml = '<speak>A <phoneme alphabet="ipa" ph="təˈmɑːtoʊ">tomato</phoneme> and <phoneme ph="Q!">this</phoneme>.' \
           '</speak>'
    assert [s.text for s in speech_plan(engine, ssml, {}, settings)] == ["A tomato and this."]


def test_bad_symbols_in_ssml_for_piper(piper):
    engine, settings = piper
    with pytest.raises(MarkupError) as info:
        speech_plan(engine, '<speak><phoneme ph="ˈaɪQ">I</phoneme></speak>', {}, settings)
    assert "'Q' (U+0051) is not a phoneme" in str(info.value) and "ˈaɪQ" in str(info.value)


# -- real Piper audio --------------------------------------------------------------------------------------------------

def _spoken(engine, settings, text, entries=None) -> tuple[list[str], np.ndarray]:
    plan = speech_plan(engine, text, QUIET, settings, entries)
    audio = [np.concatenate(list(engine.stream(s.text, "joe", s.params))) for s in plan]
    return [s.text for s in plan], np.concatenate(audio)


def _raw(engine, text) -> np.ndarray:
    """What Piper itself makes of ``text`` (its own [[ ]] blocks read as phonemes), without our front end."""
    from piper import SynthesisConfig

    config = SynthesisConfig(**engine.model_args(QUIET))
    return np.concatenate([c.audio_float_array for c in engine._model("joe").synthesize(text, syn_config=config)])


def test_piper_says_a_phoneme_entry_and_ssml_phoneme_by_their_phonemes(piper):
    engine, settings = piper
    entries = [Entry("IPA", "", kind="phonemes", phonemes=IPA)]
    chunks, by_entry = _spoken(engine, settings, "Say IPA now.", entries)
    assert chunks == [f"Say {TOKEN} now."]
    _, plain = _spoken(engine, settings, "Say IPA now.")
    raw = _raw(engine, f"Say [[{IPA}]] now.")
    assert np.array_equal(by_entry, raw)  # exactly what Piper makes of the raw block
    assert not np.array_equal(by_entry, plain)  # and not what it says for the word
    _, by_ssml = _spoken(engine, settings, f'<speak>Say <phoneme alphabet="ipa" ph="{IPA}">IPA</phoneme> now.</speak>')
    assert np.array_equal(by_ssml, raw)
    # A block typed into the text is no phonemes: Piper reads it as text.
    typed_chunks, typed = _spoken(engine, settings, f"Say [[{IPA}]] now.")
    assert typed_chunks == [f"Say [[{IPA}]] now."] and not np.array_equal(typed, raw)


def test_word_timestamps_time_the_word_said_by_its_phonemes(piper):
    engine, settings = piper
    chunks, samples = _spoken(engine, settings, "Please say IPA slowly.",
                              [Entry("IPA", "", kind="phonemes", phonemes=IPA)])
    plans = align.plan("Please say IPA slowly.", chunks)
    assert plans == [[("Please", [0]), ("say", [1]), ("IPA", [2]), ("slowly.", [3])]]
    words, aligned = align.align_chunk(samples, engine.sample_rate, chunks[0], plans[0])
    assert aligned and [w.word for w in words] == ["Please", "say", "IPA", "slowly."]
    say, ipa, slowly = words[1:]
    assert say.end <= ipa.start < ipa.end <= slowly.start and ipa.end - ipa.start > 0.2, words


# -- through the running system ----------------------------------------------------------------------------------------

def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def token(system) -> str:
    key, token = KeyStore(system.store.r).create(f"phonemes-{str(time.time_ns())[-8:]}")
    return token


def test_rest_entries_and_bad_symbols(live, token):
    url = live.url + "/lexicon"
    bad = requests.put(url + "/IPA", json={"phonemes": "ˈaɪQ"}, headers=bearer(token), timeout=10)
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert (error["param"], error["code"]) == ("phonemes", "unknown_phoneme") and "'Q'" in error["message"]
    imported = requests.put(url, json={"entries": [{"term": "a", "say": "b"}, {"term": "c", "phonemes": "[x]"}]},
                            headers=bearer(token), timeout=10)
    assert imported.status_code == 400 and imported.json()["error"]["param"] == "entries[1].phonemes"
    put = requests.put(url + "/IPA", json={"phonemes": IPA, "say": "eye pea ay"}, headers=bearer(token), timeout=10)
    assert put.status_code == 201, put.text
    assert {k: put.json()[k] for k in ("term", "kind", "phonemes", "say")} == \
        {"term": "IPA", "kind": "phonemes", "phonemes": IPA, "say": "eye pea ay"}
    try:
        assert requests.get(url + "/IPA", headers=bearer(token), timeout=10).json()["phonemes"] == IPA
        plan = requests.post(live.url + "/synthesize/plan", json={"text": "Say IPA."}, headers=bearer(token),
                             timeout=10).json()
        assert plan["chunks"] == [f"Say {TOKEN}."]
    finally:
        requests.delete(url, headers=bearer(token), timeout=10)


@pytest.mark.parametrize("ssml, problem", [
    ('<speak><phoneme alphabet="x-sampa" ph="aI">I</phoneme></speak>', "x-sampa"),
    ('<speak>Say <phoneme alphabet="ipa" ph="ˈaɪQ">I</phoneme>.</speak>', "'Q' (U+0051) is not a phoneme"),
])
def test_rest_bad_ssml_phonemes_are_400s(live, ssml, problem):
    for path in ("/synthesize", "/synthesize/plan"):
        response = live.api.post(path, json={"text": ssml}, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("text", "invalid_markup") and problem in error["message"]


def test_a_job_speaks_by_a_phoneme_entry_and_times_its_words(live, token):
    requests.put(live.url + "/lexicon/IPA", json={"phonemes": IPA}, headers=bearer(token), timeout=10)
    try:
        response = requests.post(live.url + "/synthesize", json={"text": "Please say IPA slowly."},
                                 headers=bearer(token), timeout=30)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        events = ws_events(live.api, f"/ws/jobs/{job_id}")
        assert events[-1]["type"] == "done", events[-1]
        assert [e["text"] for e in events if e["type"] == "chunk"] == [f"Please say {TOKEN} slowly."]
        words = live.api.get(f"/jobs/{job_id}/words", timeout=10).json()
        assert [w["word"] for w in words["words"]] == ["Please", "say", "IPA", "slowly."] and words["aligned"]
        ipa = words["words"][2]
        assert ipa["end"] - ipa["start"] > 0.2
    finally:
        requests.delete(live.url + "/lexicon", headers=bearer(token), timeout=10)


def test_cli_sets_exports_and_imports_phonemes(live, token, tmp_path):
    env = {**live.env, "CHATTERBOX_SERVER": live.url, "CHATTERBOX_API_KEY": token}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "chatterbox", "lexicon", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    try:
        result = cli("set", "IPA", "eye pea ay", "--phonemes", IPA)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"IPA -> /{IPA}/ (else eye pea ay)"
        bad = cli("set", "GIF", "--phonemes", "dʒɪfQ")
        assert bad.returncode == 6 and "'Q'" in bad.stderr
        assert cli("set", "GIF").returncode == 2  # neither SAY nor --phonemes
        assert cli("set", "SQL", "sequel").returncode == 0
        exported = cli("export").stdout
        assert exported.splitlines() == ["term,say,case_sensitive,phonemes", f"IPA,eye pea ay,false,{IPA}",
                                         "SQL,sequel,false,"]
        csv = tmp_path / "words.csv"
        csv.write_text(exported + "GIF,,false,dʒɪf\n", encoding="utf-8")
        assert cli("import", "--replace", str(csv)).stdout.strip() == "3 entries in the lexicon"
        assert cli("import", str(csv)).stdout.strip() == "3 entries in the lexicon"  # kept entries keep phonemes
        entries = {e["term"]: e for e in requests.get(live.url + "/lexicon", headers=bearer(token),
                                                      timeout=10).json()["entries"]}
        assert (entries["GIF"]["phonemes"], entries["GIF"]["say"], entries["IPA"]["phonemes"]) == ("dʒɪf", "", IPA)
        assert "PHONEMES" in cli("list").stdout
    finally:
        requests.delete(live.url + "/lexicon", headers=bearer(token), timeout=10)
