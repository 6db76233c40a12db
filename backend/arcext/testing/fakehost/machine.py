"""A Python model of a Windows machine as the VM-extension handler protocol sees it.

Files live under a real directory (``<root>/C/Packages/Plugins/...``, ``<root>/C/ProgramData/arcext/...``)
so the state survives the process; every agent script the backend sends has a Python implementation
here with the same contract as the .ps1 file (same parameters, same JSON answer, same side effects on
disk). Handler commands do not run programs: their behaviour (exit code, a hang, the status file and
heartbeat they leave) comes from ``fakehost-behaviour.json`` inside the package the backend pushed.

Where PowerShell's behaviour is known and matters, the model is as strict as Windows: every path an
agent script builds is confined to its root (a name that would leave it fails as the script's
``Resolve-ConfinedPath`` does); handler commands run in a "scheduled task" (a thread that outlives
the remoting session, as LocalSystem), whose runner is Windows PowerShell 5.1 whatever the endpoint's
edition, so a ``Kill(bool)`` in it throws on the timeout path as it would on .NET Framework; a
handler on a 5.1 host writes its status file with a UTF-8 BOM; a status file may be empty for a
while; folders the scripts create are recorded with the ACL the scripts give them.
"""

from __future__ import annotations

from .disk import PLUGINS, PROTECTED_ACL, SCRIPT_NAME, STATE, ScriptFailure
from .handler_commands import HandlerCommands
from .package_scripts import PackageScripts

__all__ = ["PLUGINS", "PROTECTED_ACL", "SCRIPT_NAME", "STATE", "ScriptFailure", "WindowsMachine"]


class WindowsMachine(PackageScripts, HandlerCommands):
    """One fake Windows machine: its state (:mod:`.state`) and the agent scripts it runs, the
    staging ones (:mod:`.package_scripts`) and the handler command (:mod:`.handler_commands`)."""
