"""Static checks of the AzConnectedMachineShim PowerShell module (no pwsh needed).

The module is parsed with tree-sitter-powershell and checked against issue #5: every file parses without
ERROR/MISSING nodes; the manifest's exports are exactly the Public/ file names; every public cmdlet has
[CmdletBinding()], comment-based help with a synopsis and examples, and the parameter names, types, aliases,
Mandatory flags and parameter sets of Az.ConnectedMachine; state-changing cmdlets support ShouldProcess; the
format file names every PSTypeName the code emits; only the private HTTP helper does HTTP; protected
settings never reach an output object; and every URL template the module builds is a route of the running
server's OpenAPI document. The Pester layer (tests/powershell, scripts/test-powershell) runs where pwsh exists.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "AzConnectedMachineShim"
MANIFEST = MODULE / "AzConnectedMachineShim.psd1"
FORMAT_FILE = MODULE / "AzConnectedMachineShim.format.ps1xml"
PUBLIC = MODULE / "Public"
PRIVATE = MODULE / "Private"
PESTER = ROOT / "tests" / "powershell"
SCRIPT = ROOT / "scripts" / "test-powershell"
DOCS = ROOT / "docs" / "powershell.md"
ROUTES_FILE = PRIVATE / "ArcRoutes.ps1"
HTTP_HELPER = PRIVATE / "Invoke-ArcRequest.ps1"
# The one private function that *parses* resource ids (regex over Id); it never builds a request path.
ID_PARSER = PRIVATE / "Resolve-ArcResourceId.ps1"
FULL_RECORDINGS = ROOT / "tests" / "data" / "az-recordings"  # the untrimmed copies (tests/data/README.md)
VENDORED_RECORDINGS = PESTER / "fixtures" / "az-recordings"

TYPE_PREFIX = "AzConnectedMachineShim."

# Routes the backend serves only once the upgrade engine lands (issue #3). Their OpenAPI check is an
# xfail(strict=True): it fails loudly (XPASS) the day the route appears, and the name is then removed here.
#: Routes the server did not serve yet, expected to fail until they arrive (strict xfail). Empty: all are served.
ENGINE_ROUTES: set[str] = set()

# The three lines of the Azure Arc documentation ("Manage automatic extension upgrade", Azure PowerShell tab).
ARC_DOC_LINES = [
    "Get-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName"
    " | Format-Table Name, EnableAutomaticUpgrade",
    "Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName"
    " -Name extensionName -EnableAutomaticUpgrade",
    "Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName"
    " -Name extensionName -EnableAutomaticUpgrade:$false",
]

HTTP_COMMANDS = {"invoke-restmethod", "invoke-webrequest", "irm", "iwr", "curl", "wget"}
HTTP_TYPES = re.compile(r"\b(HttpClient|WebClient|HttpWebRequest|WebRequest)\b", re.IGNORECASE)
STATE_CHANGING_VERBS = {"New", "Set", "Update", "Remove", "Start", "Stop", "Restart", "Reset"}
# Parameters PowerShell adds to every advanced function (and ShouldProcess ones); -ResourceGroup must not
# become ambiguous with any of them.
COMMON_PARAMETERS = [
    "Verbose",
    "Debug",
    "ErrorAction",
    "WarningAction",
    "InformationAction",
    "ProgressAction",
    "ErrorVariable",
    "WarningVariable",
    "InformationVariable",
    "OutVariable",
    "OutBuffer",
    "PipelineVariable",
    "WhatIf",
    "Confirm",
]

ALL = "__AllParameterSets"


# --------------------------------------------------------------------------------------------------------------
# tree-sitter helpers
# --------------------------------------------------------------------------------------------------------------

PARSER = Parser(Language(tree_sitter_powershell.language()))


@dataclass(frozen=True)
class Parsed:
    path: Path
    source: bytes
    root: Node

    def text(self, node: Node) -> str:
        return self.source[node.start_byte : node.end_byte].decode("utf-8")


@cache
def parse(path: Path) -> Parsed:
    source = path.read_bytes()
    return Parsed(path, source, PARSER.parse(source).root_node)


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def descendants(node: Node, node_type: str) -> list[Node]:
    return [n for n in walk(node) if n.type == node_type]


def child(node: Node, node_type: str) -> Node | None:
    return next((c for c in node.children if c.type == node_type), None)


def string_value(parsed: Parsed, node: Node) -> str:
    raw = parsed.text(node)
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    if raw.startswith('"') and raw.endswith('"'):
        return raw[1:-1]
    return raw


def evaluate(parsed: Parsed, node: Node) -> Any:
    """Evaluate the constant expressions a manifest or an attribute argument holds."""
    if node.type == "hash_literal_expression":
        body = child(node, "hash_literal_body")
        return {} if body is None else hash_entries(parsed, body)
    if node.type == "array_expression":
        return [string_value(parsed, s) for s in descendants(node, "string_literal")]
    if node.type == "string_literal":
        return string_value(parsed, node)
    if node.type == "variable":
        name = parsed.text(node).lower()
        if name in ("$true", "$false"):
            return name == "$true"
        return parsed.text(node)
    named = [c for c in node.named_children if c.type != "comment"]
    if len(named) == 1:
        return evaluate(parsed, named[0])
    return parsed.text(node)


def hash_entries(parsed: Parsed, body: Node) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    for entry in body.children:
        if entry.type != "hash_entry":
            continue
        key = child(entry, "key_expression")
        assert key is not None, parsed.text(entry)
        value = [c for c in entry.named_children if c.type not in ("key_expression", "comment")][-1]
        entries[parsed.text(key)] = evaluate(parsed, value)
    return entries


def command_names(parsed: Parsed) -> list[str]:
    return [parsed.text(n) for n in descendants(parsed.root, "command_name")]


@dataclass
class Attribute:
    name: str
    positional: list[Any] = field(default_factory=list)
    named: dict[str, Any] = field(default_factory=dict)


def read_attribute(parsed: Parsed, node: Node) -> Attribute:
    type_literal = child(node, "type_literal")
    if type_literal is not None:  # [string], [switch], ...: the parameter's type
        return Attribute(name="type:" + parsed.text(type_literal)[1:-1].strip())
    name_node = child(node, "attribute_name")
    assert name_node is not None, parsed.text(node)
    attribute = Attribute(name=parsed.text(name_node))
    arguments = child(node, "attribute_arguments")
    for argument in [] if arguments is None else [c for c in arguments.children if c.type == "attribute_argument"]:
        simple = child(argument, "simple_name")
        values = [c for c in argument.named_children if c.type not in ("simple_name", "comment")]
        if simple is None:
            attribute.positional.append(evaluate(parsed, values[0]))
        else:
            attribute.named[parsed.text(simple).lower()] = evaluate(parsed, values[0]) if values else True
    return attribute


@dataclass
class ParameterInfo:
    name: str
    type: str | None
    aliases: list[str]
    ps_type_name: str | None
    sets: dict[str, str]  # parameter set -> "M" (mandatory), "O" (optional), "MP" (mandatory, from pipeline)


@dataclass
class FunctionInfo:
    name: str
    parsed: Parsed
    node: Node
    help: str
    cmdlet_binding: Attribute | None
    output_types: list[str]
    parameters: dict[str, ParameterInfo]


def read_function(parsed: Parsed, node: Node) -> FunctionInfo:
    name_node = child(node, "function_name")
    assert name_node is not None
    name = parsed.text(name_node)
    help_text = next(
        (parsed.text(c) for c in node.children if c.type == "comment" and parsed.text(c).startswith("<#")), ""
    )
    script_block = child(node, "script_block")
    param_block = None if script_block is None else child(script_block, "param_block")
    cmdlet_binding = None
    output_types: list[str] = []
    parameters: dict[str, ParameterInfo] = {}
    if param_block is not None:
        block_attributes = child(param_block, "attribute_list")
        for attribute_node in [] if block_attributes is None else block_attributes.children:
            if attribute_node.type != "attribute":
                continue
            attribute = read_attribute(parsed, attribute_node)
            if attribute.name.lower() == "cmdletbinding":
                cmdlet_binding = attribute
            elif attribute.name.lower() == "outputtype":
                output_types += [str(v) for v in attribute.positional]
        parameter_list = child(param_block, "parameter_list")
        for parameter in [] if parameter_list is None else descendants(parameter_list, "script_parameter"):
            variable = child(parameter, "variable")
            assert variable is not None
            info = ParameterInfo(parsed.text(variable)[1:], None, [], None, {})
            attribute_list = child(parameter, "attribute_list")
            for attribute_node in [] if attribute_list is None else attribute_list.children:
                if attribute_node.type != "attribute":
                    continue
                attribute = read_attribute(parsed, attribute_node)
                lowered = attribute.name.lower()
                if lowered.startswith("type:"):
                    info.type = attribute.name[5:].lower()
                elif lowered == "alias":
                    info.aliases += [str(v) for v in attribute.positional]
                elif lowered == "pstypename":
                    info.ps_type_name = str(attribute.positional[0])
                elif lowered == "parameter":
                    set_name = str(attribute.named.get("parametersetname", ALL))
                    mandatory = attribute.named.get("mandatory", False) is True
                    pipeline = attribute.named.get("valuefrompipeline", False) is True
                    info.sets[set_name] = ("M" if mandatory else "O") + ("P" if pipeline else "")
            if not info.sets:  # a parameter without [Parameter()] belongs to all sets
                info.sets[ALL] = "O"
            parameters[info.name] = info
    return FunctionInfo(name, parsed, node, help_text, cmdlet_binding, output_types, parameters)


def functions_in(path: Path) -> list[FunctionInfo]:
    parsed = parse(path)
    return [read_function(parsed, n) for n in descendants(parsed.root, "function_statement")]


def module_files() -> list[Path]:
    return sorted(p for p in MODULE.rglob("*") if p.is_file() and p.suffix.lower() in (".ps1", ".psm1", ".psd1"))


def pester_files() -> list[Path]:
    return sorted(p for p in PESTER.rglob("*") if p.is_file() and p.suffix.lower() in (".ps1", ".psm1"))


def public_names() -> list[str]:
    return sorted(p.stem for p in PUBLIC.glob("*.ps1"))


@cache
def public_functions() -> dict[str, FunctionInfo]:
    result = {}
    for path in sorted(PUBLIC.glob("*.ps1")):
        functions = functions_in(path)
        assert [f.name for f in functions] == [path.stem], f"{path.name} must define exactly function {path.stem}"
        result[path.stem] = functions[0]
    return result


@cache
def manifest() -> dict[str, Any]:
    parsed = parse(MANIFEST)
    tables = descendants(parsed.root, "hash_literal_expression")
    assert tables, "the manifest holds no hashtable"
    data = evaluate(parsed, tables[0])
    assert isinstance(data, dict)
    return data


@cache
def route_templates() -> dict[str, str]:
    parsed = parse(ROUTES_FILE)
    for assignment in descendants(parsed.root, "assignment_expression"):
        target = parsed.text(assignment.children[0]).lower()
        if target == "$script:arcroutes":
            tables = descendants(assignment, "hash_literal_expression")
            routes = evaluate(parsed, tables[0])
            assert isinstance(routes, dict) and routes
            return {str(k): str(v) for k, v in routes.items()}
    raise AssertionError("Private/ArcRoutes.ps1 does not assign $script:ArcRoutes")


def format_type_names() -> list[str]:
    tree = ET.parse(FORMAT_FILE)
    return [e.text or "" for e in tree.getroot().iter("TypeName")]


# --------------------------------------------------------------------------------------------------------------
# The cmdlet surface the issue asks for (Az.ConnectedMachine names, types, sets; api-contract.md §3.3)
# --------------------------------------------------------------------------------------------------------------


def _sets(names: list[str], flag: str = "O") -> dict[str, str]:
    return {n: flag for n in names}


def _expanded(sets: list[str], *, update: bool) -> dict[str, tuple[str, dict[str, str]]]:
    names: dict[str, str] = {
        "Publisher": "string",
        ("Type" if update else "ExtensionType"): "string",
        "TypeHandlerVersion": "string",
        "ForceRerun": "string",
        "AutoUpgradeMinorVersion": "switch",
        "EnableAutomaticUpgrade": "switch",
        "Setting": "hashtable",
        "ProtectedSetting": "hashtable",
        "Tag": "hashtable",
    }
    if not update:
        names.update(
            {
                "InstanceViewName": "string",
                "InstanceViewType": "string",
                "InstanceViewTypeHandlerVersion": "string",
                "StatusCode": "string",
                "StatusDisplayStatus": "string",
                "StatusLevel": "string",
                "StatusMessage": "string",
                "StatusTime": "datetime",
            }
        )
    return {name: (type_name, _sets(sets)) for name, type_name in names.items()}


CREATE_SETS = ["CreateExpanded", "CreateViaIdentityMachineExpanded", "CreateViaJsonString", "CreateViaJsonFilePath"]
SET_SETS = ["UpdateExpanded", "UpdateViaJsonString", "UpdateViaJsonFilePath"]
UPDATE_SETS = [
    "UpdateExpanded",
    "UpdateViaIdentityExpanded",
    "UpdateViaIdentityMachineExpanded",
    "UpdateViaJsonString",
    "UpdateViaJsonFilePath",
]
JOB = {"AsJob": ("switch", {ALL: "O"}), "NoWait": ("switch", {ALL: "O"})}

EXTENSION_TYPE = TYPE_PREFIX + "MachineExtension"
MACHINE_TYPE = TYPE_PREFIX + "Machine"

# arcext's own cmdlets: cmdlet -> (default parameter set, {parameter: (type, {set: flag})}). The cmdlets named
# after Az.ConnectedMachine's are checked against the real module's table in tests/test_powershell_fidelity.py.
EXPECTED: dict[str, tuple[str | None, dict[str, tuple[str, dict[str, str]]]]] = {
    "Connect-Arcext": (
        None,
        {
            "Endpoint": ("uri", {ALL: "M"}),
            "Token": ("securestring", {ALL: "O"}),
            "SubscriptionId": ("string", {ALL: "O"}),
            "SkipCertificateCheck": ("switch", {ALL: "O"}),
            "PassThru": ("switch", {ALL: "O"}),
        },
    ),
    "Disconnect-Arcext": (None, {}),
    "Get-ArcextExtensionUpgradeHistory": (
        "Get",
        {
            "Name": ("string", {"Get": "M"}),
            "MachineName": ("string", {"Get": "M"}),
            "ResourceGroupName": ("string", {"Get": "M"}),
            "SubscriptionId": ("string", {"Get": "O"}),
            "InputObject": ("psobject", {"ViaIdentity": "MP"}),
            "StartTime": ("datetime", {ALL: "O"}),
            "EndTime": ("datetime", {ALL: "O"}),
            "Caller": ("string", {ALL: "O"}),
        },
    ),
}

# (cmdlet, parameter) -> aliases of arcext's own cmdlets; every other parameter has none.
EXPECTED_ALIASES: dict[tuple[str, str], list[str]] = {
    ("Connect-Arcext", "Endpoint"): ["BackendUri", "Uri"],
    ("Connect-Arcext", "Token"): ["AccessToken"],
    ("Connect-Arcext", "SubscriptionId"): ["Subscription"],
}

# arcext's own pipeline parameters take only the module's objects. (The Az-named cmdlets' identity parameters
# take anything with an Id, as Az's do: tests/test_powershell_fidelity.py.)
EXPECTED_PS_TYPE_NAMES = {
    "InputObject": {"Get-ArcextExtensionUpgradeHistory": EXTENSION_TYPE},
}

# The old names of arcext's own cmdlets, kept as aliases (issue #13, item 7).
EXPECTED_MODULE_ALIASES = {
    "Connect-AzConnectedMachineShim": "Connect-Arcext",
    "Disconnect-AzConnectedMachineShim": "Disconnect-Arcext",
    "Get-AzConnectedMachineExtensionUpgradeHistory": "Get-ArcextExtensionUpgradeHistory",
}


def az_table() -> dict[str, Any]:
    table: dict[str, Any] = json.loads((PESTER / "fixtures" / "az-connectedmachine-parameters.json").read_text())
    cmdlets: dict[str, Any] = table["cmdlets"]
    return cmdlets


def default_parameter_set(name: str) -> str | None:
    if name in EXPECTED:
        return EXPECTED[name][0]
    default: str = az_table()[name]["defaultParameterSet"]
    return default


# --------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", module_files() + pester_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_file_parses_without_errors(path: Path) -> None:
    parsed = parse(path)
    problems = [
        f"{'MISSING' if n.is_missing else 'ERROR'} at {n.start_point.row + 1}:{n.start_point.column + 1}: "
        f"{parsed.text(n)[:60]!r}"
        for n in walk(parsed.root)
        if n.is_error or n.is_missing
    ]
    assert not problems, problems
    assert parsed.root.named_child_count > 0, "empty file"


def test_format_file_is_well_formed_xml() -> None:
    root = ET.parse(FORMAT_FILE).getroot()
    assert root.tag == "Configuration"
    for view in root.iter("View"):
        headers = [h.findtext("Label") for h in view.iter("TableColumnHeader")]
        items = [i.findtext("PropertyName") for i in view.iter("TableColumnItem")]
        assert headers and headers == items, view.findtext("Name")


# --------------------------------------------------------------------------------------------------------------
# Manifest and module layout
# --------------------------------------------------------------------------------------------------------------


def test_manifest_fields() -> None:
    data = manifest()
    assert (MODULE / data["RootModule"]).is_file()
    assert uuid.UUID(data["GUID"])
    assert tuple(int(x) for x in data["PowerShellVersion"].split(".")) >= (7, 2)
    assert data["CompatiblePSEditions"] == ["Core"]
    assert data["RequiredModules"] == []
    assert data["Description"]
    tags = data["PrivateData"]["PSData"]["Tags"]
    assert tags and all(" " not in t for t in tags)


def test_manifest_exports_exactly_the_public_functions() -> None:
    data = manifest()
    exported = data["FunctionsToExport"]
    assert isinstance(exported, list)
    assert not any("*" in name or "?" in name for name in exported), "no wildcards in FunctionsToExport"
    assert sorted(exported) == public_names()
    assert len(set(exported)) == len(exported)
    for key in ("CmdletsToExport", "VariablesToExport"):
        assert data[key] == [], key
    assert sorted(data["AliasesToExport"]) == sorted(EXPECTED_MODULE_ALIASES), "AliasesToExport"


def test_root_module_defines_and_exports_the_old_names_as_aliases() -> None:
    parsed = parse(MODULE / "AzConnectedMachineShim.psm1")
    text = parsed.source.decode()
    for alias, target in EXPECTED_MODULE_ALIASES.items():
        assert re.search(rf"'{re.escape(alias)}'\s*=\s*'{re.escape(target)}'", text), alias
        assert target in public_names()
    assert "Set-Alias" in text and "-Alias @($script:ArcShimAliases.Keys)" in text


def test_no_private_function_is_exported_or_public() -> None:
    exported = {n.lower() for n in manifest()["FunctionsToExport"]}
    private = [f.name for p in sorted(PRIVATE.glob("*.ps1")) for f in functions_in(p)]
    assert private, "Private/ defines no function"
    assert not exported & {n.lower() for n in private}
    assert not {n.lower() for n in public_names()} & {n.lower() for n in private}
    assert "Invoke-ArcRequest" in private


def test_format_files_exist() -> None:
    formats = manifest()["FormatsToProcess"]
    assert formats == [FORMAT_FILE.name]
    assert all((MODULE / f).is_file() for f in formats)


def test_root_module_dot_sources_private_and_public_and_exports_public() -> None:
    parsed = parse(MODULE / "AzConnectedMachineShim.psm1")
    strings = {string_value(parsed, s) for s in descendants(parsed.root, "string_literal")}
    assert {"Private", "Public"} <= strings
    assert re.search(r"^\s*\.\s+\$file\.FullName", parsed.source.decode(), re.MULTILINE), "dot-sources each file"
    exports = [c for c in descendants(parsed.root, "command") if parsed.text(c).startswith("Export-ModuleMember")]
    assert len(exports) == 1 and "$public.BaseName" in parsed.text(exports[0])


def test_every_module_file_defines_functions_by_file_name() -> None:
    for path in sorted(PRIVATE.glob("*.ps1")):
        names = [f.name for f in functions_in(path)]
        if path == ROUTES_FILE:
            assert names == [], "ArcRoutes.ps1 holds data only"
        else:
            assert names == [path.stem], f"{path.name} must define exactly function {path.stem}"
    assert set(public_functions()) == set(EXPECTED) | set(az_table()), "the cmdlet list of issues #5 and #13"


# --------------------------------------------------------------------------------------------------------------
# Cmdlets: binding, help, parameters, ShouldProcess
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", public_names())
def test_cmdlet_binding_and_output_type(name: str) -> None:
    function = public_functions()[name]
    assert function.cmdlet_binding is not None, f"{name} has no [CmdletBinding()]"
    binding = function.cmdlet_binding.named
    assert binding.get("positionalbinding") is False
    assert binding.get("defaultparametersetname") == default_parameter_set(name)
    assert function.output_types, f"{name} has no [OutputType()]"


@pytest.mark.parametrize("name", public_names())
def test_comment_based_help(name: str) -> None:
    function = public_functions()[name]
    help_text = function.help
    assert help_text.startswith("<#"), f"{name} has no comment-based help block"
    sections = re.findall(r"^\s*\.([A-Z]+)\b[ \t]*(\S*)", help_text, re.MULTILINE)
    keywords = [s[0] for s in sections]
    assert "SYNOPSIS" in keywords and "DESCRIPTION" in keywords
    assert keywords.count("EXAMPLE") >= 2, f"{name} needs at least two examples"
    assert re.search(r"\.SYNOPSIS\s*\n\s*\S", help_text), "empty synopsis"
    documented = {arg for keyword, arg in sections if keyword == "PARAMETER"}
    missing = set(function.parameters) - documented
    assert not missing, f"{name}: no .PARAMETER help for {sorted(missing)}"
    assert documented - set(function.parameters) <= {"WhatIf", "Confirm"}
    for example in re.split(r"^\s*\.EXAMPLE\s*$", help_text, flags=re.MULTILINE)[1:]:
        assert re.search(rf"\b{re.escape(name)}\b|\|\s*{re.escape(name)}", example), f"an example of {name} runs it"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameters_types_sets_and_mandatory_flags(name: str) -> None:
    function = public_functions()[name]
    _, expected = EXPECTED[name]
    actual = {p.name: (p.type, p.sets) for p in function.parameters.values()}
    assert actual == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_aliases(name: str) -> None:
    function = public_functions()[name]
    for parameter in function.parameters.values():
        assert parameter.aliases == EXPECTED_ALIASES.get((name, parameter.name), []), parameter.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pipeline_parameters_accept_only_module_objects(name: str) -> None:
    function = public_functions()[name]
    for parameter in function.parameters.values():
        expected = EXPECTED_PS_TYPE_NAMES.get(parameter.name, {}).get(name)
        assert parameter.ps_type_name == expected, parameter.name
        from_pipeline = any(flag.endswith("P") for flag in parameter.sets.values())
        assert from_pipeline == (expected is not None), parameter.name


@pytest.mark.parametrize("name", public_names())
def test_state_changing_cmdlets_support_should_process(name: str) -> None:
    function = public_functions()[name]
    assert function.cmdlet_binding is not None
    declared = function.cmdlet_binding.named.get("supportsshouldprocess") is True
    state_changing = name.split("-")[0] in STATE_CHANGING_VERBS
    assert declared == state_changing, f"{name}: SupportsShouldProcess={declared}"
    calls = re.findall(r"\$PSCmdlet\.ShouldProcess\(", function.parsed.text(function.node))
    assert bool(calls) == state_changing, f"{name} must call $PSCmdlet.ShouldProcess exactly when it declares it"
    if state_changing:
        assert function.cmdlet_binding.named.get("confirmimpact") == "Medium"


def test_resource_group_prefix_is_unambiguous() -> None:
    """-ResourceGroup (Arc documentation) binds only because it is an unambiguous prefix of -ResourceGroupName."""
    for name, function in public_functions().items():
        names = (
            [p.name for p in function.parameters.values()]
            + [a for p in function.parameters.values() for a in p.aliases]
            + COMMON_PARAMETERS
        )
        matches = [n for n in names if n.lower().startswith("resourcegroup")]
        if "ResourceGroupName" in function.parameters:
            assert matches == ["ResourceGroupName"], name
        else:
            assert matches == [], name


def test_arc_documentation_lines_bind() -> None:
    """Each Arc documentation line names parameters that resolve to exactly one parameter set."""
    for line in ARC_DOC_LINES:
        command = line.split("|")[0].split()
        function = public_functions()[command[0]]
        given = []
        for token in command[1:]:
            if token.startswith("-"):
                prefix = token[1:].split(":")[0].lower()
                candidates = [
                    p
                    for p in function.parameters.values()
                    if p.name.lower().startswith(prefix) or any(a.lower() == prefix for a in p.aliases)
                ]
                assert len(candidates) == 1, (line, token)
                given.append(candidates[0])
                if ":" in token:
                    assert candidates[0].type == "switch", "only a switch takes -Name:$false"
        sets = {s for p in function.parameters.values() for s in p.sets if s != ALL}
        viable = [
            s
            for s in sets
            if all(s in p.sets or ALL in p.sets for p in given)
            and all(p in given for p in function.parameters.values() if p.sets.get(s, p.sets.get(ALL, "")) == "M")
        ]
        assert len(viable) == 1, (line, viable)


# --------------------------------------------------------------------------------------------------------------
# Output objects, format file, protected settings
# --------------------------------------------------------------------------------------------------------------


def emitted_type_names() -> dict[str, list[str]]:
    """PSTypeName values of the [pscustomobject]@{ PSTypeName = '...' } literals, with their property names."""
    found: dict[str, list[str]] = {}
    for path in module_files():
        parsed = parse(path)
        for body in descendants(parsed.root, "hash_literal_body"):
            entries = [c for c in body.children if c.type == "hash_entry"]
            keys = [parsed.text(k) for e in entries for k in [child(e, "key_expression")] if k is not None]
            if "PSTypeName" in keys:
                values = hash_entries(parsed, body)
                found.setdefault(str(values["PSTypeName"]), []).extend(keys)
    return found


def test_format_file_names_every_emitted_type() -> None:
    emitted = emitted_type_names()
    assert EXTENSION_TYPE in emitted and MACHINE_TYPE in emitted
    assert all(t.startswith(TYPE_PREFIX) for t in emitted)
    viewed = format_type_names()
    assert sorted(viewed) == sorted(emitted), "one table view per emitted PSTypeName, and no stale view"
    declared = {t for f in public_functions().values() for t in f.output_types if t.startswith(TYPE_PREFIX)}
    assert declared <= set(emitted), "every [OutputType()] type name is emitted"


def test_extension_object_has_az_property_names() -> None:
    properties = set(emitted_type_names()[EXTENSION_TYPE])
    required = {
        "Name",
        "Id",
        "ResourceGroupName",
        "MachineName",
        "Location",
        "Publisher",
        "MachineExtensionType",
        "TypeHandlerVersion",
        "EnableAutomaticUpgrade",
        "AutoUpgradeMinorVersion",
        "ProvisioningState",
        "Setting",
        "InstanceView",
        "SubscriptionId",
        "Type",
        "Tags",  # Az's current name; Tag is an alias property (issue #13, item 5)
    }
    assert required <= properties, sorted(required - properties)
    for path in (PRIVATE / "ConvertTo-ArcMachineExtension.ps1", PRIVATE / "ConvertTo-ArcMachine.ps1"):
        assert "-MemberType AliasProperty -Name Tag -Value Tags" in path.read_text(), path.name


def test_no_output_object_carries_protected_settings() -> None:
    for type_name, properties in emitted_type_names().items():
        assert not [p for p in properties if "protected" in p.lower()], type_name
    for path in sorted(PRIVATE.glob("ConvertTo-*.ps1")):
        parsed = parse(path)
        code = [n for n in walk(parsed.root) if n.child_count == 0 and n.type != "comment"]
        assert not [parsed.text(n) for n in code if "protected" in parsed.text(n).lower()], path.name


# --------------------------------------------------------------------------------------------------------------
# HTTP: one helper, api-version, URL templates
# --------------------------------------------------------------------------------------------------------------


def test_only_the_http_helper_does_http() -> None:
    for path in module_files():
        parsed = parse(path)
        http_calls = [c for c in command_names(parsed) if c.lower() in HTTP_COMMANDS]
        code = "".join(parsed.text(n) for n in walk(parsed.root) if n.child_count == 0 and n.type != "comment")
        if path == HTTP_HELPER:
            assert http_calls == ["Invoke-WebRequest"], "the helper makes exactly one kind of call"
        else:
            assert http_calls == [], f"{path.name} calls {http_calls}"
            assert not HTTP_TYPES.search(code), f"{path.name} uses a .NET HTTP client"


def test_http_helper_defaults() -> None:
    parsed = parse(ROUTES_FILE)
    assignments = {parsed.text(a.children[0]).lower(): a for a in descendants(parsed.root, "assignment_expression")}
    value = assignments["$script:arcdefaultapiversion"]
    assert [string_value(parsed, s) for s in descendants(value, "string_literal")] == ["2024-07-10"]
    helper = parse(HTTP_HELPER).source.decode()
    for needle in (
        "Retry-After",
        "Azure-AsyncOperation",
        "Location",
        "Authorization",
        "-Depth 100",
        "Get-ArcErrorCategory",
        "ThrowTerminatingError",
    ):
        assert needle in helper, needle


def test_error_categories() -> None:
    source = parse(PRIVATE / "Get-ArcErrorCategory.ps1").source.decode()
    for status, category in [
        ("404", "ObjectNotFound"),
        ("400", "InvalidArgument"),
        ("401, 403", "PermissionDenied"),
        ("409", "ResourceExists"),
        ("-ge 500", "ConnectionError"),
    ]:
        assert re.search(rf"{re.escape(status)}.*ErrorCategory\]::{category}", source), (status, category)


def test_request_paths_come_only_from_the_route_table() -> None:
    routes = route_templates()
    used: set[str] = set()
    for path in module_files():
        parsed = parse(path)
        source = parsed.source.decode()
        used |= set(re.findall(r"Resolve-ArcPath\s+-Route\s+(\w+)", source))
        if path in (ROUTES_FILE, ID_PARSER):
            continue
        literals = [string_value(parsed, s) for s in descendants(parsed.root, "string_literal")]
        builds = [
            s
            for s in literals
            if re.match(r"\s*/?(subscriptions|providers)/", s, re.IGNORECASE)
            or re.search(r"/providers/Microsoft\.|/resourceGroups/", s, re.IGNORECASE)
        ]
        assert not builds, f"{path.name} writes resource paths itself: {builds}"
    assert used == set(routes), "every route is used, and every route used is in the table"
    assert "Invoke-ArcRequest" not in parse(ID_PARSER).source.decode()
    for name, template in routes.items():
        assert template.startswith("/subscriptions/{subscriptionId}/"), name
        assert re.fullmatch(r"(/([A-Za-z.]+|\{[A-Za-z]+\}))+", template), name


def _normalise(path: str) -> tuple[str, ...]:
    segments = []
    for segment in path.strip("/").split("/"):
        if re.fullmatch(r"\{[^}]+\}|<[^>]+>", segment):
            segments.append("{}")
        else:
            segments.append(segment.lower())
    return tuple(segments)


def _route_params() -> list[Any]:
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=True, reason="route arrives with the engine issue #3"),
            id=name,
        )
        if name in ENGINE_ROUTES
        else pytest.param(name, id=name)
        for name in route_templates()
    ]


@pytest.fixture
def openapi_paths(arcext_server: Any) -> set[tuple[str, ...]]:
    response = requests.get(f"{arcext_server.url}/arcext/v1/openapi.json", timeout=30)
    response.raise_for_status()
    paths = response.json()["paths"]
    assert paths, "the server's OpenAPI document lists no path"
    return {_normalise(p) for p in paths}


def test_engine_routes_are_route_names() -> None:
    assert ENGINE_ROUTES <= set(route_templates())


@pytest.mark.parametrize("route", _route_params())
def test_url_template_is_a_server_route(route: str, openapi_paths: set[tuple[str, ...]]) -> None:
    template = route_templates()[route]
    assert _normalise(template) in openapi_paths, f"{route}: {template} is not a path of /arcext/v1/openapi.json"


# --------------------------------------------------------------------------------------------------------------
# Documentation, Pester layer, runner script, vendored recordings
# --------------------------------------------------------------------------------------------------------------


def test_docs_show_the_arc_lines_import_and_environment() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for line in ARC_DOC_LINES:
        assert line in text, line
    assert "Import-Module" in text and "AzConnectedMachineShim.psd1" in text
    for variable in ("ARCEXT_ENDPOINT", "ARCEXT_TOKEN", "ARCEXT_SUBSCRIPTION_ID"):
        assert variable in text, variable


def test_pester_suite_layout() -> None:
    tests = sorted(PESTER.glob("*.Tests.ps1"))
    assert len(tests) >= 3
    for path in tests:
        names = command_names(parse(path))
        assert "Describe" in names and "It" in names and "BeforeAll" in names, path.name
    unit = "\n".join(p.read_text(encoding="utf-8") for p in tests if "Integration" not in p.name)
    assert "Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest" in unit
    assert "Mock -ModuleName AzConnectedMachineShim Invoke-WebRequest" in unit
    integration = (PESTER / "Integration.Tests.ps1").read_text(encoding="utf-8")
    for line in ARC_DOC_LINES:
        assert f"'{line}'" in integration, f"the integration tests run this line verbatim: {line}"
    assert "| Update-AzConnectedMachineExtension -EnableAutomaticUpgrade" in integration


def test_runner_script_is_honest_without_pwsh(tmp_path: Path) -> None:
    assert SCRIPT.is_file() and SCRIPT.stat().st_mode & stat.S_IXUSR, "scripts/test-powershell is executable"
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCEXT_")}
    env["ARCEXT_PWSH"] = str(tmp_path / "no-such-pwsh")
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "pwsh" in output and "NOT run" in output
    assert not re.search(r"\bpass(ed)?\b", output, re.IGNORECASE), "must not claim a pass"


def _recording_entries(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    "vendored", sorted(VENDORED_RECORDINGS.glob("*.Recording.json")), ids=lambda p: p.name.split(".")[0]
)
def test_vendored_recordings_match_the_full_ones(vendored: Path) -> None:
    source = FULL_RECORDINGS / vendored.name
    assert source.is_file(), f"{vendored.name} has no untrimmed copy in {FULL_RECORDINGS}"
    signing = re.compile(r"&(t|c|s|h)=[^&+]*")
    originals = {signing.sub("", k): v for k, v in _recording_entries(source).items()}
    for key, entry in _recording_entries(vendored).items():
        assert key in originals, key
        original = originals[key]
        assert entry["Request"]["Method"] == original["Request"]["Method"]
        assert entry["Request"]["RequestUri"] == signing.sub("", original["Request"]["RequestUri"])
        assert entry["Request"]["Content"] == original["Request"].get("Content")
        assert entry["Response"]["StatusCode"] == original["Response"]["StatusCode"]
        for header, values in entry["Response"]["Headers"].items():
            assert values == [signing.sub("", v) for v in original["Response"]["Headers"][header]], header
        content, original_content = entry["Response"]["Content"], original["Response"].get("Content")
        if content == original_content:
            continue
        trimmed, full = json.loads(content), json.loads(original_content)
        assert trimmed["value"] == full["value"][: len(trimmed["value"])], "list bodies keep a prefix of value"
        assert {k: v for k, v in trimmed.items() if k != "value"} == {k: v for k, v in full.items() if k != "value"}
