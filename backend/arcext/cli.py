"""The `arcext` command: serve, manage tokens, and the az-style client commands (arcext.client)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from .auth import Role, TokenService, normalise_scope
from .clock import SystemClock
from .store.factory import open_store

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from flask import Flask

    from .serving_gunicorn import WorkerApp, WorkerContext

OWNER_TOKEN_FILE = "owner-token"


#: ``--database``: the PostgreSQL store (several nodes may share it) instead of the embedded one in --data-dir
database_option = click.option(
    "--database",
    "database_url",
    default=None,
    envvar="ARCEXT_DATABASE_URL",
    metavar="URL",
    help="PostgreSQL URL (postgresql://user:password@host:port/db) to keep the data in, shared by every server "
    "given it; default: the embedded store in --data-dir. Env: ARCEXT_DATABASE_URL.",
)


#: ``--data-dir`` of every command: the same directory for the server and for the token commands
data_dir_option = click.option(
    "--data-dir",
    default="./.arcext",
    show_default=True,
    envvar="ARCEXT_DATA_DIR",
    type=click.Path(path_type=Path),
    help="Where the embedded store, secret.key and owner-token live. Env: ARCEXT_DATA_DIR.",
)


@click.group()
@click.version_option(package_name="arcext")
def main() -> None:
    """arcext: a self-hosted, Azure Arc-compatible control plane for VM extensions."""


def _write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


def ensure_owner_token(data_dir: Path, tokens: TokenService) -> Path | None:
    """At first start, issue an Owner token for every subscription and write it (mode 0600)."""
    path = data_dir / OWNER_TOKEN_FILE
    if tokens.list():
        return path if path.exists() else None
    token, _record = tokens.create(Role.OWNER, "/", "owner", SystemClock().now())
    _write_secret(path, token)
    return path


def default_public_url(host: str, port: int, tls: bool) -> str:
    """The base of absolute URLs when --public-url is not given: the listening address (a wildcard address
    is no place a client can reach, so the machine's own name stands in for it)."""
    import socket

    from .api.urls import host_for_url

    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.getfqdn() or "localhost"
    return f"{'https' if tls else 'http'}://{host_for_url(host)}:{port}"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port (0 picks a free one).")
@data_dir_option
@click.option(
    "--manual-clock",
    is_flag=True,
    envvar="ARCEXT_MANUAL_CLOCK",
    help="Time moves only through POST /arcext/v1/clock/advance. Env: ARCEXT_MANUAL_CLOCK=1.",
)
@click.option(
    "--simulate",
    is_flag=True,
    envvar="ARCEXT_SIMULATE",
    help="Machines without host-connection settings are simulated hosts. Env: ARCEXT_SIMULATE=1.",
)
@click.option("--tls-cert", type=click.Path(exists=True, path_type=Path), help="PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(exists=True, path_type=Path), help="PEM private key.")
@click.option("--tls-self-signed", is_flag=True, help="Serve https with a certificate made for localhost.")
@click.option(
    "--public-url",
    default=None,
    envvar="ARCEXT_PUBLIC_URL",
    help="Base URL clients reach this server at (behind a proxy or load balancer), used for every absolute URL "
    "in responses (Azure-AsyncOperation, Location, nextLink). Default: from --host, --port and TLS. The "
    "request's Host header is never used. Env: ARCEXT_PUBLIC_URL.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line (requests, upgrade steps, host operations) with request ids, rollout id, "
    "machine and extension.",
)
@database_option
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes. The embedded store lives in one process: more than 1 needs a shared database.",
)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(min=1), help="Threads per worker.")
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(min=2),
    help="Open client connections per worker (active and idle keep-alive); more wait in the backlog.",
)
@click.option("--backlog", default=2048, show_default=True, type=click.IntRange(min=1), help="Listen queue length.")
@click.option(
    "--keep-alive",
    "keepalive",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="Seconds an idle keep-alive connection stays open (0: close after each response).",
)
@click.option(
    "--timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds one read or write of a client connection may wait (a request sent or a response read too "
    "slowly); then the connection is closed.",
)
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(min=0),
    help="On SIGTERM/SIGINT: seconds to finish the requests in flight before the services close.",
)
@click.option(
    "--worker-timeout",
    default=120,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds a worker may go without its heartbeat to the master (a stopped or stuck process) before the "
    "master kills it and starts another.",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    manual_clock: bool,
    simulate: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_self_signed: bool,
    public_url: str | None,
    log_format: str,
    database_url: str | None,
    workers: int,
    threads: int,
    max_connections: int,
    backlog: int,
    keepalive: int,
    timeout: int,
    graceful_timeout: int,
    worker_timeout: int,
) -> None:
    """Run the server (embedded store in DATA_DIR; no other service needed)."""
    from .api.urls import validate_public_url
    from .logging_setup import configure
    from .serving_gunicorn import ServeError, ServeOptions
    from .serving_gunicorn import serve as serve_http
    from .tls import ensure_self_signed

    configure(log_format)  # the server's own messages too; the workers inherit it
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together.")
    if tls_self_signed and tls_cert:
        raise click.UsageError("Use either --tls-self-signed or --tls-cert/--tls-key.")
    if public_url is not None:
        try:
            public_url = validate_public_url(public_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--public-url") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    if tls_self_signed:
        tls_cert, tls_key = ensure_self_signed(data_dir / "tls")
        click.echo(f"Self-signed certificate: {tls_cert} (trust it, e.g. REQUESTS_CA_BUNDLE={tls_cert})")
    options = ServeOptions(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        max_connections=max_connections,
        backlog=backlog,
        keepalive=keepalive,
        timeout=timeout,
        graceful_timeout=graceful_timeout,
        worker_timeout=worker_timeout,
        tls_cert=tls_cert,
        tls_key=tls_key,
        shared_store=bool(database_url),  # several workers need a database they share
    )
    try:
        options.check()
    except ServeError as exc:
        raise click.UsageError(str(exc)) from None
    if workers > 1:
        from .metrics import share_across_processes

        share_across_processes()  # a scrape answered by any worker counts every worker's requests and jobs
    settings = ServedSettings(data_dir, manual_clock, simulate, public_url, tls_cert is not None, database_url)
    serve_http(settings.build, options)


#: the exit status of a replacement worker that cannot open the database: not gunicorn's boot error (3), which would
#: stop the master
EXIT_DATABASE_AWAY = 1
#: a file in the data directory (one per master: nodes may share the directory) where a worker that left so writes
#: when; the next one waits until ``REOPEN_SECONDS`` after it
LEFT_MARK = ".worker-left-database"
REOPEN_SECONDS = 5.0


class ServedSettings:
    """What every worker of `arcext serve` builds its app from (the factory runs after the fork)."""

    @staticmethod
    def _create_app_or_leave(config: dict[str, Any]) -> Flask:
        """``create_app`` for a worker that replaces another (one that left, was killed or died). A worker that fails
        to boot makes gunicorn's master stop the whole node: right for the node's first worker (a wrong URL or
        password says so at once), not for a replacement during a database outage, or the node would not come
        back with the database. Such a worker leaves at once with an ordinary failure instead (the process goes, and
        whatever it had started with it: a half-started node must not lead or run jobs meanwhile), and the master
        starts another. The next one starts no sooner than ``REOPEN_SECONDS`` after (``LEFT_MARK``), before it
        opens anything, so the tries do not come in a tight loop taking the database's connections."""
        import psycopg

        from .app import create_app

        mark = Path(str(config.get("ARCEXT_DATA_DIR") or ".")) / f"{LEFT_MARK}.{socket.gethostname()}.{os.getppid()}"
        try:
            since = time.time() - float(mark.read_text())  # (this host's clock wrote it, not a file server's)
        except (OSError, ValueError):
            since = None  # no worker left so
        if since is not None and 0 <= since < REOPEN_SECONDS:
            time.sleep(REOPEN_SECONDS - since)
        try:
            app = create_app(config)
        except psycopg.OperationalError as exc:
            log.warning(
                "This new worker cannot open the database (%s); it leaves and the master starts another",
                type(exc).__name__,
            )
            try:
                mark.write_text(repr(time.time()))
            except OSError as error:
                log.warning("Could not note when this worker left (%s): the next one starts at once", error)
            logging.shutdown()  # (os._exit flushes nothing)
            os._exit(EXIT_DATABASE_AWAY)
        try:
            mark.unlink(missing_ok=True)
        except OSError:  # (a directory this worker may not write: nothing to undo)
            pass
        return app

    def __init__(
        self,
        data_dir: Path,
        manual_clock: bool,
        simulate: bool,
        public_url: str | None,
        tls: bool,
        database_url: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.manual_clock = manual_clock
        self.simulate = simulate
        self.public_url = public_url
        self.tls = tls
        self.database_url = database_url

    def build(self, context: WorkerContext) -> WorkerApp:
        from .app import create_app
        from .serving import tune_gc_for_serving
        from .serving_gunicorn import WorkerApp

        tune_gc_for_serving()
        config = {
            "ARCEXT_DATA_DIR": str(self.data_dir),
            "ARCEXT_MANUAL_CLOCK": self.manual_clock,
            "ARCEXT_SIMULATE": self.simulate,
            "ARCEXT_DATABASE_URL": self.database_url or "",
        }
        app = create_app(config) if context.first or not self.database_url else self._create_app_or_leave(config)
        services = app.extensions["arcext"]
        if self.tls:
            app.config["SESSION_COOKIE_SECURE"] = True  # the portal's session cookie travels over https only
        app.config["ARCEXT_PUBLIC_URL"] = self.public_url or default_public_url(
            urlsplit(context.url).hostname or "", context.port, self.tls
        )
        if context.first:
            token_path = ensure_owner_token(self.data_dir, services.tokens)
            if token_path:
                click.echo(f"Owner token written to {token_path.resolve()}")
            else:
                click.echo("Tokens exist already; create another with 'arcext token create'.")
            click.echo(f"Portal: {context.url}/portal/ (sign in with a token)")
            where = f"PostgreSQL at {redacted(self.database_url)}" if self.database_url else self.data_dir.resolve()
            click.echo(f"arcext listening on {context.url} (data in {where})")
            click.echo(f"Public URL (for absolute URLs in responses): {app.config['ARCEXT_PUBLIC_URL']}")
            sys.stdout.flush()
        return WorkerApp(app, services.close, services.stalled_loops, services.resign)


@main.group()
def token() -> None:
    """Issue, list and revoke bearer tokens (stored hashed)."""


def redacted(database_url: str) -> str:
    """host:port/database of a database URL: never its password."""
    from .store.postgres.db import redacted as without_password

    return without_password(database_url)


@contextmanager
def _tokens(data_dir: Path, database_url: str | None) -> Iterator[TokenService]:
    store = open_store(data_dir, database_url, tokens_only=True)
    try:
        yield TokenService(store)
    finally:
        if database_url:  # its connections; the embedded store's files are left as they were, unflushed
            store.close()


@token.command("create")
@data_dir_option
@click.option(
    "--role", required=True, type=click.Choice(["Owner", "Contributor", "Reader", "Metrics"], case_sensitive=False)
)
@click.option("--scope", required=True, help="/subscriptions/<id>[/resourceGroups/<rg>], or / for every subscription.")
@click.option("--name", default=None, help="A name for the caller (shown as createdBy and in the activity log).")
@database_option
def token_create(data_dir: Path, role: str, scope: str, name: str | None, database_url: str | None) -> None:
    """Create a token; the token itself is printed on the last line, once."""
    try:
        normalise_scope(scope)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    with _tokens(data_dir, database_url) as tokens:
        value, record = tokens.create(Role.parse(role), scope, name, SystemClock().now())
    click.echo(f"Created token {record['id']} for '{record['name']}': {record['role']} on {record['scope']}", err=True)
    click.echo(value)


@token.command("list")
@data_dir_option
@database_option
def token_list(data_dir: Path, database_url: str | None) -> None:
    """List tokens (id, name, role, scope; never the token)."""
    with _tokens(data_dir, database_url) as tokens:
        records = tokens.list()
    for record in records:
        click.echo(f"{record['id']}\t{record['name']}\t{record['role']}\t{record['scope']}\t{record['createdAt']}")


@token.command("revoke")
@data_dir_option
@click.argument("token_id")
@database_option
def token_revoke(data_dir: Path, token_id: str, database_url: str | None) -> None:
    """Revoke a token by its id (from 'arcext token list')."""
    with _tokens(data_dir, database_url) as tokens:
        revoked = tokens.revoke(token_id)
    if not revoked:
        raise click.ClickException(f"No token with id '{token_id}'.")
    click.echo(f"Revoked {token_id}")


def _register_client_commands() -> None:
    from .client.commands import GROUPS
    from .testing.fakehost.__main__ import fakehost

    for command in GROUPS:
        main.add_command(command)
    main.add_command(fakehost)


_register_client_commands()


if __name__ == "__main__":
    main()
