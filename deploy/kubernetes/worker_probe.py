"""A worker pod's probes (worker.yaml runs them; the image holds this file as /app/deploy/kubernetes/worker_probe.py).

They read the heartbeat each worker keeps in Redis, the one /health and the operations page show: a worker beats
once its model is loaded, says ``consuming`` once Celery takes tasks, and stops beating when it dies or hangs.

    python worker_probe.py ready gpu0   # exit 0 when this pod's worker beats and takes tasks (startup, readiness)
    python worker_probe.py alive gpu0   # exit 0 when it beats, or when Redis cannot be reached (liveness)

Liveness does not blame a worker for Redis being away: restarting GPU workers then would only throw their loaded
models away, and they reconnect by themselves.
"""
from __future__ import annotations

import sys

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chatterbox import jobs, settings
from workers.devices import WorkerSpec


def check(mode: str, name: str) -> tuple[bool, str]:
    loaded = settings.load()
    # The Celery name `chatterbox worker --name NAME` runs under in this pod: NAME@<pod name>.
    hostname = WorkerSpec(name, None, loaded.host_name).hostname
    try:
        # One try, well within the probe's timeout (redis-py would retry a refused connection for seconds).
        store = jobs.JobStore.connect(loaded, socket_connect_timeout=3, socket_timeout=3, retry_on_timeout=False,
                                      retry=Retry(NoBackoff(), 0))
        beats = [w for w in store.workers() if w.get("hostname") == hostname]
    except redis.exceptions.RedisError as exc:
        return mode == "alive", f"Redis cannot be reached: {exc}"
    if not beats:
        return False, f"no heartbeat from {hostname}"
    newest = max(beats, key=lambda w: w.get("seen_at", 0))  # a restarted worker's old beat lingers a few seconds
    if mode == "ready" and not newest.get("consuming"):
        return False, f"{hostname} has loaded its model but takes no tasks yet"
    return True, f"{hostname} beats ({'consuming' if newest.get('consuming') else 'starting'})"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("ready", "alive"):
        print("usage: worker_probe.py ready|alive WORKER_NAME", file=sys.stderr)
        return 2
    ok, why = check(argv[1], argv[2])
    print(why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
