"""The processes `chatterbox up` supervises, in start order: Redis, workers, web, Flower."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

import redis

from chatterbox import redis_client, redis_server
from chatterbox.engines import choose_engine
from chatterbox.settings import Settings, embedded_redis_password, flower_credentials, to_env

from .devices import worker_specs
from .supervisor import Service


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "chatterbox", *args]


def _wait_http(url: str, timeout: float = 30.0):
    def ready(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers; 401 or 503 are answers
            except OSError:
                time.sleep(0.2)
    return ready


def _answers(url: str) -> bool:
    """Whether a Redis (any server, with a password or not) listens where the embedded one would."""
    try:
        redis_client.connect(url, socket_connect_timeout=0.5).ping()
    except redis.exceptions.AuthenticationError:
        return True  # a server with another password: an AuthenticationError is a ConnectionError too
    except redis.exceptions.ConnectionError:
        return False
    except redis.exceptions.ResponseError:
        return True  # NOAUTH and the like: it answers
    return True


def build_stack(settings: Settings, flower: bool = True) -> tuple[list[Service], str]:
    """The services to supervise and a summary to print. Raises RuntimeError when a port is taken."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    if settings.redis_url is None:
        password = embedded_redis_password(settings)
        url = settings.replace(redis_password=password).broker_url
        if _answers(url):
            raise RuntimeError(f"something already answers at 127.0.0.1:{settings.redis_port}; stop it, or set "
                               "CHATTERBOX_REDIS_PORT for the embedded Redis, or REDIS_URL to use that server")
        settings.redis_dir.mkdir(parents=True, exist_ok=True)
        services.append(Service("redis", redis_server.server_args(settings.redis_port, settings.redis_dir, password,
                                                                  settings.redis_maxmemory_mb),
                                ready=lambda proc: redis_server.wait_ready(url, proc=proc)))
        # Every child is told the URL with the password (in its environment, which only this user can read).
        settings = settings.replace(redis_url=url)
    env = to_env(settings)
    specs = worker_specs(settings)
    for spec in specs:
        args = ("worker", "--gpu", spec.gpu) if spec.gpu is not None else ("worker", "--name", spec.name)
        services.append(Service(f"worker-{spec.name}", _python(*args), env=env))
    web_url = f"http://{settings.web_host}:{settings.web_port}"
    services.append(Service("web", _python("web"), env=env, ready=_wait_http(f"{web_url}/health")))
    embedded = ""
    if services[0].name == "redis":
        secret = "CHATTERBOX_REDIS_PASSWORD" if settings.redis_password else settings.redis_password_file
        embedded = f"  (embedded: password in {secret}, AOF in {settings.redis_dir})"
    lines = ["", "chatterbox-jobs is starting",
             f"  dashboard and API  {web_url}",
             f"  redis              {redis_client.redact_url(settings.redis_url)}{embedded}",
             f"  workers            {', '.join(s.name for s in specs)}",
             f"  engine             {choose_engine(settings)[1]}",
             f"  data               {settings.data_dir.resolve()}"]
    if flower:
        user, password = flower_credentials(settings)
        services.append(Service("flower", _python("flower"), env=env,
                                ready=_wait_http(f"http://{settings.flower_host}:{settings.flower_port}/")))
        lines.append(f"  flower             http://{settings.flower_host}:{settings.flower_port}  "
                     f"(user {user}, password {password})")
    lines += ["  Ctrl-C stops everything.", ""]
    return services, "\n".join(lines)
