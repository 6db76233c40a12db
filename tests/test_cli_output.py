"""`--output` formats and `--query` as az renders them, and the warning for names no item has.

Unit tests of arcext.client.output, then every format through a live server with CliRunner.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from arcext.cli import main
from arcext.client.output import (
    FORMATS,
    QueryError,
    apply_query,
    compile_query,
    format_table,
    format_tsv,
    query_warnings,
    render,
)
from arcext.testing import ArcextServer
from conftest import SUB, put_extension, put_machine

EXTENSIONS: list[dict[str, Any]] = [
    {
        "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1/extensions/ama",
        "name": "ama",
        "type": "Microsoft.HybridCompute/machines/extensions",
        "location": "eastus",
        "properties": {"enableAutomaticUpgrade": True, "typeHandlerVersion": "1.0.0", "settings": {"a": 1}},
    },
    {
        "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1/extensions/cse",
        "name": "cse",
        "type": "Microsoft.HybridCompute/machines/extensions",
        "location": "eastus",
        "properties": {"enableAutomaticUpgrade": False, "typeHandlerVersion": "1.10.3"},
    },
]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def query(data: Any, expression: str) -> Any:
    return apply_query(data, compile_query(expression))


# --- query -----------------------------------------------------------------------------------------
def test_query_keeps_the_order_the_query_wrote() -> None:
    rows = query(EXTENSIONS, "[].{Name:name, AutoUpgrade:properties.enableAutomaticUpgrade}")
    assert rows == [{"Name": "ama", "AutoUpgrade": True}, {"Name": "cse", "AutoUpgrade": False}]
    assert all(isinstance(r, OrderedDict) and list(r) == ["Name", "AutoUpgrade"] for r in rows)
    assert query(EXTENSIONS, "[?properties.enableAutomaticUpgrade].name") == ["ama"]
    assert query(EXTENSIONS, "length(@)") == 2
    with pytest.raises(QueryError, match="invalid JMESPath"):
        compile_query("[?")


def test_the_misspelt_property_gets_a_warning_with_the_real_name() -> None:
    compiled = compile_query("[].{Name:name, AutoUpgrade:properties.enableAutoUpgrade}")
    assert apply_query(EXTENSIONS, compiled) == [
        {"Name": "ama", "AutoUpgrade": None},
        {"Name": "cse", "AutoUpgrade": None},
    ]
    (warning,) = query_warnings(compiled, EXTENSIONS)
    assert "'properties.enableAutoUpgrade'" in warning
    assert warning.endswith("did you mean 'properties.enableAutomaticUpgrade'?")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("[].{Name:name, AutoUpgrade:properties.enableAutomaticUpgrade}", []),
        ("[].properties.{v: typeHandlerVersion}", []),  # relative to a nested object
        ("[].properties.settings.a", []),  # one item has it: no warning
        ("[?properties.enableAutomaticUpgrade == `true`].name", []),
        ("sort_by(@, &name)[].nam", ["'nam'", "did you mean 'name'?"]),
        ("[].enableAutoUpgrade", ["'enableAutoUpgrade'", "did you mean 'properties.enableAutomaticUpgrade'?"]),
        ("[].{v: typeHandlerVersion}", []),  # a name some nested object has is not flagged (a known limit)
        ("[].propertys.typeHandlerVersion", ["'propertys'", "did you mean 'properties'?"]),
        ("[].properties.forceUpdateTag", ["'properties.forceUpdateTag'", "null."]),  # no close name: no guess
        (
            "[].{a: properties.typeHandlerVerison, b: properties.typeHandlerVerison}",
            ["did you mean 'properties.typeHandlerVersion'?"],
        ),
    ],
)
def test_query_warnings(expression: str, expected: list[str]) -> None:
    warnings = query_warnings(compile_query(expression), EXTENSIONS)
    if not expected:
        assert warnings == []
    else:
        assert len(warnings) == 1, warnings
        for part in expected:
            assert part in warnings[0]


def test_no_warning_when_there_is_nothing_to_compare_with() -> None:
    assert query_warnings(compile_query("[].properties.enableAutoUpgrade"), []) == []
    assert query_warnings(compile_query("foo"), None) == []


# --- formats -------------------------------------------------------------------------------------------
def test_json_and_jsonc() -> None:
    assert render(EXTENSIONS, "json") == json.dumps(EXTENSIONS, indent=2) + "\n"
    assert render(EXTENSIONS, "jsonc", color=False) == render(EXTENSIONS, "json")  # not a terminal: plain
    colored = render(EXTENSIONS, "jsonc", color=True)
    assert "\x1b[" in colored
    assert json.loads(ANSI.sub("", colored)) == EXTENSIONS
    assert render({"name": "é"}, "json") == '{\n  "name": "é"\n}\n'


def test_yaml_and_none() -> None:
    assert yaml.safe_load(render(EXTENSIONS, "yaml")) == EXTENSIONS
    rows = query(EXTENSIONS, "[].{Name:name, AutoUpgrade:properties.enableAutoUpgrade}")
    assert render(rows, "yaml") == "- Name: ama\n  AutoUpgrade: null\n- Name: cse\n  AutoUpgrade: null\n"
    for fmt in FORMATS:
        assert render(None, fmt) == ""  # a null result prints nothing, as in az
    assert render(EXTENSIONS, "none") == ""


def test_tsv_rules() -> None:
    # without a query a dict's values come in key order; nested dicts print nothing, lists their length
    assert (
        format_tsv({"b": 2, "a": "x", "c": {"d": 1}, "e": [1, 2, 3], "f": None, "g": True}) == "x\t2\t\t3\tNone\tTrue\n"
    )
    rows = query(EXTENSIONS, "[].{Name:name, AutoUpgrade:properties.enableAutomaticUpgrade}")
    assert format_tsv(rows) == "ama\tTrue\ncse\tFalse\n"
    assert format_tsv(query(EXTENSIONS, "[].name")) == "ama\ncse\n"
    assert format_tsv([["a", 1], ["b", 2]]) == "a\t1\nb\t2\n"
    assert format_tsv("plain") == "plain\n"


def test_table_rules_of_az() -> None:
    # no query: keys sorted; id, type and etag skipped; nested and null values dropped; headers capitalised
    # (tabulate pads every cell to its column's width, the last one too)
    assert [line.rstrip() for line in format_table(EXTENSIONS).splitlines()] == [
        "Location    Name",
        "----------  ------",
        "eastus      ama",
        "eastus      cse",
    ]
    rows = query(EXTENSIONS, "[].{Name:name, AutoUpgrade:properties.enableAutomaticUpgrade}")
    text = render(rows, "table", query_active=True)
    assert text == "Name    AutoUpgrade  \n------  -------------\nama     True         \ncse     False        \n"
    # columns are two wider than their header at least, two spaces apart, numbers right-aligned
    numbers = format_table(
        [OrderedDict([("Name", "a"), ("Count", 5)]), OrderedDict([("Name", "bbbbbbbbb"), ("Count", 12345)])],
        sort_keys=False,
    )
    assert numbers == "Name         Count\n---------  -------\na                5\nbbbbbbbbb    12345\n"
    # a row without the key leaves its cell empty; a null cell drops the key from that row
    sparse = format_table([{"a": "x", "b": None}, {"a": "y", "b": "z"}])
    assert [line.rstrip() for line in sparse.splitlines()] == ["A    B", "---  ---", "x", "y    z"]
    # scalars → Result; lists → Column1..n; a single object → one row
    assert format_table(["ama", "cse"]) == "Result  \n--------\nama     \ncse     \n"
    assert format_table([["a", "b"]]).splitlines()[0].split() == ["Column1", "Column2"]
    assert format_table({"name": "ama", "id": "x"}) == "Name  \n------\nama   \n"
    assert format_table([]) == "\n"


def test_a_table_transformer_applies_only_without_a_query() -> None:
    def transformer(result: Any) -> Any:
        return [OrderedDict([("Id", r["id"][-3:]), ("Name", r["name"])]) for r in result]

    assert render(EXTENSIONS, "table", transformer=transformer).splitlines()[0].split() == ["Id", "Name"]
    with_query = render(query(EXTENSIONS, "[].{N:name}"), "table", query_active=True, transformer=transformer)
    assert with_query.splitlines()[0].split() == ["N"]


# --- every format through a live server --------------------------------------------------------------------
@pytest.fixture
def cli_env(arcext_server: ArcextServer, arcext_session: requests.Session, tmp_path: Path) -> dict[str, str | None]:
    put_machine(arcext_session, arcext_server)
    put_extension(arcext_session, arcext_server, ext="cse")
    return {
        "ARCEXT_ENDPOINT": arcext_server.url,
        "ARCEXT_TOKEN": arcext_server.token,
        "ARCEXT_SUBSCRIPTION_ID": SUB,
        "ARCEXT_CONFIG_DIR": str(tmp_path / "config"),
        "ARCEXT_OUTPUT": None,
        "ARCEXT_PROGRESS": None,
    }


LIST = ["connectedmachine", "extension", "list", "--machine-name", "m1", "-g", "rg1"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_through_the_server(cli_env: dict[str, str | None], fmt: str) -> None:
    runner = CliRunner()
    result = runner.invoke(main, [*LIST, "--output", fmt], env=cli_env)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    if fmt in ("json", "jsonc"):  # jsonc is plain json when stdout is not a terminal
        (item,) = json.loads(out)
        assert item["name"] == "cse" and item["properties"]["enableAutomaticUpgrade"] is True
        assert "\x1b[" not in out
    elif fmt in ("yaml", "yamlc"):  # yamlc is plain yaml when stdout is not a terminal
        assert "\x1b[" not in out
        (item,) = yaml.safe_load(out)
        assert item["properties"]["typeHandlerVersion"] == "1.10.3"
    elif fmt == "table":
        assert [line.rstrip() for line in out.splitlines()] == [
            "Location    Name",
            "----------  ------",
            "eastus      cse",
        ]
    elif fmt == "tsv":
        (line,) = out.splitlines()
        fields = line.split("\t")
        assert fields[0].endswith("/extensions/cse") and fields[1:3] == ["eastus", "cse"]
    else:
        assert out == ""


def test_query_and_output_env_default(cli_env: dict[str, str | None]) -> None:
    runner = CliRunner()
    tsv = runner.invoke(
        main, [*LIST, "--query", "[].[name, properties.typeHandlerVersion]"], env={**cli_env, "ARCEXT_OUTPUT": "tsv"}
    )
    assert tsv.stdout == "cse\t1.10.3\n"
    yaml_out = runner.invoke(main, [*LIST, "-o", "yaml", "--query", "[0].properties.settings"], env=cli_env)
    assert yaml_out.stdout == "commandToExecute: hostname\n"
    nothing = runner.invoke(main, [*LIST, "--query", "[0].properties.forceUpdateTag"], env=cli_env)
    assert nothing.exit_code == 0 and nothing.stdout == ""  # null prints nothing, as in az
    assert "forceUpdateTag" in nothing.stderr  # ... and says why
    bad = runner.invoke(main, [*LIST, "-o", "xml"], env=cli_env)
    assert bad.exit_code == 2 and "xml" in bad.stderr
