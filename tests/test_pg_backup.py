"""Backup and restore of the PostgreSQL store as docs/deploy.md says: ``pg_dump -Fc`` while a node runs, then
``pg_restore`` into an empty database as the nodes' role; a node started on it with the same ``secret.key`` has
everything back (machines, extensions with their sealed protectedSettings, tokens, packages, the activity log's
day partitions), and a node with another key cannot open what was sealed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql

from arcext.ids import MachineKey
from arcext.store.postgres import provision
from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, put_extension, put_machine, wait_operation
from pgdb import skip_reason
from sshd import make_package

SECRET = {"commandToExecute": "echo s3cr3t-b4ckup"}
PACKAGE = "/arcext/v1/catalog/Contoso/Agent/versions/1.0.0/package"


@pytest.fixture
def databases() -> tuple[str, str]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"backup tests need PostgreSQL: {reason}")
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump and pg_restore are not installed (Debian: postgresql-client)")
    source = provision.create("arcext_bk")
    empty = provision.url_for(source, f"{psycopg.conninfo.conninfo_to_dict(source)['dbname']}_restored")
    with psycopg.connect(provision.admin_url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(conninfo(empty)["dbname"]))))
    yield source, empty
    provision.drop(empty)
    provision.drop(source)


def conninfo(url: str) -> dict[str, object]:
    return dict(psycopg.conninfo.conninfo_to_dict(url))


def events(s: requests.Session, arc: ArcextServer) -> list[str]:
    """Every event id of the subscription's activity log, in the API's order (all pages)."""
    found: list[str] = []
    url: str | None = f"{arc.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values"
    params: dict[str, str] | None = {"api-version": "2015-04-01", "$filter": "eventTimestamp ge '2000-01-01T00:00:00Z'"}
    while url:
        r = s.get(url, params=params)
        assert r.status_code == 200, r.text
        found += [e["eventDataId"] for e in r.json()["value"]]
        url, params = r.json().get("nextLink"), None
    return found


def session(arc: ArcextServer) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.headers["Authorization"] = f"Bearer {arc.token}"
    return s


def test_pg_dump_while_serving_and_pg_restore_into_an_empty_database_bring_everything_back(
    tmp_path: Path, databases: tuple[str, str]
) -> None:
    source, empty = databases
    data_dir = tmp_path / "node"
    with ArcextServer(data_dir, database_url=source) as arc:
        s = session(arc)
        put_machine(s, arc)
        props = {
            "publisher": "Microsoft.Compute",
            "type": "CustomScriptExtension",
            "typeHandlerVersion": "1.10.3",
            "protectedSettings": SECRET,
        }
        put_extension(s, arc, properties=props)
        reader = arc.create_token("Reader", f"/subscriptions/{SUB}", name="kept")
        zipped = make_package("Contoso.Agent", "1.0.0")
        r = s.put(f"{arc.url}{PACKAGE}", data=zipped, headers={"Content-Type": "application/zip"})
        assert r.status_code == 201, r.text
        # an upgrade, for the activity log's events (one day's partition)
        r = s.put(f"{arc.url}/arcext/v1/catalog/Microsoft.Compute/CustomScriptExtension/versions/1.10.4", json={})
        assert r.status_code in (200, 201), r.text
        r = s.post(
            f"{machine_url(arc)}/upgradeExtensions",
            params={"api-version": API},
            json={"extensionTargets": {"Microsoft.Compute.CustomScriptExtension": {"targetVersion": "1.10.4"}}},
        )
        assert wait_operation(s, r)["status"] == "Succeeded"
        events_before = events(s, arc)
        assert len(events_before) >= 2
        dump = tmp_path / "arcext.dump"  # while the node serves
        subprocess.run(["pg_dump", "-Fc", f"--dbname={source}", f"--file={dump}"], check=True, timeout=120)
    subprocess.run(["pg_restore", "--no-owner", f"--dbname={empty}", str(dump)], check=True, timeout=120)

    with ArcextServer(data_dir, database_url=empty) as restored:  # the same secret.key
        s = session(restored)
        assert s.get(machine_url(restored), params={"api-version": API}).status_code == 200
        ext = s.get(ext_url(restored), params={"api-version": API}).json()
        assert ext["properties"]["provisioningState"] == "Succeeded"
        assert "protectedSettings" not in ext["properties"]
        sealed = restored.services.store.get_machine(MachineKey(SUB, "rg1", "m1"))
        assert sealed is not None
        record = sealed["extensions"]["cse"]
        assert restored.services.box.open(record["protected"]) == SECRET  # sealed, and opens with the key
        assert SECRET["commandToExecute"] not in str(record["protected"])
        assert (
            requests.get(
                machine_url(restored), params={"api-version": API}, headers={"Authorization": f"Bearer {reader}"}
            ).status_code
            == 200
        )  # a token made before the backup
        assert s.get(f"{restored.url}{PACKAGE}").status_code == 200
        ref = restored.services.hosts.packages.get("Contoso", "Agent", "1.0.0")
        assert ref is not None and ref.path.read_bytes() == zipped
        (restored.services.hosts.packages.blobs / f"{ref.sha256}.zip").unlink()  # this node's copy: from the db
        again = restored.services.hosts.packages.get("Contoso", "Agent", "1.0.0")
        assert again is not None and again.path.read_bytes() == zipped
        assert set(events_before) <= set(events(s, restored))

    other = tmp_path / "other-key"  # a node given another key: what was sealed stays sealed
    with ArcextServer(other, database_url=empty) as stranger:
        record = stranger.services.store.get_machine(MachineKey(SUB, "rg1", "m1"))
        assert record is not None
        with pytest.raises(RuntimeError, match="secret.key does not match"):
            stranger.services.box.open(record["extensions"]["cse"]["protected"])
