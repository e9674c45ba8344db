"""Every Celery setting, read from chatterbox.settings so that web, workers and Flower agree."""
from kombu import Exchange, Queue

from chatterbox import redis_client as _redis_client, settings as _settings

_s = _settings.load()

# A sentinel:// REDIS_URL becomes the form Celery reads (one sentinel:// URL per Sentinel) and the master's name
# and the Sentinels' options in the transport options below; a redis:// one is used as it is.
broker_url, _sentinel_options = _redis_client.celery_broker(_s.broker_url, socket_timeout_s=3)
result_backend = broker_url
broker_connection_retry_on_startup = True
broker_connection_timeout = 3
# One visibility timeout for every process: a worker re-delivers an unacknowledged message only after this,
# so no task may run longer (long work is split into short tasks; dead workers are caught by heartbeats).
# "priority": a worker always takes from the first non-empty queue in its list (interactive, bulk, its own), so a
# short request waits at most for the chunk a worker is on, never behind a book (the default is round robin).
broker_transport_options = {"visibility_timeout": _s.visibility_timeout_s, "socket_connect_timeout": 3,
                            "queue_order_strategy": "priority", **_sentinel_options}
result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout_s, **_sentinel_options}
result_expires = _s.retention_s or None  # results, like job records, are kept for the retention period
redis_socket_connect_timeout = 3
# Fail fast when Redis is down instead of blocking a web request for long.
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A message is acknowledged only when its task is done, and a worker takes one message at a time.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True

# Interactive synthesis and bulk work (audiobook chunks) have their own queues, so that a short job is never
# stuck behind a book; each device also has a queue of its own (gpu0, gpu1, ... or cpu) for pinned work.
INTERACTIVE_QUEUE = "interactive"
BULK_QUEUE = "bulk"
task_default_queue = INTERACTIVE_QUEUE
# Each queue has its own exchange and key: with Celery's defaults both would be bound to the default queue's
# routing key, and every interactive message would be delivered to the bulk queue as well.
task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)
                    for name in (INTERACTIVE_QUEUE, BULK_QUEUE))
task_create_missing_queues = True  # the per-device queues are declared by the workers that consume them
task_routes = {"tasks.synthesize": {"queue": INTERACTIVE_QUEUE}, "tasks.clone_voice": {"queue": INTERACTIVE_QUEUE},
               "tasks.audiobook": {"queue": INTERACTIVE_QUEUE},  # planning only: quick
               "tasks.audiobook_work": {"queue": BULK_QUEUE}}

# Events for Flower.
worker_send_task_events = True
task_send_sent_event = True
task_track_started = False  # jobs record their own status; this would cost a result-backend write per task
worker_hijack_root_logger = False

