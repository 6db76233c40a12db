"""``python -m arcext.testing.fakehost --hosts N``: a fleet of fake Windows hosts in its own process.

State lives under ``--state-dir`` (one directory per host) and survives restarts; ports are stable
(``--base-port`` + i) so arcext's stored hostConnection settings keep working. Prints one JSON line
per host with the hostConnection body to PUT. Register as a CLI command with::

    from arcext.testing.fakehost.__main__ import fakehost
    main.add_command(fakehost)        # -> `arcext fakehost --hosts N`
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import click
from click.decorators import FC


def _choice(flag: str, choices: list[str], help_text: str) -> Callable[[FC], FC]:
    """An option with a fixed set of values, the first being the default."""
    return click.option(flag, type=click.Choice(choices), default=choices[0], show_default=True, help=help_text)


@click.command("fakehost")
@click.option("--hosts", "count", default=1, show_default=True, help="How many fake Windows hosts to run.")
@click.option("--state-dir", default="./.arcext-fakehosts", show_default=True, type=click.Path(path_type=Path))
@click.option("--base-port", default=55986, show_default=True, help="Host i listens on base-port + i (127.0.0.1).")
@_choice(
    "--auth", ["basic", "ntlm"], "basic = Basic over TLS (self-signed); ntlm = NTLM with message encryption over http."
)
@_choice(
    "--driver", ["psrp", "winrm"], "The driver the printed hostConnection asks for (every host speaks PSRP and WinRS)."
)
@_choice(
    "--edition",
    ["Desktop", "Core"],
    "The endpoint's PowerShell: Desktop = Windows PowerShell 5.1, Core = PowerShell 7.",
)
@click.option("--username", default="arcext", show_default=True)
@click.option("--password", default="Secret-Passw0rd!", show_default=True)
def fakehost(
    count: int, state_dir: Path, base_port: int, auth: str, driver: str, edition: str, username: str, password: str
) -> None:
    """Run fake Windows hosts (WS-Management: PSRP and WinRS) for arcext's psrp and winrm drivers."""
    from . import FakeHost

    hosts = [
        FakeHost(
            state_dir / f"host{i}",
            name=f"FAKEHOST{i}",
            username=username,
            password=password,
            auth=auth,
            tls=auth == "basic",
            port=base_port + i,
            driver=driver,
            edition=edition,
        )
        for i in range(count)
    ]
    for host in hosts:
        host.start()
        click.echo(json.dumps({"name": host.name, "hostConnection": host.connection()}))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for host in hosts:
            host.stop()


if __name__ == "__main__":
    fakehost()
