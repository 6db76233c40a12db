"""The web portal at /portal: server-rendered pages for people, next to the ARM API for programs.

Pages: sign in with a token; machines (per subscription and resource group the token can see);
a machine's Overview and Extensions tabs (Automatic upgrade Enabled / Disabled / Not supported,
Update available, Enable / Disable automatic upgrade, Upgrade now); rollouts (phases, waves,
batches, frozen versions, pause / resume); the activity log (Operation, Event initiated by, time
span, resource group; one event's detail; Download as CSV).

Why the portal calls the domain services directly instead of the server's own HTTP API: the
portal deliberately forgets the bearer token once it is validated (the session holds only the
token's id and SHA-256 reference), so it has nothing to call the API with on the user's behalf.
It runs in the same process, so it uses the very objects the API handlers use
(``Services.resources``, ``Services.engine``, ``Services.activity``, ``upgrades.views.pending_view``)
and the same authorization rule (``Principal.require`` with the role and scope the API's hook
demands for the equivalent request). No business rule lives here: the portal only chooses which
domain call a button makes and renders the result.

Modules: ``blueprint`` (the Blueprint, app configuration at registration, CSRF, security
headers, error pages), ``security`` (signing key, sessions, role checks), ``sessions`` (what the
server keeps of signed-in sessions, one implementation per store: ``file_storage`` in the data
directory, ``pg_storage`` and ``pg_schema`` in the database every node shares; ``storage`` picks
one), and one module of views per page family (``auth_views``, ``machines``, ``rollouts``,
``activity_log``).
"""

from __future__ import annotations

from . import activity_log, auth_views, machines, rollouts  # noqa: F401  (they register their routes on bp)
from .blueprint import bp

__all__ = ["bp"]
