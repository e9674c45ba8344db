"""``chatterbox lexicon``: the key's pronunciation lexicon, through the web app."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .common import (EXIT_CODES_HELP, EXIT_USAGE, CliError, make_client, print_table, remote_errors,
                     server_options)

# -- the pronunciation lexicon (through the web app, the key's own) ------------------------------------------------

@click.group(epilog=EXIT_CODES_HELP)
def lexicon() -> None:
    """How words are said in this key's jobs: whole-word respellings ("Nguyen" -> "Win"), or phonemes (IPA, which
    Piper says; other engines say the respelling, else the word as written)."""


@lexicon.command("list")
@click.option("--json", "as_json", is_flag=True, help="print the entries as JSON")
@server_options
@remote_errors
def lexicon_list(as_json: bool, server: str | None, key: str | None) -> None:
    """Every entry, by term."""
    items = make_client(server, key).lexicon()
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in items], indent=2))
        return
    if any(e.get("phonemes") for e in items):
        print_table([[e["term"], e["say"], e.get("phonemes", ""), "yes" if e["case_sensitive"] else "no"]
                     for e in items], ["TERM", "SAY", "PHONEMES", "CASE-SENSITIVE"])
        return
    print_table([[e["term"], e["say"], "yes" if e["case_sensitive"] else "no"] for e in items],
                ["TERM", "SAY", "CASE-SENSITIVE"])


@lexicon.command("set")
@click.argument("term")
@click.argument("say", required=False)
@click.option("--phonemes", default=None, metavar="IPA", help="say TERM by these phonemes (IPA, e.g. ˈaɪpiːeɪ) "
              "where the engine takes phonemes (Piper); SAY, if given, is then what other engines say")
@click.option("--case-sensitive", is_flag=True, help="match TERM's case exactly (default: any case)")
@server_options
@remote_errors
def lexicon_set(term: str, say: str | None, phonemes: str | None, case_sensitive: bool, server: str | None,
                key: str | None) -> None:
    """Say TERM (a whole word, or words) as SAY, or by --phonemes."""
    from urllib.parse import quote

    client = make_client(server, key)
    if phonemes is None:
        if say is None:
            raise CliError("say how TERM is said: SAY, or --phonemes IPA", EXIT_USAGE)
        entry = client.set_lexicon_entry(term, say, case_sensitive)
    else:
        body = {"phonemes": phonemes, "case_sensitive": case_sensitive, **({"say": say} if say else {})}
        entry = client.request("PUT", f"/lexicon/{quote(term, safe='')}", json=body).json()
    said = f"/{entry['phonemes']}/" + (f" (else {entry['say']})" if entry["say"] else "") \
        if entry.get("phonemes") else entry["say"]
    click.echo(f"{entry['term']} -> {said}{' (case-sensitive)' if entry['case_sensitive'] else ''}")


@lexicon.command("remove")
@click.argument("term")
@server_options
@remote_errors
def lexicon_remove(term: str, server: str | None, key: str | None) -> None:
    """Forget the entry of TERM (as it was set: case and all)."""
    make_client(server, key).remove_lexicon_entry(term)
    click.echo(f"removed {term}")


CSV_HEADER = ["term", "say", "case_sensitive", "phonemes"]  # phonemes: only where an entry has them


@lexicon.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="replace the whole lexicon (default: add to it, replacing the "
                                              "entries of the same terms)")
@server_options
@remote_errors
def lexicon_import(file: Path, replace: bool, server: str | None, key: str | None) -> None:
    """Entries from a CSV file: term,say[,case_sensitive[,phonemes]] a row (a header row of those names is
    optional), stored all at once or not at all. A row with phonemes (IPA) is a phoneme entry; its say may be empty."""
    import csv

    rows = [row for row in csv.reader(file.read_text(encoding="utf-8-sig").splitlines()) if row and any(row)]
    if rows and [c.strip().lower() for c in rows[0][:3]] == CSV_HEADER[:len(rows[0][:3])]:
        rows = rows[1:]
    entries: dict[str, dict] = {}
    for number, row in enumerate(rows, 1):
        if len(row) < 2:
            raise CliError(f"{file}: row {number} has no `say` column (term,say[,case_sensitive])", EXIT_USAGE)
        flag = row[2].strip().lower() if len(row) > 2 else ""
        if flag not in ("", "0", "1", "true", "false", "yes", "no"):
            raise CliError(f"{file}: row {number}: case_sensitive is true or false, not {row[2]!r}", EXIT_USAGE)
        entries[row[0].strip()] = {"term": row[0].strip(), "say": row[1].strip(),
                                   "case_sensitive": flag in ("1", "true", "yes"),
                                   **({"phonemes": row[3].strip()} if len(row) > 3 and row[3].strip() else {})}
    client = make_client(server, key)
    if not replace:  # the file's entries win over the lexicon's own of the same term
        kept = {e["term"]: {"term": e["term"], "say": e["say"], "case_sensitive": e["case_sensitive"],
                            **({"phonemes": e["phonemes"]} if e.get("phonemes") else {})}
                for e in client.lexicon()}
        entries = {**kept, **entries}
    stored = client.replace_lexicon(list(entries.values()))
    click.echo(f"{len(stored)} entries in the lexicon")


@lexicon.command("export")
@server_options
@remote_errors
def lexicon_export(server: str | None, key: str | None) -> None:
    """The lexicon as CSV on standard output (what `import` reads)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    items = make_client(server, key).lexicon()
    columns = 4 if any(e.get("phonemes") for e in items) else 3
    writer.writerow(CSV_HEADER[:columns])
    for e in items:
        writer.writerow([e["term"], e["say"], "true" if e["case_sensitive"] else "false",
                         e.get("phonemes", "")][:columns])
    click.echo(out.getvalue(), nl=False)

