"""Audiobooks: ``chatterbox book FILE`` submits and follows one, ``chatterbox books`` manages them afterwards."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import (EXIT_CODES_HELP, EXIT_FAILED, EXIT_USAGE, CliError, ProgressLine, format_duration, format_when,
                     make_client, parse_params, print_table, progress_enabled, remote_errors, server_options)

if TYPE_CHECKING:
    from web.client import Client

# -- audiobooks -------------------------------------------------------------------------------------------------------

@click.command(epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="directory for the M4B and the chapter files (default: the book file's name without suffix)")
@click.option("--title", default=None)
@click.option("--author", default=None)
@click.option("--language", default=None)
@click.option("-v", "--voice", default=None)
@click.option("-f", "--format", "fmt", type=click.Choice(["mp3", "ogg"]), default=None,
              help="chapter files (default: the server's CHATTERBOX_BOOK_FORMAT)")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="an engine parameter")
@click.option("-m", "--model", default=None, help="the Chatterbox model (default: the book's language decides)")
@click.option("--lexicon", "lexicon_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="the book's own pronunciation entries, a JSON file: a list of {term, say, case_sensitive} or "
                   "{\"entries\": [...]} (as the lexicon page exports it); they win over the key's own")
@click.option("--no-wait", is_flag=True, help="print the book's job id and exit once it is queued")
@click.option("--progress/--no-progress", default=None, help="show a progress bar (default: when stderr is a terminal)")
@server_options
@remote_errors
def book(file: Path, output: Path | None, title: str | None, author: str | None, language: str | None,
         voice: str | None, fmt: str | None, params: tuple[str, ...], model: str | None, lexicon_file: Path | None,
         no_wait: bool, progress: bool | None, server: str | None, key: str | None) -> None:
    """Read FILE (.txt, .md or .epub) as an audiobook: submit it, follow it, download the M4B and chapters.

    The paths written are printed on standard output. `chatterbox books ...` manages books afterwards.
    """
    entries = None
    if lexicon_file is not None:
        try:
            entries = json.loads(lexicon_file.read_text(encoding="utf-8-sig"))
        except ValueError as exc:
            raise CliError(f"{lexicon_file}: not JSON ({exc})", EXIT_USAGE) from None
    client = make_client(server, key)
    submitted = client.submit_book(file=file, title=title, author=author, language=language, voice=voice,
                                   format=fmt, params=parse_params(params) or None, model=model, lexicon=entries)
    job_id = submitted["job_id"]
    if no_wait:
        click.echo(job_id)
        return
    click.echo(f"book {job_id}: {submitted.get('title') or file.name}, {submitted.get('chapters')} chapters, "
               f"{submitted.get('chunks')} chunks", err=True)
    _follow_book(client, job_id, output or Path(file.stem), progress_enabled(progress))


class BookProgress:
    """Feeds a book's events to a progress bar: chunks done of all, chapters ready, and the server's ETA."""

    def __init__(self, bar: ProgressLine, state: dict):
        """``state``: the book as GET /audiobooks/<id> gave it, so that a book followed late starts where it is."""
        self.bar = bar
        self.done, self.total = state.get("chunks_done", 0), state.get("chunks_total", 0)
        chapters = state.get("chapters", [])
        # indices, not a count: the events are replayed from the start, chapters already ready included
        self.ready = {c["index"] for c in chapters if c.get("status") == "assembled"}
        self.chapters_total = len(chapters)
        self.eta: float | None = state.get("eta_s")
        self.status = state.get("status", "queued")

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "progress":
            self.status = event.get("status") or self.status
            if event.get("chunks_total"):
                self.done, self.total, self.eta = event.get("chunks_done", 0), event["chunks_total"], event.get("eta_s")
        elif kind == "chapter":
            self.ready.add(event.get("index"))
        elif kind == "done":
            self.done, self.eta, self.status = self.total, None, "done"
        else:
            return
        fraction = self.done / self.total if self.total else float(event.get("progress") or 0.0)
        detail = f"{self.done}/{self.total} chunks, {len(self.ready)}/{self.chapters_total} chapters ready" \
            if self.total else self.status
        if self.status == "paused":
            detail += ", paused"
        elif self.eta is not None and self.done < self.total:
            detail += f", ETA {format_duration(self.eta)}"
        self.bar.update(1.0 if kind == "done" else fraction, detail)


def _follow_book(client: "Client", job_id: str, output: Path, show: bool) -> None:
    """Follow the book with a progress bar until it ends, then download its M4B and chapters into ``output``."""
    from web.client import JobFailed

    bar = ProgressLine("book", show)
    on_event = BookProgress(bar, client.book(job_id))  # also: a job that is not a book is refused (404) here
    try:
        client.wait(job_id, on_event=on_event)
    except KeyboardInterrupt:
        bar.finish()
        raise CliError(f"stopped following; book {job_id} goes on on the server "
                       f"(`chatterbox books download {job_id} -o {output}`)", EXIT_FAILED)
    finally:
        bar.finish()
    state = client.book(job_id)
    if state.get("status") != "succeeded":
        raise JobFailed(state)
    output.mkdir(parents=True, exist_ok=True)
    click.echo(client.download_m4b(job_id, output))
    for chapter in state.get("chapters", []):
        click.echo(client.download_chapter(job_id, chapter["index"], output))


@click.group(epilog=EXIT_CODES_HELP)
def books() -> None:
    """List audiobooks, show one, pause, resume, cancel, or download one (`chatterbox book FILE` submits)."""


@books.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the books as JSON")
@server_options
@remote_errors
def books_list(as_json: bool, server: str | None, key: str | None) -> None:
    """Audiobooks, newest first."""
    items = make_client(server, key).books()
    if as_json:
        click.echo(json.dumps([b.as_dict() for b in items], indent=2))
        return
    print_table([[b["id"], b.get("status", "?"), format_when(b.get("created_at")), f"{b.get('chunks_done', 0)}/"
                  f"{b.get('chunks_total', 0)}", str(b.get("chapters_total", "-")), b.get("title") or "-"]
                 for b in items], ["ID", "STATUS", "CREATED", "CHUNKS", "CHAPTERS", "TITLE"])


@books.command("status")
@click.argument("book_id")
@click.option("--json", "as_json", is_flag=True, help="print the book's whole state as JSON")
@server_options
@remote_errors
def books_status(book_id: str, as_json: bool, server: str | None, key: str | None) -> None:
    """A book's progress, per chapter."""
    state = make_client(server, key).book(book_id)
    if as_json:
        click.echo(json.dumps(state.as_dict(), indent=2))
        return
    eta = f", ETA {format_duration(state['eta_s'])}" if state.get("eta_s") is not None else ""
    click.echo(f"{state.get('title') or book_id}: {state.get('status')}, {state.get('chunks_done')}/"
               f"{state.get('chunks_total')} chunks, {format_duration(state.get('audio_s'))} of audio{eta}")
    if state.get("error"):
        click.echo(f"error: {state['error']}")
    for ch in state.get("chapters", []):
        click.echo(f"  {ch['index']:3d}  {ch['status']:<10}  {ch['chunks_done']}/{ch['chunks_total']}  {ch['title']}")


def _book_action(name: str, method: str, doc: str) -> None:
    @books.command(name, help=doc)
    @click.argument("book_id")
    @server_options
    @remote_errors
    def command(book_id: str, server: str | None, key: str | None) -> None:
        result = getattr(make_client(server, key), method)(book_id)
        click.echo(f"book {book_id}: {result.get('status')}")


_book_action("pause", "pause_book", "Pause a book after the chunks in flight.")
_book_action("resume", "resume_book", "Resume a paused, failed or cancelled book (finished work is kept).")
_book_action("cancel", "cancel_book", "Cancel a book.")


@books.command("download")
@click.argument("book_id")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="directory for the M4B and the chapter files")
@click.option("--progress/--no-progress", default=None, help="show a progress bar (default: when stderr is a terminal)")
@server_options
@remote_errors
def books_download(book_id: str, output: Path, progress: bool | None, server: str | None, key: str | None) -> None:
    """Wait for a book (if it is not finished) and download its M4B and chapter files into a directory."""
    _follow_book(make_client(server, key), book_id, output, progress_enabled(progress))

