"""Click groups of the client commands, registered on ``arcext.cli.main``."""

from __future__ import annotations

import click

from .activity import activity_log
from .connectedmachine import connectedmachine
from .hostconnection import host_connection
from .login import account, login, logout
from .rollout import rollout

GROUPS: list[click.Command] = [connectedmachine, host_connection, rollout, activity_log, login, logout, account]

__all__ = ["GROUPS"]
