"""Who is asking, and what they may touch: the one statement of the ownership rules.

Every record that belongs to someone (a job, a book, a saved voice) names its owner by API key id; "" is no key
(made through the Celery API or the command line). The lookups that find such records take a Caller and apply these
rules themselves, so that no route has to remember them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    id: str  # the API key's id; "" for the system itself
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """Jobs and books: an admin's, or the caller's own (Celery's belong to no key: admins only)."""
        return self.admin or (owner or "") == self.id != ""

    def may_use(self, owner: str | None) -> bool:
        """Saved voices: the caller's own, and the shared ones (no owner: made through Celery)."""
        return self.admin or not owner or owner == self.id

    def may_change(self, owner: str | None) -> bool:
        """Renaming or deleting a saved voice: its owner's; a shared voice, or anyone's, an admin's only."""
        return self.admin or (bool(owner) and owner == self.id)


# The Celery API, the command line and the workers: they reach Redis and the data directory directly, so nothing
# they could be refused here would be out of their reach anyway.
SYSTEM = Caller("", admin=True)
# Whoever reads what is open to anyone (the API description): no key, so only what is shared.
ANYONE = Caller("")
