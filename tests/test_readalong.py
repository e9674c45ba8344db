"""A book's words in time, end to end: word timestamps per chapter and over the M4B, subtitles, and the read-along
EPUB 3 with Media Overlays (checked by epubcheck, and played in Chromium with its sentences lit in turn)."""
from __future__ import annotations

import http.server
import io
import json
import re
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import requests
from lxml import etree

from chatterbox import audio
from chatterbox.books.plan import load_plan
from tests.books import CHAPTERS as BOOK_CHAPTERS, NOTE, check_epubcheck, make_epub
from tests.conftest import System, wait_until

CHAPTERS = [
    {"title": "The Tide Clock", "text": "Nell paid $5 for the old clock on May 3rd. It ran backwards, but only at "
                                        "night.\n\nHer brother said it was broken. She said it was patient."},
    {"title": "Low Water", "text": "At dawn the harbour was empty. The clock had stopped at 4:15, exactly when the "
                                   "tide turned.\n\nNell wrote the time in her notebook and went down to the water."},
]
SMIL = "{http://www.w3.org/ns/SMIL}"
XHTML = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture(scope="module")
def book_system(tmp_path_factory):
    system = System(tmp_path_factory.mktemp("readalong"))
    system.start()
    yield system
    system.stop()


@pytest.fixture(scope="module")
def made(book_system):
    """A two-chapter book, read to the end."""
    system = book_system
    response = system.api.post("/audiobooks", json={"chapters": CHAPTERS, "title": "Tide & Time",
                                                    "author": "R. Tester", "format": "mp3"}, timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    state = wait_until(lambda: (s := system.api.get(f"/audiobooks/{job_id}", timeout=10).json())["status"]
                       in ("succeeded", "failed") and s, 300, interval=0.5, what="the book")
    assert state["status"] == "succeeded", state
    return system, job_id, state


def get(system: System, path: str, **params) -> requests.Response:
    return system.api.get(path, params=params, timeout=30)


def written_words(chapter: dict) -> list[str]:
    return chapter["title"].split() + chapter["text"].split()


def test_chapter_words_are_the_books_own_timed_on_the_chapter_audio(made):
    system, job_id, state = made
    plan = load_plan(system.settings, job_id)
    folder = system.data / "books" / job_id / "chapters"
    for index, chapter in enumerate(CHAPTERS):
        words = get(system, f"/audiobooks/{job_id}/words", chapter=index).json()["words"]
        # As the book wrote them ("$5", "3rd", "4:15"), the spoken title first, in order.
        assert [w["word"] for w in words] == written_words(chapter)
        starts = [w["start"] for w in words]
        assert starts == sorted(starts) and all(w["end"] >= w["start"] for w in words)
        info = state["chapters"][index]
        assert info["subtitles_url"]
        # On the chapter file's time: after the lead-in, before its end.
        assert 0.4 < words[0]["start"] and words[-1]["end"] < info["duration_s"]
        samples, rate = audio.decode(folder / info["file"])
        record = json.loads((folder / info["words_file"]).read_text())
        assert record["aligned"] is True and sum(record["chunks"]) == len(words)
        assert record["chunks"] == [len(c.source.split()) for c in plan.chunks[plan.chapters[index].first:][
            :plan.chapters[index].count]]
        # Each word is where the chapter file speaks, the pauses between paragraphs where it is silent.
        def rms(a: float, b: float) -> float:
            part = samples[int(a * rate):max(int(a * rate) + 1, int(b * rate))]
            return float(np.sqrt(np.mean(part ** 2)))

        loud = [rms(w["start"], w["end"]) for w in words]
        assert np.median(loud) > 0.03
        gaps = [(a["end"], b["start"]) for a, b in zip(words, words[1:]) if b["start"] - a["end"] > 0.5]
        assert gaps, "the pause after the title and between paragraphs"
        assert all(rms(a + 0.1, b - 0.1) < 0.2 * np.median(loud) for a, b in gaps), gaps


def test_subtitles_of_a_chapter_and_of_the_whole_book(made):
    system, job_id, state = made
    vtt = get(system, f"/audiobooks/{job_id}/subtitles", format="vtt", chapter=1)
    assert vtt.status_code == 200 and vtt.headers["Content-Type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT") and "At dawn the harbour was empty." in vtt.text
    assert "4:15," in vtt.text  # the clock time as written, not "four fifteen"
    # The whole book over the M4B: chapter 2's cues come after chapter 1's file, at its marker.
    whole = get(system, f"/audiobooks/{job_id}/words").json()["words"]
    assert [w["word"] for w in whole] == written_words(CHAPTERS[0]) + written_words(CHAPTERS[1])
    first = get(system, f"/audiobooks/{job_id}/words", chapter=1).json()["words"][0]
    second_start = state["chapters"][0]["duration_s"]
    assert whole[len(written_words(CHAPTERS[0]))]["start"] == pytest.approx(first["start"] + second_start, abs=0.1)
    srt = get(system, f"/audiobooks/{job_id}/subtitles", format="srt", words=3, download=1)
    assert srt.status_code == 200 and "attachment" in srt.headers["Content-Disposition"]
    cues = re.findall(r"^\d+\n[\d:,]+ --> [\d:,]+\n(.+)$", srt.text, re.M)
    assert all(len(c.split()) <= 3 for c in cues) and " ".join(cues).split() == [w["word"] for w in whole]
    # Bad requests name what is wrong.
    for params, field in (({"format": "ass"}, "format"), ({"chapter": "9"}, "chapter"), ({"chapter": "x"}, "chapter"),
                          ({"words": "0"}, "words")):
        response = get(system, f"/audiobooks/{job_id}/subtitles", **params)
        assert 400 <= response.status_code < 500 and response.json()["error"]["param"] == field, response.text


def _epub(system: System, job_id: str, tmp_path: Path) -> Path:
    response = get(system, f"/audiobooks/{job_id}/epub")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/epub+zip"
    path = tmp_path / "book.epub"
    path.write_bytes(response.content)
    return path


def test_the_read_along_epub_passes_epubcheck_and_its_overlays_cover_the_audio(made, tmp_path):
    system, job_id, state = made
    path = _epub(system, job_id, tmp_path)
    with zipfile.ZipFile(path) as zf:
        first = zf.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED and not first.extra
        files = {name: zf.read(name) for name in zf.namelist()}
    opf = etree.fromstring(files["OEBPS/package.opf"])
    durations = {m.get("refines"): m.text for m in opf.iter("{*}meta") if m.get("property") == "media:duration"}
    for n, chapter in enumerate(CHAPTERS, 1):
        xhtml = etree.fromstring(files[f"OEBPS/chapter{n:03d}.xhtml"])
        smil = etree.fromstring(files[f"OEBPS/chapter{n:03d}.smil"])
        pars = list(smil.iter(f"{SMIL}par"))
        ids = {el.get("id"): "".join(el.itertext()) for el in xhtml.iter(f"{XHTML}span")}
        # One par per sentence, in reading order, each pointing at a sentence of the text.
        targets = [p.find(f"{SMIL}text").get("src").split("#")[1] for p in pars]
        assert targets == list(ids) and " ".join(ids.values()).split() == written_words(chapter)
        clips = [(p.find(f"{SMIL}audio").get("clipBegin"), p.find(f"{SMIL}audio").get("clipEnd")) for p in pars]
        seconds = [(_seconds(a), _seconds(b)) for a, b in clips]
        # End to end over the chapter file: the pauses are heard, nothing is skipped.
        assert seconds[0][0] == 0 and all(a[1] == b[0] for a, b in zip(seconds, seconds[1:]))
        assert seconds[-1][1] == pytest.approx(state["chapters"][n - 1]["duration_s"], abs=0.002)
        assert _seconds(durations[f"#smil{n}"]) == pytest.approx(seconds[-1][1], abs=0.002)
        audio_file = pars[0].find(f"{SMIL}audio").get("src")
        assert files[f"OEBPS/{audio_file}"][:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")
    assert check_epubcheck(path, tmp_path) == []  # not even a warning


def _seconds(clock: str) -> float:
    h, m, s = clock.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


PLAYER = """<!DOCTYPE html><html><body>
<iframe id="text" style="width:600px;height:400px"></iframe><audio id="audio" muted></audio>
<script>
const SMIL = "http://www.w3.org/ns/SMIL";
// A small reading system: one overlay's text in the frame, its clips played in turn, the sentence being read lit.
window.readAlong = async (smilPath, active) => {
  const smilUrl = new URL(smilPath, location.href);
  const smil = new DOMParser().parseFromString(await (await fetch(smilUrl)).text(), "application/xml");
  const clock = c => c.split(":").reduce((x, y) => x * 60 + parseFloat(y), 0);
  const pars = [...smil.getElementsByTagNameNS(SMIL, "par")].map(p => {
    const a = p.getElementsByTagNameNS(SMIL, "audio")[0], t = p.getElementsByTagNameNS(SMIL, "text")[0];
    const text = new URL(t.getAttribute("src"), smilUrl);
    return {id: text.hash.slice(1), doc: text.href.split("#")[0], src: new URL(a.getAttribute("src"), smilUrl).href,
            begin: clock(a.getAttribute("clipBegin")), end: clock(a.getAttribute("clipEnd"))};
  }).filter((p, i, all) => p.src === all[0].src);  // the first chapter's audio
  const frame = document.getElementById("text"), player = document.getElementById("audio");
  await new Promise(ok => { frame.onload = ok; frame.src = pars[0].doc; });
  const doc = frame.contentDocument;
  window.lit = [];
  window.missing = pars.filter(p => !doc.getElementById(p.id)).map(p => p.id);
  // Each sentence played since the last update is lit in turn: time updates come every 15 to 250 ms (less often on a
  // busy machine), and at four times speed a short sentence can begin and end between two of them.
  let heard = 0;
  const update = () => {
    const t = player.ended ? player.duration : player.currentTime;
    for (const p of pars) {
      doc.getElementById(p.id)?.classList.toggle(active, t >= p.begin && t < p.end);
      if (p.end > heard && p.begin <= t && window.lit[window.lit.length - 1] !== p.id) window.lit.push(p.id);
    }
    heard = Math.max(heard, t);
  };
  player.ontimeupdate = update;
  player.onended = update;
  player.src = pars[0].src;
  await new Promise((ok, bad) => { player.onloadedmetadata = ok; player.onerror = () => bad(player.error.message); });
  window.pars = pars;
  window.duration = player.duration;
  player.playbackRate = 4;
  await player.play();
  return pars.length;
};
</script></body></html>"""


def test_the_read_along_epub_plays_in_chromium_lighting_each_sentence(made, browser, tmp_path):
    system, job_id, _ = made
    play_read_along(browser, _epub(system, job_id, tmp_path), tmp_path)


def play_read_along(browser, path: Path, tmp_path: Path) -> None:
    """Open the EPUB's first overlay in Chromium (a small test page serving the unzipped book) and play it: each
    sentence is lit in turn, in reading order, and the style sheet marks the lit one."""
    root = tmp_path / "book"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(root)
    opf_path = re.search(r'full-path="([^"]+)"', (root / "META-INF" / "container.xml").read_text()).group(1)
    opf = etree.parse(str(root / opf_path))
    active = next(m.text for m in opf.iter("{*}meta") if m.get("property") == "media:active-class")
    spine = [i.get("idref") for i in opf.iter("{*}itemref")]
    items = {i.get("id"): i for i in opf.iter("{*}item")}
    overlay = next(items[items[ref].get("media-overlay")] for ref in spine if items[ref].get("media-overlay"))
    smil = (Path(opf_path).parent / overlay.get("href")).as_posix()
    (root / "player.html").write_text(PLAYER)
    handler = partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/player.html")
        count = page.evaluate("([s, a]) => window.readAlong(s, a)", [smil, active])
        assert count >= 3 and page.evaluate("window.missing") == []
        # At four times speed the chapter plays through; each sentence is lit in turn, in reading order.
        page.wait_for_function("window.lit.length === window.pars.length", timeout=60_000)
        assert page.evaluate("window.lit") == page.evaluate("window.pars.map(p => p.id)")
        assert page.evaluate("window.duration") == pytest.approx(
            page.evaluate("window.pars[window.pars.length - 1].end"), abs=0.15)
        colour = page.evaluate("([a]) => { const d = document.getElementById('text').contentDocument;"
                               " const el = d.getElementById(window.pars[1].id); el.classList.add(a);"
                               " return getComputedStyle(el).backgroundColor; }", [active])
        assert colour not in ("rgba(0, 0, 0, 0)", "transparent")
        page.close()
    finally:
        server.shutdown()


def test_a_book_that_came_as_an_epub_reads_along_in_its_own_pages(book_system, browser, tmp_path):
    system = book_system
    chapters = [(title, paragraphs[:2]) for title, paragraphs in BOOK_CHAPTERS[:2]]
    response = system.api.post("/audiobooks", files={"file": ("book.epub", make_epub(chapters))},
                               data={"format": "mp3"}, timeout=30)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    state = wait_until(lambda: (s := system.api.get(f"/audiobooks/{job_id}", timeout=10).json())["status"]
                       in ("succeeded", "failed") and s, 300, interval=0.5, what="the book")
    assert state["status"] == "succeeded", state
    path = _epub(system, job_id, tmp_path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pages = {n: zf.read(n).decode() for n in names if n.endswith(".xhtml")}
    original = zipfile.ZipFile(io.BytesIO(make_epub(chapters))).namelist()
    # The original's own files are all there (its pages, styles, cover), its pages now with sentence ids ...
    assert set(original) <= set(names)
    text = "".join(pages.values())
    assert re.search(r'<span id="c1s\d+"', text) and NOTE in text  # ... and its notes, not read, still in it
    play_read_along(browser, path, tmp_path)
    check_epubcheck(path, tmp_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".xhtml": "application/xhtml+xml",
                      ".smil": "application/smil+xml", ".mp3": "audio/mpeg", ".m4a": "audio/mp4",
                      ".opf": "application/oebps-package+xml"}

    def log_message(self, *args) -> None:
        pass


def test_book_words_before_the_book_is_done_and_for_unknown_books(book_system):
    system = book_system
    missing = get(system, "/audiobooks/nope/words")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "book_not_found"
    assert get(system, "/audiobooks/nope/epub").status_code == 404


def test_plan_keeps_each_chunks_words_as_written(made):
    system, job_id, _ = made
    plan = load_plan(system.settings, job_id)
    said = " ".join(c.text for c in plan.chunks)
    assert "five dollars" in said and "$5" not in said  # the engine is asked for spoken words ...
    written = " ".join(c.source for c in plan.chunks).split()  # ... the book's own are kept beside them
    assert written == written_words(CHAPTERS[0]) + written_words(CHAPTERS[1])
    assert [c.heading for c in plan.chapters] == [1, 1]
