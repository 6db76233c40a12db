"""The `arcext` client commands: an az-style CLI that talks to an arcext server over HTTP only.

Layout: ``config`` (login file and environment), ``http`` (one session helper: auth, api-version,
long-running operations, ARM errors), ``output`` (``--output`` formats and ``--query``),
``progress`` (rich progress on stderr), ``commands/`` (the click groups registered by ``arcext.cli``).
Nothing here imports the server's modules.
"""
