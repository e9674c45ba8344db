"""Starting and supervising the processes: one Celery worker per GPU (or one CPU worker), web, Flower, Redis."""
