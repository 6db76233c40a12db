"""Issue #13, PowerShell: scripts written for Az.ConnectedMachine run unchanged against AzConnectedMachineShim.

Static layer (no pwsh needed; tree-sitter-powershell, as tests/test_powershell_module.py): every parameter set
and parameter of the Az-named cmdlets is checked against a table transcribed from the real module's generated
proxy functions (tests/powershell/fixtures/az-connectedmachine-parameters.json: Azure/azure-powershell
``src/ConnectedMachine/ConnectedMachine.Autorest/exports/*.ps1``, file and commit per cmdlet), the examples of
Az's help files bind to the parameter set Az binds them to, and each item of the issue has its check. The
behaviour (requests sent, objects written) is covered by tests/powershell/Fidelity.Tests.ps1 where pwsh exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from test_powershell_module import (
    ALL,
    FORMAT_FILE,
    MODULE,
    PESTER,
    PRIVATE,
    PUBLIC,
    FunctionInfo,
    ParameterInfo,
    child,
    descendants,
    functions_in,
    parse,
    public_functions,
    public_names,
    read_attribute,
)

TABLE_FILE = PESTER / "fixtures" / "az-connectedmachine-parameters.json"
COMPAT = MODULE / "compat" / "Az.ConnectedMachine"
FIDELITY_PESTER = PESTER / "Fidelity.Tests.ps1"

# Az's .NET parameter types -> the shim's. Identity and body models become [object]: the shim resolves what it
# is given at run time (issue item 3), where Az converts hashtables and objects to its model interfaces.
TYPE_MAP = {
    "System.String": "string",
    "System.String[]": "string[]",
    "System.Management.Automation.SwitchParameter": "switch",
    "System.Collections.Hashtable": "hashtable",
    "System.DateTime": "datetime",
    "System.Management.Automation.PSObject": "psobject",
    "System.Uri": "uri",
    "System.Management.Automation.PSCredential": "pscredential",
    "Microsoft.Azure.PowerShell.Cmdlets.ConnectedMachine.Runtime.SendAsyncStep[]": "object[]",
}


def shim_type(az_type: str) -> str:
    return TYPE_MAP.get(az_type, "object")


def table() -> dict[str, Any]:
    cmdlets: dict[str, Any] = json.loads(TABLE_FILE.read_text())["cmdlets"]
    return cmdlets


AZ_CMDLETS = sorted(table())


def dont_show(function: FunctionInfo, name: str) -> bool:
    """Whether every [Parameter(...)] of the parameter says DontShow (read with tree-sitter)."""
    for parameter in descendants(function.node, "script_parameter"):
        variable = child(parameter, "variable")
        if variable is None or function.parsed.text(variable)[1:] != name:
            continue
        attribute_list = child(parameter, "attribute_list")
        attributes = [
            read_attribute(function.parsed, a)
            for a in ([] if attribute_list is None else attribute_list.children)
            if a.type == "attribute"
        ]
        flags = [a.named.get("dontshow", False) is True for a in attributes if a.name.lower() == "parameter"]
        return bool(flags) and all(flags)
    raise AssertionError(f"no parameter {name}")


# --- the table ------------------------------------------------------------------------------------------
def test_the_table_names_its_sources() -> None:
    about = json.loads(TABLE_FILE.read_text())["_about"]
    assert "Azure/azure-powershell" in about and "Apache-2.0" in about
    for name, entry in table().items():
        source = entry["source"]
        exports = r"src/ConnectedMachine/ConnectedMachine\.Autorest/exports/"
        assert re.fullmatch(rf"{exports}{name}\.ps1@[0-9a-f]{{40}}", source)
        used = {s for p in entry["parameters"].values() for s in p["sets"]} - {ALL}
        assert used <= set(entry["parameterSets"]), name
        assert set(entry["parameterSets"]) - used <= {entry["defaultParameterSet"]}, name  # List1: no own parameter
        assert entry["defaultParameterSet"] in entry["parameterSets"]


@pytest.mark.parametrize("name", AZ_CMDLETS)
def test_parameter_sets_parameters_types_and_flags_match_az(name: str) -> None:
    """Every parameter of Az's cmdlet, in every set Az puts it, with Az's Mandatory/pipeline flags and type."""
    function = public_functions()[name]
    expected = table()[name]
    assert function.cmdlet_binding is not None
    assert function.cmdlet_binding.named.get("defaultparametersetname") == expected["defaultParameterSet"]
    actual = {p.name: (p.type, p.sets) for p in function.parameters.values()}
    wanted = {n: (shim_type(p["type"]), p["sets"]) for n, p in expected["parameters"].items()}
    assert actual == wanted
    sets = {s for p in function.parameters.values() for s in p.sets} - {ALL}
    assert sets | {expected["defaultParameterSet"]} == set(expected["parameterSets"])


@pytest.mark.parametrize("name", AZ_CMDLETS)
def test_aliases_and_hidden_parameters_match_az(name: str) -> None:
    function = public_functions()[name]
    for parameter_name, spec in table()[name]["parameters"].items():
        parameter: ParameterInfo = function.parameters[parameter_name]
        assert parameter.aliases == spec["aliases"], parameter_name
        assert dont_show(function, parameter_name) == spec["dontShow"], parameter_name


# --- help examples of the real module ---------------------------------------------------------------------
def bind(name: str, given: list[str], pipeline: bool) -> str:
    """The parameter set PowerShell binds: named parameters (prefixes and aliases resolved), then pipeline input."""
    function = public_functions()[name]
    default = table()[name]["defaultParameterSet"]
    chosen: list[ParameterInfo] = []
    for token in given:
        prefix = token.lower()
        exact = [
            p
            for p in function.parameters.values()
            if p.name.lower() == prefix or prefix in [a.lower() for a in p.aliases]
        ]
        candidates = exact or [p for p in function.parameters.values() if p.name.lower().startswith(prefix)]
        assert len(candidates) == 1, (name, token, [c.name for c in candidates])
        chosen.append(candidates[0])
    sets = sorted(table()[name]["parameterSets"])
    viable = []
    for s in sets:
        if not all(s in p.sets or ALL in p.sets for p in chosen):
            continue
        flags = {p.name: p.sets.get(s, p.sets.get(ALL)) for p in function.parameters.values()}
        pipe = [n for n, f in flags.items() if f and "P" in f and n not in [c.name for c in chosen]]
        missing = [n for n, f in flags.items() if f == "M" and n not in [c.name for c in chosen]]
        missing_pipe = [n for n, f in flags.items() if f == "MP" and n not in [c.name for c in chosen]]
        if missing:
            continue
        if pipeline and not pipe:
            continue
        if not pipeline and missing_pipe:
            continue
        if pipeline and len(missing_pipe) > 1:
            continue  # one piped object cannot fill two mandatory pipeline parameters
        viable.append(s)
    if len(viable) > 1 and default in viable:
        return default
    assert len(viable) == 1, (name, given, pipeline, viable)
    return viable[0]


# (cmdlet, named parameters, pipeline input, the set Az binds): the examples of Az's help for these cmdlets.
AZ_HELP_EXAMPLES = [
    # New-AzConnectedMachineExtension, examples 1-4
    ("New-AzConnectedMachineExtension",
     ["Name", "ResourceGroupName", "MachineName", "Location", "Publisher", "TypeHandlerVersion", "Settings",
      "ExtensionType"], False, "CreateExpanded"),
    ("New-AzConnectedMachineExtension", ["Name", "ResourceGroupName", "MachineName"], True, "Create"),
    ("New-AzConnectedMachineExtension", ["Location", "Publisher", "TypeHandlerVersion", "Settings", "ExtensionType"],
     True, "CreateViaIdentityExpanded"),
    ("New-AzConnectedMachineExtension", ["ExtensionParameter"], True, "CreateViaIdentity"),
    # Set-AzConnectedMachineExtension, examples 1-2
    ("Set-AzConnectedMachineExtension",
     ["Name", "ResourceGroupName", "MachineName", "Location", "Publisher", "TypeHandlerVersion", "Settings",
      "ExtensionType"], False, "UpdateExpanded"),
    ("Set-AzConnectedMachineExtension", ["Name", "ResourceGroupName", "MachineName"], True, "Update"),
    # Update-AzConnectedMachineExtension, examples 1-4 (1 and 3 splat these keys)
    ("Update-AzConnectedMachineExtension", ["ResourceGroupName", "MachineName", "Name", "Settings"], False,
     "UpdateExpanded"),
    ("Update-AzConnectedMachineExtension", ["Settings"], True, "UpdateViaIdentityExpanded"),
    ("Update-AzConnectedMachineExtension", ["ResourceGroupName", "MachineName", "Name"], True, "Update"),
    ("Update-AzConnectedMachineExtension", ["ExtensionParameter"], True, "UpdateViaIdentity"),
    # the Arc documentation's lines and other common forms
    ("Update-AzConnectedMachineExtension", ["ResourceGroup", "MachineName", "Name", "EnableAutomaticUpgrade"], False,
     "UpdateExpanded"),
    ("Update-AzConnectedMachineExtension", ["Name", "EnableAutomaticUpgrade"], True,
     "UpdateViaIdentityMachineExpanded"),
    ("Update-AzConnectedMachineExtension", ["Name", "ExtensionParameter"], True, "UpdateViaIdentityMachine"),
    ("Update-AzConnectedExtension", ["ResourceGroupName", "MachineName", "ExtensionTarget"], False, "UpgradeExpanded"),
    ("Update-AzConnectedExtension", ["ExtensionTarget"], True, "UpgradeViaIdentityExpanded"),
    ("Update-AzConnectedExtension", ["ExtensionUpgradeParameter"], True, "UpgradeViaIdentity"),
    ("Update-AzConnectedExtension", ["InputObject", "ExtensionUpgradeParameter"], False, "UpgradeViaIdentity"),
    ("Remove-AzConnectedMachineExtension", [], True, "DeleteViaIdentity"),
    ("Remove-AzConnectedMachineExtension", ["Name"], True, "DeleteViaIdentityMachine"),
    ("Get-AzConnectedMachineExtension", ["ResourceGroup", "MachineName"], False, "List"),
    ("Get-AzConnectedMachine", ["ResourceGroupName", "Name", "DefaultProfile"], False, "Get"),
    ("Get-AzConnectedExtensionMetadata", ["Location", "Publisher", "ExtensionType", "Proxy"], False, "List"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "given", "pipeline", "expected"), AZ_HELP_EXAMPLES)
def test_the_examples_of_azs_help_bind_as_in_az(name: str, given: list[str], pipeline: bool, expected: str) -> None:
    assert bind(name, given, pipeline) == expected


def test_the_help_of_the_shim_shows_azs_whole_object_examples() -> None:
    texts = {n: public_functions()[n].help for n in AZ_CMDLETS}
    assert (
        "| Update-AzConnectedMachineExtension -ExtensionParameter $extToUpdate"
        in texts["Update-AzConnectedMachineExtension"]
    )
    assert "$otherExtension | Set-AzConnectedMachineExtension -Name custom" in texts["Set-AzConnectedMachineExtension"]


# --- item 1: -TypeHandlerVersion is sent ----------------------------------------------------------------------
def test_item1_update_sends_type_handler_version_without_a_warning() -> None:
    body = (PRIVATE / "New-ArcExtensionBody.ps1").read_text()
    assert "Write-Warning" not in body and "strip" not in body.lower()
    assert "TypeHandlerVersion = 'typeHandlerVersion'" in body
    update = public_functions()["Update-AzConnectedMachineExtension"].help
    assert "strips" not in update and "not sent" not in update
    assert "-TypeHandlerVersion is sent in the PATCH" in update


# --- item 2: the whole-object sets reach the request -------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "sets"),
    [
        ("New-AzConnectedMachineExtension", ["Create", "CreateViaIdentity", "CreateViaIdentityMachine"]),
        ("Update-AzConnectedMachineExtension", ["Update", "UpdateViaIdentity", "UpdateViaIdentityMachine"]),
    ],
)
def test_item2_whole_object_sets_build_the_body_from_extension_parameter(name: str, sets: list[str]) -> None:
    text = (PUBLIC / f"{name}.ps1").read_text()
    assert "ConvertFrom-ArcExtensionParameter -InputObject $ExtensionParameter" in text
    assert "{ $_ -in @(" + ", ".join(f"'{s}'" for s in sets) + ") }" in text


def test_item2_set_and_upgrade_whole_object_sets() -> None:
    set_text = (PUBLIC / "Set-AzConnectedMachineExtension.ps1").read_text()
    assert "'Update' {" in set_text and "ConvertFrom-ArcExtensionParameter -InputObject $ExtensionParameter" in set_text
    upgrade = (PUBLIC / "Update-AzConnectedExtension.ps1").read_text()
    assert "$ExtensionUpgradeParameter" in upgrade and "'UpgradeViaIdentity', 'UpgradeViaIdentityExpanded'" in upgrade
    converter = (PRIVATE / "ConvertFrom-ArcExtensionParameter.ps1").read_text()
    for name in ("MachineExtensionType", "TypeHandlerVersion", "ProtectedSetting", "'Tag', 'Tags'", "Location"):
        assert name in converter
    assert [f.name for f in functions_in(PRIVATE / "ConvertFrom-ArcExtensionParameter.ps1")] == [
        "ConvertFrom-ArcExtensionParameter"
    ]


# --- item 3: identity parameters accept what Az's accept ---------------------------------------------------
@pytest.mark.parametrize("name", AZ_CMDLETS)
def test_item3_identity_and_body_parameters_take_any_object(name: str) -> None:
    for parameter in public_functions()[name].parameters.values():
        if parameter.name in ("InputObject", "MachineInputObject", "ExtensionParameter", "ExtensionUpgradeParameter"):
            assert parameter.ps_type_name is None and parameter.type == "object", parameter.name


def test_item3_resolver_reads_ids_strings_and_hashtable_keys() -> None:
    text = (PRIVATE / "Resolve-ArcInputObject.ps1").read_text()
    assert "$InputObject -is [string]" in text and "'Id'" in text
    for key in ("'MachineName'", "'Name'", "'ResourceGroupName'", "'SubscriptionId'", "'ExtensionName'"):
        assert key in text, key
    assert "[System.Collections.IDictionary]" in text


# --- item 4: -DefaultProfile and the hidden runtime parameters; -Proxy* applied ------------------------------
@pytest.mark.parametrize("name", AZ_CMDLETS)
def test_item4_proxy_parameters_reach_every_request(name: str) -> None:
    text = public_functions()[name].parsed.text(public_functions()[name].node)
    assert "$proxy = Get-ArcProxySetting -BoundParameters $PSBoundParameters" in text
    calls = re.findall(r"(Invoke-ArcRequest|Get-ArcPagedResult) (-\w+)", text)
    assert calls and all(flag == "-ProxySetting" for _cmd, flag in calls), calls
    request = (PRIVATE / "Invoke-ArcRequest.ps1").read_text()
    assert "[hashtable] $ProxySetting" in request and "$request[$key] = $ProxySetting[$key]" in request
    paged = (PRIVATE / "Get-ArcPagedResult.ps1").read_text()
    assert paged.count("ProxySetting = $ProxySetting") == 2


# --- item 5: Tags (Tag as alias) and Az's default table ------------------------------------------------------
def test_item5_default_table_columns_are_azs() -> None:
    import xml.etree.ElementTree as ET

    root = ET.parse(FORMAT_FILE).getroot()
    for view in root.iter("View"):
        if view.findtext("Name") == "AzConnectedMachineShim.MachineExtension":
            labels = [h.findtext("Label") for h in view.iter("TableColumnHeader")]
            items = [i.findtext("PropertyName") for i in view.iter("TableColumnItem")]
            break
    else:
        raise AssertionError("no MachineExtension view")
    az = ["ResourceGroupName", "Name", "Location", "TypeHandlerVersion", "ProvisioningState", "Publisher"]
    assert labels == az and items == az
    converter = (PRIVATE / "ConvertTo-ArcMachineExtension.ps1").read_text()
    assert "EnableAutomaticUpgrade         =" in converter  # Format-Table Name, EnableAutomaticUpgrade still works
    assert re.search(r"^\s*Tags\s+= \$Resource\['tags'\]", converter, re.M)


# --- item 6: scripts that require Az.ConnectedMachine and use Set-AzContext ---------------------------------
def test_item6_compatibility_module_named_az_connectedmachine_loads_the_shim() -> None:
    from test_powershell_module import evaluate

    manifest_path = COMPAT / "Az.ConnectedMachine.psd1"
    parsed = parse(manifest_path)
    data = evaluate(parsed, descendants(parsed.root, "hash_literal_expression")[0])
    assert (COMPAT / data["RootModule"]).is_file()
    (nested,) = data["NestedModules"]
    assert (COMPAT / nested).resolve() == (MODULE / "AzConnectedMachineShim.psd1").resolve()
    exported = set(data["FunctionsToExport"])
    assert set(AZ_CMDLETS) <= exported and {"Get-AzContext", "Set-AzContext"} <= exported
    root = (COMPAT / data["RootModule"]).read_text()
    assert "Get-Module -ListAvailable -Name 'Az.Accounts'" in root  # only a stand-in when Az.Accounts is absent
    assert "function Set-AzContext" in root and "function Get-AzContext" in root


def test_item6_the_subscription_comes_from_the_az_context() -> None:
    resolver = (PRIVATE / "Resolve-ArcSubscriptionId.ps1").read_text()
    order = [resolver.index(s) for s in ("$explicit", "$stored", "Get-ArcAzContextSubscription", "Get-ArcContext")]
    assert order == sorted(order), "explicit > Connect-Arcext > Az context > ARCEXT_SUBSCRIPTION_ID"
    reader = (PRIVATE / "Get-ArcAzContextSubscription.ps1").read_text()
    assert "Get-Command -Name 'Get-AzContext'" in reader and ".Subscription.Id" in reader


def test_item6_and_7_are_documented() -> None:
    docs = (MODULE.parent / "docs" / "powershell.md").read_text()
    for text in ("Az.ConnectedMachine", "PSModulePath", "Set-AzContext", "#Requires -Modules Az.ConnectedMachine",
                 "Connect-Arcext", "Get-ArcextExtensionUpgradeHistory", "Connect-AzConnectedMachineShim"):  # fmt: skip
        assert text in docs, text
    readme = (MODULE.parent / "README.md").read_text()
    assert "Az.ConnectedMachine" in readme[readme.index("Differences from Azure") :]


# --- item 7: arcext's own cmdlets do not borrow Az's names ---------------------------------------------------
def test_item7_every_az_named_cmdlet_is_one_az_has() -> None:
    own = [n for n in public_names() if n not in AZ_CMDLETS]
    assert own == sorted(["Connect-Arcext", "Disconnect-Arcext", "Get-ArcextExtensionUpgradeHistory"])
    assert not [n for n in own if "-Az" in n], "arcext's own cmdlets have arcext nouns"


# --- Pester ----------------------------------------------------------------------------------------------
def test_the_pester_suite_covers_every_item() -> None:
    text = FIDELITY_PESTER.read_text()
    for item in range(1, 8):
        assert re.search(rf"Describe '(?:[^']|'')*\(item {item}\)'", text), item
    assert parse(FIDELITY_PESTER).root.has_error is False


def test_the_fixture_is_json_and_small() -> None:
    assert TABLE_FILE.stat().st_size < 100_000
    assert isinstance(json.loads(TABLE_FILE.read_text()), dict)
    assert Path(TABLE_FILE).suffix == ".json"
