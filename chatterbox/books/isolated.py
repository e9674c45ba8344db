"""Reading an uploaded book in a child process, so that a slow or huge book cannot stall or take down the web app.

The web app is one gunicorn process with many threads. A parse holds the GIL through long C calls (regexes over a
50 MB string, lxml, BeautifulSoup), which starves /health and every other request, and a parse that runs out of
memory would take the whole process with it. Here each parse is a child forked from a forkserver that has already
imported the readers: it costs milliseconds, runs under a wall-clock and an address-space limit, and is killed
when it overruns.
"""
from __future__ import annotations

import logging
import multiprocessing
import resource
import time
import traceback
from typing import Any

from chatterbox.books.reader import Book, book_from_chapters, book_from_text, read_book
from chatterbox.books.sections import BookError

__all__ = ["parse_isolated", "KINDS", "MEMORY_LIMIT"]

log = logging.getLogger(__name__)

# kind -> (reader, the input its failures name)
_READERS = {"file": (read_book, "file"), "text": (book_from_text, "text"),
            "chapters": (book_from_chapters, "chapters")}
KINDS = tuple(_READERS)

# Peak memory (RSS) measured for the largest books the app accepts: 50 MB of wrapped plain text 370 MB, 50 MB of
# Markdown 760 MB, one 50 MB line 1.1 GB, a 16 MB EPUB document 344 MB (by extrapolation about 1.4 GB for a 64 MB
# one, the largest member an EPUB may have). The address space peaked some 50 MB above RSS, so 4 GiB is generous
# and still stops a runaway parse long before it takes the host's memory.
MEMORY_LIMIT = 4 * 2**30

# Not "fork": forking the threaded web process can copy a lock another thread holds at that moment, and the child
# deadlocks on it. Not "spawn": a fresh interpreter per parse would import lxml, bs4 and the rest every time. The
# forkserver is a fresh process started once with the readers preloaded (0.2 s here); each parse forks it (a small
# EPUB took 20 ms in all).
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["chatterbox.books.reader", "chatterbox.books.epub", __name__])


def parse_isolated(kind: str, *args: Any, timeout_s: float = 120.0, memory_limit: int = MEMORY_LIMIT,
                   **kwargs: Any) -> Book:
    """read_book ("file"), book_from_text ("text") or book_from_chapters ("chapters") with these arguments, in a
    child process; the child's BookError is raised here as it was, and overrunning the time or memory limit, or
    any other failure of the child, becomes a BookError too ("too_slow", "too_large", "parse_failed")."""
    if kind not in _READERS:
        raise ValueError(f"unknown kind of book {kind!r}; one of {', '.join(KINDS)}")
    field = _READERS[kind][1]
    deadline = time.monotonic() + timeout_s
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(kind, args, kwargs, memory_limit, sender), daemon=True,
                             name=f"book-reader-{kind}")
    reply = None
    try:
        child.start()
    except BaseException:
        receiver.close()
        sender.close()
        raise
    try:
        sender.close()  # (the child holds its own copy: when it exits, poll() sees the end of the pipe)
        if not receiver.poll(max(0.0, deadline - time.monotonic())):
            raise BookError(f"reading the book took longer than {timeout_s:g} s, so it was stopped; split it into "
                            "smaller books", "too_slow", field)
        try:
            reply = receiver.recv()
        except EOFError:  # the child died without a word: killed, or crashed in C
            pass
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
    if reply is None:
        log.error("the book reader (%s) exited with code %s without an answer", kind, child.exitcode)
        raise BookError(f"the book could not be read: the reader stopped unexpectedly (exit code {child.exitcode})",
                        "parse_failed", field)
    if reply[0] == "book":
        return reply[1]
    if reply[0] == "error":
        _, message, code, error_field = reply
        raise BookError(message, code, error_field)
    log.error("the book reader (%s) failed:\n%s", kind, reply[1])
    last_line = reply[1].strip().splitlines()[-1][:200]  # "RecursionError: maximum recursion depth exceeded"
    raise BookError(f"the book could not be read: the reader failed on it ({last_line})", "parse_failed", field)


def _child(kind: str, args: tuple, kwargs: dict, memory_limit: int, sender) -> None:
    """In the child: limit the address space, read the book, send back ("book", Book), ("error", message, code,
    field) or ("crash", traceback). A BookError goes back as its three fields, since its __init__ takes three
    arguments and so does not unpickle from its args."""
    reader, field = _READERS[kind]
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit if hard == resource.RLIM_INFINITY
                                            else min(memory_limit, hard), hard))
    out_of_memory = False
    try:
        reply: tuple = ("book", reader(*args, **kwargs))
    except BookError as exc:
        reply = ("error", exc.message, exc.code, exc.field)
    except MemoryError:
        out_of_memory = True  # (answered below, once the frames that held the memory are gone)
    except Exception:
        reply = ("crash", traceback.format_exc())
    too_large = ("error", f"the book is too large to read: it needs more than {memory_limit / 2**30:.3g} GB of memory",
                 "too_large", field)
    try:
        sender.send(too_large if out_of_memory else reply)
    except MemoryError:  # pickling a huge Book can be the last straw; nothing has been sent yet then
        sender.send(too_large)
    sender.close()
