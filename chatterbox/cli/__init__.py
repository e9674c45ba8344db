"""The one entry point: ``chatterbox up | worker | web | flower | say | book | books | jobs | keys``.

Commands import the web app, Celery, the workers and the HTTP client only when they run, so ``chatterbox --help``
stays fast and the library itself stays free of them.

The commands live by group: serve (up, worker, web, flower, redis: the only one that imports the app), speech
(say, jobs), books (book, books), lexicon, and admin (keys, deploy, gc); common holds what they share, the exit codes
among it. They do not import this module: it imports them and adds their commands to ``main``.
"""
from __future__ import annotations

import logging

import click

from .. import settings as settings_mod
from . import admin, books, lexicon, serve, speech
from .common import (EXIT_AUTH, EXIT_CODES_HELP, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE,
                     EXIT_USAGE, CliError)

__all__ = ["main", "CliError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_AUTH",
           "EXIT_NOT_FOUND", "EXIT_REFUSED", "EXIT_CODES_HELP"]


@click.group(epilog=EXIT_CODES_HELP)
def main() -> None:
    """Chatterbox text to speech: a Redis/Celery job system with a web API."""
    try:
        level = settings_mod.load().log_level.upper()
    except ValueError:  # said by the command, which loads the settings again: with its exit code, if it needs them
        level = "INFO"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _command in (serve.up, serve.worker, serve.web, serve.flower, serve.redis_command,
                 speech.say, speech.jobs, books.book, books.books, lexicon.lexicon,
                 admin.keys, admin.deploy, admin.gc):
    main.add_command(_command)
del _command
