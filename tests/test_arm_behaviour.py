"""ARM behaviour beyond single calls: case, headers, LRO shapes, PATCH merge, cascade, paging, OpenAPI."""

from __future__ import annotations

import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, put_extension, put_machine, rg_url, wait_operation


def test_paths_match_case_insensitively(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    url = (
        f"{seeded.url}/SUBSCRIPTIONS/{SUB}/resourcegroups/RG1/providers/microsoft.hybridcompute"
        "/Machines/M1/Extensions/CSE"
    )
    r = arcext_session.get(url, params={"api-version": API})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "cse"  # the stored name keeps the case it was created with
    assert body["id"].endswith("/providers/Microsoft.HybridCompute/machines/m1/extensions/cse")


def test_every_response_carries_request_ids(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    for r in (
        arcext_session.get(ext_url(seeded), params={"api-version": API}),
        arcext_session.get(ext_url(seeded)),  # 400
        arcext_session.get(ext_url(seeded, "nope"), params={"api-version": API}),  # 404
        requests.get(ext_url(seeded), params={"api-version": API}),  # 401
        arcext_session.patch(ext_url(seeded), params={"api-version": API}, json={"properties": {}}),  # 202
    ):
        assert r.headers["x-ms-request-id"]
        assert r.headers["x-ms-correlation-request-id"]
    echoed = arcext_session.get(
        ext_url(seeded),
        params={"api-version": API},
        headers={"x-ms-correlation-request-id": "abc-123", "x-ms-client-request-id": "c-1"},
    )
    assert echoed.headers["x-ms-correlation-request-id"] == "abc-123"
    assert echoed.headers["x-ms-client-request-id"] == "c-1"


def test_long_running_operation_protocol(arcext_server: ArcextServer, arcext_session: requests.Session) -> None:
    put_machine(arcext_session, arcext_server)
    runner = arcext_server.services.resources.runner
    runner.pause()
    try:
        r = put_extension(arcext_session, arcext_server, wait=False)
        assert r.status_code == 202 and r.content == b""
        assert r.headers["Retry-After"] == "0"  # the harness's ARCEXT_RETRY_AFTER; `arcext serve` sends 1
        status_url, result_url = r.headers["Azure-AsyncOperation"], r.headers["Location"]
        prefix = f"{arcext_server.url}/subscriptions/{SUB}/providers/Microsoft.HybridCompute/locations/eastus/"
        assert status_url.startswith(prefix + "operationstatus/") and "api-version=2026-07-15" in status_url
        assert result_url.startswith(prefix + "operationresults/")
        pending = arcext_session.get(status_url).json()
        assert pending["status"] == "InProgress" and "properties" not in pending
        assert pending["name"] == status_url.split("/")[-1].split("?")[0]
        still = arcext_session.get(result_url)
        assert still.status_code == 202 and still.headers["Retry-After"] == "0"
        creating = arcext_session.get(ext_url(arcext_server), params={"api-version": API}).json()
        assert creating["properties"]["provisioningState"] == "Creating"
    finally:
        runner.resume()
    done = wait_operation(arcext_session, r)
    assert done["status"] == "Succeeded" and done["endTime"] >= done["startTime"]
    assert done["properties"]["id"].endswith("/extensions/cse")  # the resource embedded under properties
    assert done["properties"]["properties"]["provisioningState"] == "Succeeded"
    result = arcext_session.get(result_url)
    assert result.status_code == 200 and result.json()["name"] == "cse"


def test_patch_merges_properties_and_tags(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    r = arcext_session.patch(
        ext_url(seeded),
        params={"api-version": API},
        json={"tags": {"team": "ops"}, "properties": {"autoUpgradeMinorVersion": True}},
    )
    wait_operation(arcext_session, r)
    body = arcext_session.get(ext_url(seeded), params={"api-version": API}).json()
    assert body["tags"] == {"team": "ops"}
    props = body["properties"]
    assert props["autoUpgradeMinorVersion"] is True
    assert props["settings"] == {"commandToExecute": "hostname"}
    assert props["typeHandlerVersion"] == "1.10.3"
    assert props["enableAutomaticUpgrade"] is True
    assert body["systemData"]["createdAt"] <= body["systemData"]["lastModifiedAt"]


def test_put_machine_twice_is_200_and_keeps_extensions(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    first = arcext_session.get(machine_url(seeded), params={"api-version": API}).json()
    body = put_machine(arcext_session, seeded, tags={"env": "prod"})
    assert body["tags"] == {"env": "prod"}
    assert [e["name"] for e in body["resources"]] == ["cse"]
    assert body["systemData"]["createdAt"] == first["systemData"]["createdAt"]
    patched = arcext_session.patch(
        machine_url(seeded), params={"api-version": API}, json={"properties": {"osName": "Windows Server 2022"}}
    )
    assert patched.status_code == 200
    assert patched.json()["properties"]["osName"] == "Windows Server 2022"
    assert patched.json()["properties"]["osType"] == "windows"


def test_deleting_a_machine_deletes_its_extensions(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    put_extension(arcext_session, seeded, "second")
    r = arcext_session.delete(machine_url(seeded), params={"api-version": API})
    assert wait_operation(arcext_session, r)["status"] == "Succeeded"
    assert arcext_session.get(machine_url(seeded), params={"api-version": API}).status_code == 404
    assert arcext_session.get(f"{machine_url(seeded)}/extensions", params={"api-version": API}).status_code == 404
    # re-creating the machine does not resurrect its extensions
    put_machine(arcext_session, seeded)
    listed = arcext_session.get(f"{machine_url(seeded)}/extensions", params={"api-version": API}).json()
    assert listed == {"value": []}
    assert arcext_session.delete(machine_url(seeded, "never"), params={"api-version": API}).status_code == 204


def test_machine_delete_follows_the_api_version(seeded: ArcextServer, arcext_session: requests.Session) -> None:
    """2024-07-10 declares Machines_Delete 200/204 (not long-running); 2026-07-15 answers 202."""
    put_machine(arcext_session, seeded, "old")
    r = arcext_session.delete(machine_url(seeded, "old"), params={"api-version": "2024-07-10"})
    assert r.status_code == 200 and "Azure-AsyncOperation" not in r.headers
    assert arcext_session.get(machine_url(seeded, "old"), params={"api-version": API}).status_code == 404


def test_lists_page_with_an_absolute_next_link(arcext_server: ArcextServer, arcext_session: requests.Session) -> None:
    app = arcext_server.app
    assert app is not None
    app.config["ARCEXT_PAGE_SIZE"] = 2
    try:
        for i in range(5):
            put_machine(arcext_session, arcext_server, f"m{i}")
        put_machine(arcext_session, arcext_server, "x1", rg="rg2")
        names: list[str] = []
        url: str | None = f"{rg_url(arcext_server)}/machines?api-version={API}"
        pages = 0
        while url:
            assert url.startswith(arcext_server.url)
            body = arcext_session.get(url).json()
            names += [m["name"] for m in body["value"]]
            url = body.get("nextLink")
            pages += 1
        assert names == ["m0", "m1", "m2", "m3", "m4"] and pages == 3
        bad = arcext_session.get(f"{rg_url(arcext_server)}/machines", params={"api-version": API, "$skiptoken": "!!"})
        assert bad.status_code == 400
    finally:
        app.config["ARCEXT_PAGE_SIZE"] = 100


def test_operations_list_and_openapi(arcext_server: ArcextServer, arcext_session: requests.Session) -> None:
    ops = arcext_session.get(
        f"{arcext_server.url}/providers/Microsoft.HybridCompute/operations", params={"api-version": API}
    )
    assert ops.status_code == 200
    names = {o["name"] for o in ops.json()["value"]}
    assert "Microsoft.HybridCompute/machines/extensions/write" in names
    spec = requests.get(f"{arcext_server.url}/arcext/v1/openapi.json").json()  # no token needed
    paths = spec["paths"]
    ext_path = (
        "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/Microsoft.HybridCompute"
        "/machines/{machine_name}/extensions/{extension_name}"
    )
    assert set(paths[ext_path]) >= {"get", "put", "patch", "delete"}
    assert "202" in paths[ext_path]["put"]["responses"] and "201" not in paths[ext_path]["put"]["responses"]
    assert "/arcext/v1/catalog/{publisher}/{extension_type}/versions/{version}" in paths


def test_catalog_is_seeded_with_the_documented_types(
    arcext_server: ArcextServer, arcext_session: requests.Session
) -> None:
    types = arcext_session.get(f"{arcext_server.url}/arcext/v1/catalog").json()
    supported = {(t["publisher"], t["type"]) for t in types if t["autoUpgradeSupported"]}
    assert ("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent") in supported
    assert ("Microsoft.AzureData", "WindowsAgent.SqlServer") in supported
    products = {t["product"] for t in types if t.get("product")}
    assert len(products) == 8  # the eight extensions the Arc documentation lists
    r = arcext_session.put(
        f"{arcext_server.url}/arcext/v1/catalog/Microsoft.Compute/CustomScriptExtension",
        json={"autoUpgradeSupported": False},
    )
    assert r.status_code == 200 and r.json()["autoUpgradeSupported"] is False
    r = arcext_session.put(
        f"{arcext_server.url}/arcext/v1/catalog/Microsoft.Compute/CustomScriptExtension/versions/1.10.12",
        json={"critical": True},
    )
    assert r.status_code == 201 and r.json()["critical"] is True
    again = arcext_session.put(
        f"{arcext_server.url}/arcext/v1/catalog/Microsoft.Compute/CustomScriptExtension/versions/1.10.12", json={}
    )
    assert again.status_code == 200 and again.json()["publishedAt"] == r.json()["publishedAt"]
