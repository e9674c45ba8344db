"""Redis clients made from the configured URL, and what Celery needs to reach the same server.

``REDIS_URL`` names either one Redis server, as redis-py reads it (``redis://``, ``rediss://`` for TLS,
``unix://``), or a set of Redis Sentinels that know which server is the master now::

    sentinel://[[USER]:PASSWORD@]HOST[:PORT][;HOST[:PORT]...][/DB]?master_name=NAME[&sentinel_password=SECRET]

- the hosts are the Sentinels (port 26379 unless given), separated by ``;``; each may repeat the ``sentinel://``
  prefix, as Celery writes its Sentinel URLs (``sentinel://a:26379;sentinel://b:26379``);
- USER and PASSWORD are the master's (its ``requirepass``), given once or the same on every host; ``/DB`` the
  database number (0), written once or the same on every host; characters such as ``@ : / ; ? # %`` in a password
  are percent-encoded (``%40`` ...);
- ``master_name`` (required) is the name the Sentinels monitor the master under (``sentinel monitor NAME ...``);
- ``sentinel_password``: the Sentinels' own password, only when they have one (their ``requirepass``).

redis-py's ``Redis.from_url`` knows no Sentinel, and Celery takes the master's name in its transport options rather
than in the URL: ``connect`` makes every client of the project from either form, and ``celery_broker`` gives Celery
the URL and options of the same server, so that the web app, the workers, Flower and the CLI all agree.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

if TYPE_CHECKING:
    import redis

SENTINEL_PORT = 26379
SCHEMES = ("redis", "rediss", "unix", "sentinel")
SENTINEL_OPTIONS = ("master_name", "sentinel_password")
_EXAMPLE = "sentinel://:PASSWORD@host1:26379;host2:26379/0?master_name=mymaster"


@dataclass(frozen=True)
class SentinelUrl:
    """A ``sentinel://`` URL, read: where the Sentinels are and how to reach the master they point to."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the master's
    sentinel_password: str | None = None  # the Sentinels' own

    def celery_url(self) -> str:
        """The same Sentinels in the form Celery's broker (kombu) and result backend read: one ``sentinel://`` URL
        per Sentinel, joined by ``;``. Each carries the credentials and database: kombu takes them from the first,
        and from the next when it fails over to it."""
        auth = ""
        if self.username or self.password:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(f"sentinel://{auth}{_netloc(host, port)}/{self.db}" for host, port in self.sentinels)

    def transport_options(self, socket_timeout_s: float) -> dict[str, Any]:
        """The options Celery's broker and result backend (and Flower) need besides the URL: the master's name, and
        how to talk to the Sentinels themselves."""
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": socket_timeout_s,
                                           "socket_timeout": socket_timeout_s}
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        return {"master_name": self.master_name, "sentinel_kwargs": sentinel_kwargs}


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith("sentinel://")


def check_url(url: str) -> None:
    """Raise ValueError, naming the problem, for a REDIS_URL no client could use: read at every process' start
    (settings.load), so that a mistake stops it at once rather than at its first job."""
    scheme = url.strip().partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ValueError(f"REDIS_URL must start with redis://, rediss:// (TLS), unix:// or sentinel://, not "
                         f"{redact_url(url)!r}")
    if scheme == "sentinel":
        parse_sentinel_url(url)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Read a ``sentinel://`` URL (the module's docstring has its form); ValueError says what is wrong with it."""
    def bad(problem: str) -> ValueError:
        return ValueError(f"REDIS_URL {redact_url(url)!r}: {problem} (the form is {_EXAMPLE})")

    text = url.strip()
    if not is_sentinel(text):
        raise bad("not a sentinel:// URL")
    rest, _, query = text[len("sentinel://"):].partition("?")
    if ";" in query:
        raise bad("the options (?master_name=...) go after the last Sentinel, at the very end")
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in SENTINEL_OPTIONS:
            raise bad(f"unknown option {name!r}; a Sentinel URL takes {' and '.join(SENTINEL_OPTIONS)}")
        options[name] = value
    master = options.get("master_name", "").strip()
    if not master:
        raise bad("no master name: add ?master_name=NAME, the name the Sentinels monitor the master under")
    sentinels: list[tuple[str, int]] = []
    credentials: set[tuple[str | None, str | None]] = set()
    databases: set[int] = set()
    for part in rest.split(";"):
        part = part.strip()
        if part.lower().startswith("sentinel://"):
            part = part[len("sentinel://"):]
        if not part:
            raise bad("an empty Sentinel address (two ';' in a row, or one at the end)")
        try:
            parts = urlsplit("//" + part)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise bad(f"{redact_url(part)!r} is not HOST[:PORT] ({exc})") from None
        if not host:
            raise bad(f"{redact_url(part)!r} names no host")
        if parts.username is not None or parts.password is not None:
            credentials.add((unquote(parts.username) if parts.username else None,
                             unquote(parts.password) if parts.password is not None else None))
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise bad(f"the database must be a number, not {path!r}")
            databases.add(int(path))
        sentinels.append((host, port or SENTINEL_PORT))
    if len(credentials) > 1:
        raise bad("the hosts carry different credentials: give the master's password once, before the first host")
    if len(databases) > 1:
        raise bad(f"the hosts name different databases ({', '.join(map(str, sorted(databases)))}): give it once, "
                  "at the end")
    username, password = next(iter(credentials), (None, None))
    return SentinelUrl(sentinels=tuple(sentinels), master_name=master, db=next(iter(databases), 0),
                       username=username or None, password=password or None,
                       sentinel_password=options.get("sentinel_password") or None)


