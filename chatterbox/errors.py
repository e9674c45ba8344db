"""The one error every layer raises for a request it refuses, and so the one shape every answer takes.

``RequestError(message, code, field=None, status=400)``: ``message`` is for people, ``code`` for programs (one code
per fault, the same in every route), ``field`` names the part of the request at fault, ``status`` is the HTTP answer.
The web app turns any of them into ``{"error": {"message", "type", "param", "code"}}`` in one handler; the CLI into
its message and exit code. Each module keeps a subclass of its own (``VoiceError``, ``BookError``...) so a caller can
catch one kind; all take their arguments in this order.
"""
from __future__ import annotations


class RequestError(ValueError):
    status = 400  # a subclass's usual answer (a book's state refusing an action: 409)

    def __init__(self, message: str, code: str, field: str | None = None, status: int | None = None):
        # every argument in args, so that Celery can rebuild the error from a JSON result
        super().__init__(message, code, field, status)
        self.message, self.code, self.field = message, code, field
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message