def redact_url(url: str) -> str:
    """A URL fit for logs and error messages: any user and password replaced by ***. The password may hold '@'
    itself: the host is what follows the last one. A Sentinel URL's hosts, joined by ';', are each redacted, and so
    is its ``sentinel_password=`` option."""
    if ";" in url and url.lower().startswith("sentinel://"):
        return ";".join(redact_url(part) for part in url.split(";"))
    scheme, sep, rest = url.partition("://")
    if not sep:  # a later Sentinel of a list, written without its scheme: "host:26379"
        scheme, rest = "", url
    rest, question, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = f"***@{netloc.rpartition('@')[2]}"
    query = "&".join("sentinel_password=***" if option.startswith("sentinel_password=") else option
                     for option in query.split("&")) if question else ""
    return f"{scheme}{sep}{netloc}{slash}{path}{question}{query}"


def connect(url: str, **options: Any) -> "redis.Redis":
    """A client of the Redis that ``url`` names; for a ``sentinel://`` URL, of the master the Sentinels point to
    now, found again whenever its connections fail (a failover). ``options`` are redis-py's (decode_responses,
    socket timeouts, client_name, max_connections, ...). An unreachable master raises redis' ConnectionError (a
    Sentinel that knows no master: MasterNotFoundError, one of them), as a plain URL's does."""
    import redis

    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    from redis.sentinel import Sentinel

    where = parse_sentinel_url(url)
    # Asking a Sentinel is quick or it is down: its connections get the same timeouts as the master's.
    sentinel_kwargs = {k: options[k] for k in ("socket_connect_timeout", "socket_timeout") if k in options}
    if where.sentinel_password:
        sentinel_kwargs["password"] = where.sentinel_password
    sentinels = Sentinel(list(where.sentinels), sentinel_kwargs=sentinel_kwargs)
    return sentinels.master_for(where.master_name, username=where.username, password=where.password,
                                db=where.db, **options)


def sibling(client: "redis.Redis", **changes: Any) -> "redis.Redis":
    """Another client of the same server with a pool of its own (as many connections at most) and some options
    changed (``decode_responses=False`` for bytes); for a Sentinel client, of the same master, found the same way."""
    import redis
    from redis.sentinel import SentinelConnectionPool

    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, **changes}
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("connection_pool", None)  # the first pool's own handle on the Sentinels; the new pool makes its own
        new_pool: redis.ConnectionPool = SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, connection_class=pool.connection_class,
            max_connections=pool.max_connections, is_master=pool.is_master, check_connection=pool.check_connection,
            **kwargs)
    else:
        # The connection class too: a unix:// or rediss:// client's sibling is one as well.
        new_pool = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=pool.max_connections,
                                        **kwargs)
    return redis.Redis(connection_pool=new_pool)


def celery_broker(url: str, socket_timeout_s: float) -> tuple[str, dict[str, Any]]:
    """Celery's broker and result-backend URL for ``url``, and the transport options a Sentinel URL needs beside
    it (none for a plain one)."""
    if not is_sentinel(url):
        return url, {}
    where = parse_sentinel_url(url)
    return where.celery_url(), where.transport_options(socket_timeout_s)


# Redis answering, but refusing writes: out of memory (maxmemory), a failed snapshot or AOF write (a full disk:
# MISCONF), a replica. The service is unavailable until the operator acts; nothing in the request is at fault. In a
# script's error the code comes after the script's name ("... @user_script: 15: -OOM command not allowed ...").
REFUSAL = re.compile(r"(?:^|[\s-])((?:MISCONF|OOM|READONLY|NOREPLICAS|MASTERDOWN|LOADING)\b[^.]*)")


def refusal(exc: Exception) -> str | None:
    """The reason Redis gives for refusing a write ("OOM command not allowed ..."), or None for other errors.
    redis-py strips the code off the errors it has a class for."""
    import redis

    for kind, code in ((redis.exceptions.OutOfMemoryError, "OOM"), (redis.exceptions.ReadOnlyError, "READONLY")):
        if isinstance(exc, kind):
            return f"{code} {exc}"
    found = REFUSAL.search(str(exc))
    return found.group(1).strip() if found else None
