"""What PowerShell would do with a script that the fake host cannot run, read from the script itself
with tree-sitter-powershell: the static checks (``tests/test_ps1_static.py`` runs them over every
agent script, and over bad snippets to prove each can fail), and the facts the fake host's model
consults where a behaviour depends on the script text (variables a dot-sourced script leaves
behind, a ``Kill`` overload that Windows PowerShell 5.1's .NET Framework lacks).

Each check returns findings as ``"line:col rule: message"`` strings; an empty list passes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .scripts import _parser


@dataclass(frozen=True)
class Finding:
    line: int
    col: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.line}:{self.col} {self.rule}: {self.message}"


def _tree(text: str) -> Any:
    return _parser().parse(text.encode("utf-8")).root_node


def _nodes(root: Any, *kinds: str) -> Iterator[Any]:
    stack = [root]
    while stack:
        n = stack.pop()
        if n.type in kinds:
            yield n
        stack.extend(reversed(n.children))


def _at(node: Any, rule: str, message: str) -> Finding:
    return Finding(node.start_point[0] + 1, node.start_point[1] + 1, rule, message)


def _text(node: Any) -> str:
    return str(node.text.decode("utf-8"))


def _args(invocation: Any) -> list[Any]:
    """The argument expressions of a method invocation (``$x.M(a, b)`` / ``[T]::M(a)``)."""
    for child in invocation.children:
        if child.type == "argument_list":
            for sub in child.children:
                if sub.type == "argument_expression_list":
                    return [a for a in sub.children if a.type == "argument_expression"]
    return []


def _member(invocation: Any) -> str:
    for child in invocation.children:
        if child.type == "member_name":
            return _text(child)
    return ""


def _type_of(invocation: Any) -> str:
    """The type literal a static call is made on (``[System.IO.File]::X`` -> ``system.io.file``), or ''."""
    for child in invocation.children:
        if child.type == "type_literal":
            return _text(child).strip("[]").lower()
    return ""


# ==============================================================================================
# Commands and their parameters
# ==============================================================================================
@dataclass(frozen=True)
class CommandUse:
    node: Any
    name: str  # lower case
    parameters: tuple[str, ...]  # lower case, without the dash
    arguments: tuple[Any, ...]  # the element nodes that are not parameters

    def argument_of(self, parameter: str) -> Any | None:
        """The element after ``-parameter`` (``-LiteralPath $x`` -> the ``$x`` node)."""
        elements = [c for c in _elements(self.node) if c.type != "command_argument_sep"]
        for i, e in enumerate(elements):
            if e.type == "command_parameter" and _text(e).lstrip("-").rstrip(":").lower() == parameter:
                return elements[i + 1] if i + 1 < len(elements) else None
        return None


def _elements(command: Any) -> list[Any]:
    for child in command.children:
        if child.type == "command_elements":
            return list(child.children)
    return []


def commands(root: Any) -> Iterator[CommandUse]:
    for node in _nodes(root, "command"):
        name_nodes = [c for c in node.children if c.type == "command_name"]
        if not name_nodes:
            continue
        elements = _elements(node)
        params = tuple(_text(e).lstrip("-").rstrip(":").lower() for e in elements if e.type == "command_parameter")
        args = tuple(e for e in elements if e.type not in ("command_parameter", "command_argument_sep"))
        yield CommandUse(node, _text(name_nodes[0]).lower(), params, args)


def _has_param(use: CommandUse, *names: str) -> bool:
    """PowerShell accepts any unambiguous prefix of a parameter name; the scripts spell them out."""
    return any(p in names for p in use.parameters)


# ==============================================================================================
# The rules
# ==============================================================================================
#: .NET members a script may not call because Windows PowerShell 5.1 runs on .NET Framework 4.x,
#: which lacks them (type or "instance", member, the argument counts that do not exist there).
FRAMEWORK_MISSING: list[tuple[str, str, Callable[[int], bool], str]] = [
    ("instance", "kill", lambda n: n >= 1, "Process.Kill(bool) is .NET Core 3.0+; 5.1 has only Kill()"),
    ("instance", "waitforexitasync", lambda n: True, "Process.WaitForExitAsync is .NET 5+"),
    ("instance", "readtoendasync", lambda n: n >= 1, "ReadToEndAsync(CancellationToken) is .NET 7+"),
    ("system.io.path", "getrelativepath", lambda n: True, "Path.GetRelativePath is .NET Core 2.0+"),
    ("system.io.path", "join", lambda n: True, "Path.Join is .NET Core 2.1+"),
    ("system.io.path", "exists", lambda n: True, "Path.Exists is .NET 7+"),
    ("system.io.file", "readalltextasync", lambda n: True, "File.ReadAllTextAsync is .NET Core 2.0+"),
    ("system.io.file", "writealltextasync", lambda n: True, "File.WriteAllTextAsync is .NET Core 2.0+"),
    ("system.io.file", "move", lambda n: n >= 3, "File.Move(src, dst, overwrite) is .NET Core 3.0+"),
    ("system.io.directory", "createsymboliclink", lambda n: True, "Directory.CreateSymbolicLink is .NET 6+"),
    ("system.convert", "tohexstring", lambda n: True, "Convert.ToHexString is .NET 5+"),
    ("system.convert", "fromhexstring", lambda n: True, "Convert.FromHexString is .NET 5+"),
    ("system.security.cryptography.sha256", "hashdata", lambda n: True, "SHA256.HashData is .NET 5+"),
    ("system.environment", "processid", lambda n: True, "Environment.ProcessId is .NET 5+"),
    ("system.operatingsystem", "iswindows", lambda n: True, "OperatingSystem.IsWindows is .NET 5+"),
    ("system.io.compression.zipfile", "extracttodirectory", lambda n: n >= 3, "the overwrite overload is Core 2.0+"),
]
#: cmdlet parameters that exist only in PowerShell 6+ (cmdlet, parameter, why)
PWSH_ONLY_PARAMETERS = [
    ("convertfrom-json", "ashashtable", "ConvertFrom-Json -AsHashtable is PowerShell 6+"),
    ("convertfrom-json", "depth", "ConvertFrom-Json -Depth is PowerShell 6.2+"),
    ("convertfrom-json", "noenumerate", "ConvertFrom-Json -NoEnumerate is PowerShell 7+"),
    ("get-content", "asbytestream", "-AsByteStream is PowerShell 6+ (5.1: -Encoding Byte)"),
    ("set-content", "asbytestream", "-AsByteStream is PowerShell 6+ (5.1: -Encoding Byte)"),
    ("foreach-object", "parallel", "ForEach-Object -Parallel is PowerShell 7+"),
    ("join-path", "additionalchildpath", "Join-Path -AdditionalChildPath is PowerShell 6+"),
    ("get-childitem", "followsymlink", "Get-ChildItem -FollowSymlink is PowerShell 6+"),
]
PWSH_ONLY_COMMANDS = {"test-json": "Test-Json is PowerShell 6.1+", "get-error": "Get-Error is PowerShell 7+"}
#: tokens of PowerShell 7 syntax that 5.1 cannot parse (tree-sitter's grammar is 7's)
PWSH_ONLY_SYNTAX = [
    (re.compile(r"\?\?=?"), "the null-coalescing operator is PowerShell 7+"),
    (re.compile(r"\?\."), "the null-conditional member access is PowerShell 7+"),
    (re.compile(r"(?<![&|])(&&|\|\|)(?![&|])"), "pipeline chain operators (&&, ||) are PowerShell 7+"),
]
ENCODING_CMDLETS = {"set-content", "get-content", "add-content", "out-file", "export-csv", "import-csv"}


def check_framework_calls(root: Any) -> list[Finding]:
    """Calls of .NET members (or parameters, syntax) that Windows PowerShell 5.1 does not have."""
    out: list[Finding] = []
    for inv in _nodes(root, "invokation_expression"):
        member = _member(inv).lower()
        type_ = _type_of(inv)
        count = len(_args(inv))
        for owner, name, bad, why in FRAMEWORK_MISSING:
            if name != member:
                continue
            if (owner == "instance" and not type_) or (owner != "instance" and type_ in (owner, owner[7:])):
                if bad(count):
                    out.append(_at(inv, "framework-api", why))
    for member_access in _nodes(root, "member_access"):
        if _type_of(member_access) in ("system.environment", "environment"):
            if _member(member_access).lower() == "processid":
                out.append(_at(member_access, "framework-api", "Environment.ProcessId is .NET 5+ (use $PID)"))
    for use in commands(root):
        for cmdlet, param, why in PWSH_ONLY_PARAMETERS:
            if use.name == cmdlet and param in use.parameters:
                out.append(_at(use.node, "framework-api", why))
        if use.name in PWSH_ONLY_COMMANDS:
            out.append(_at(use.node, "framework-api", PWSH_ONLY_COMMANDS[use.name]))
        if use.name in ("set-content", "add-content", "out-file") and any(
            _text(a).strip("'\"").lower() in ("utf8nobom", "utf8bom") for a in use.arguments
        ):
            out.append(_at(use.node, "framework-api", "-Encoding utf8NoBOM/utf8BOM are PowerShell 6+"))
    for node in _nodes(root, "ternary_expression", "pipeline_chain_tail"):
        out.append(_at(node, "framework-api", "ternary and pipeline-chain operators are PowerShell 7+"))
    code = _code_only(root)
    for pattern, why in PWSH_ONLY_SYNTAX:
        for m in pattern.finditer(code):
            line = code.count("\n", 0, m.start()) + 1
            out.append(Finding(line, m.start() - code.rfind("\n", 0, m.start()), "framework-api", why))
    return out


def _code_only(root: Any) -> str:
    """The script text with comments and string literals blanked (same offsets)."""
    text = bytearray(root.text)
    for node in _nodes(root, "comment", "string_literal"):
        for i in range(node.start_byte, node.end_byte):
            if text[i] not in (10, 13):
                text[i] = 32
    return text.decode("utf-8", "replace")


def check_encoding(root: Any) -> list[Finding]:
    """Set-Content/Get-Content (and friends) without -Encoding: their default differs between 5.1
    (ANSI / UTF-16 for Out-File) and 7 (UTF-8 without BOM)."""
    return [
        _at(use.node, "encoding", f"{use.name} without -Encoding decodes/encodes differently on 5.1 and 7")
        for use in commands(root)
        if use.name in ENCODING_CMDLETS and not _has_param(use, "encoding", "asbytestream")
    ]


def check_bom_writes(root: Any) -> list[Finding]:
    """-Encoding UTF8 writes a BOM on 5.1 and none on 7: the same script writes different bytes."""
    out = []
    for use in commands(root):
        if use.name in ("set-content", "add-content", "out-file"):
            enc = use.argument_of("encoding")
            if enc is not None and _text(enc).strip("'\"").lower() in ("utf8", "unicode", "utf32", "default"):
                out.append(_at(use.node, "bom", f"{use.name} -Encoding {_text(enc)} writes different bytes on 5.1/7"))
    return out


_CMD = re.compile(r"(?i)\bcmd(\.exe)?['\"]?\s*(,\s*['\"])?\s*(?P<flags>(/\w\s*)*)/c\b")


def check_cmd_autorun(root: Any) -> list[Finding]:
    """``cmd.exe /c`` without ``/d`` runs the AutoRun registry commands first (and without ``/s``
    quoting of the command line is guessed)."""
    out = []
    for node in _nodes(root, "string_literal", "command"):
        text = _text(node)
        for m in _CMD.finditer(text):
            flags = (m.group("flags") or "").lower()
            if "/d" not in flags:
                out.append(_at(node, "cmd-autorun", "cmd.exe /c without /d (AutoRun commands run first)"))
        if node.type == "string_literal" and re.match(r"(?i)^['\"]\s*/c\b", text):
            out.append(_at(node, "cmd-autorun", "cmd.exe arguments '/c ...' without /d /s"))
    return out


#: the helpers that confine a path to its root (each script defines one; see the scripts)
CONFINING = {"resolve-confinedpath"}


def check_recursive_removal(root: Any) -> list[Finding]:
    """``Remove-Item -Recurse`` (which on 5.1 follows a planted junction out of the tree) is allowed
    only on a path the script confined to its root in the same script, and Expand-Archive (which on
    5.1 writes ``..\\`` entries outside the destination) not at all."""
    confined: set[str] = set()
    for assign in _nodes(root, "assignment_expression"):
        target = _text(assign.children[0]).strip().lower()
        rhs = assign.children[-1]
        if any(use.name in CONFINING for use in commands(rhs)):
            confined.add(target)
    out = []
    for use in commands(root):
        if use.name in ("remove-item", "rm", "del", "rmdir", "rd", "ri") and _has_param(use, "recurse", "r"):
            path = use.argument_of("literalpath") or use.argument_of("path")
            if path is None and use.arguments:
                path = use.arguments[0]
            if path is None or _text(path).strip().lower() not in confined:
                out.append(_at(use.node, "recursive-removal", "Remove-Item -Recurse on a path not confined"))
        if use.name == "expand-archive":
            out.append(_at(use.node, "recursive-removal", "Expand-Archive on 5.1 extracts ..\\ entries outside"))
    return out


def check_task_result(root: Any) -> list[Finding]:
    """``$task.Result`` (or ``.GetAwaiter().GetResult()``) blocks with no limit; only allowed after
    ``$task.Wait(<timeout>)`` on the same variable in the same script."""
    waited = set()
    for inv in _nodes(root, "invokation_expression"):
        if _member(inv).lower() == "wait" and _args(inv) and inv.children and inv.children[0].type == "variable":
            waited.add(_text(inv.children[0]).lower())
    out = []
    for node in _nodes(root, "member_access"):
        if _member(node).lower() == "result":
            owner = node.children[0]
            if owner.type != "variable" or _text(owner).lower() not in waited:
                out.append(_at(node, "task-result", f"{_text(node)} waits without a timeout"))
    for inv in _nodes(root, "invokation_expression"):
        if _member(inv).lower() == "getresult":
            out.append(_at(inv, "task-result", "GetAwaiter().GetResult() waits without a timeout"))
    return out


def check_first_of_json(root: Any) -> list[Finding]:
    """``@(... | ConvertFrom-Json)[0]``: on 5.1 ConvertFrom-Json writes a JSON array as one object,
    so ``[0]`` is the whole array."""
    out = []
    for node in _nodes(root, "element_access"):
        inner = node.children[0] if node.children else None
        if inner is not None and inner.type == "array_expression":
            if any(use.name == "convertfrom-json" for use in commands(inner)):
                out.append(_at(node, "json-first", "@(... | ConvertFrom-Json)[0] is the whole array on 5.1"))
    return out


def check_hardcoded_paths(root: Any) -> list[Finding]:
    """Drive-letter paths in string literals (use $env:ProgramData / $env:SystemDrive)."""
    return [
        _at(node, "hardcoded-path", f"hard-coded path {_text(node)[:40]}")
        for node in _nodes(root, "string_literal")
        if re.search(r"(?i)(^['\"]|[^\w])[a-z]:\\", _text(node))
    ]


def check_non_atomic_replace(root: Any) -> list[Finding]:
    """``Move-Item -Force`` over an existing file is delete-then-rename on 5.1 (a crash in between
    loses the file); use [System.IO.File]::Replace."""
    return [
        _at(use.node, "atomic-replace", "Move-Item -Force is delete-then-rename on 5.1")
        for use in commands(root)
        if use.name in ("move-item", "mv", "move") and _has_param(use, "force")
    ]


def check_progress_silenced(root: Any) -> list[Finding]:
    """Every script silences progress records (they are serialised to the client per item)."""
    for assign in _nodes(root, "assignment_expression"):
        if _text(assign.children[0]).strip().lower() == "$progresspreference":
            if "silentlycontinue" in _text(assign.children[-1]).lower():
                return []
    return [Finding(1, 1, "progress", "$ProgressPreference = 'SilentlyContinue' is missing")]


def check_folder_acl(root: Any) -> list[Finding]:
    """A script that creates folders gives them an ACL (Set-Acl with inheritance turned off): with
    the inherited ACL of C:\\ or C:\\ProgramData, local users could plant files in them."""
    creates = [
        use.node
        for use in commands(root)
        if (use.name in ("new-item", "ni") and any(_text(a).strip("'\"").lower() == "directory" for a in use.arguments))
        or use.name in ("mkdir", "md")
    ]
    creates += [inv for inv in _nodes(root, "invokation_expression") if _member(inv).lower() == "createdirectory"]
    if not creates:
        return []
    sets_acl = any(use.name == "set-acl" for use in commands(root))
    protects = any(
        _member(inv).lower() == "setaccessruleprotection" and _args(inv) and "$true" in _text(_args(inv)[0]).lower()
        for inv in _nodes(root, "invokation_expression")
    )
    if sets_acl and protects:
        return []
    return [_at(node, "folder-acl", "a folder created without a protected ACL") for node in creates]


_STREAM = re.compile(
    r"(?im)\$(?P<var>\w+)\s*=\s*(New-Object\s+System\.IO\.FileStream|\[System\.IO\.File\]::Open\w*\b"
    r"|\[System\.IO\.File\]::Create\b|\$\w+\.Open\(\))"
)


def check_stream_disposal(root: Any) -> list[Finding]:
    """A file stream is disposed in a ``try``/``finally`` right after it is opened: in a long-lived
    runspace an undisposed handle makes the next attempt fail with a sharing violation."""
    text = root.text.decode("utf-8")
    out = []
    for m in _STREAM.finditer(text):
        window = text[m.end() : m.end() + 400]
        tried = re.search(r"(?m)^\s*try\s*\{|\btry\s*\{", window)
        ok = False
        if tried:
            after = text[m.end() + tried.end() :]
            dispose = f"${m.group('var')}.dispose()"
            ok = any(
                dispose in after[fin.end() : fin.end() + 200].lower() for fin in re.finditer(r"\bfinally\s*\{", after)
            )
        if not ok:
            line = text.count("\n", 0, m.start()) + 1
            out.append(Finding(line, 1, "stream-dispose", f"${m.group('var')} is not disposed in a finally"))
    return out


def check_native_stderr(root: Any) -> list[Finding]:
    """A native command (``*.exe``) with its stderr redirected: Windows PowerShell 5.1 turns each
    stderr line into an ErrorRecord, which ``$ErrorActionPreference = 'Stop'`` makes terminating."""
    out = []
    for node in _nodes(root, "command"):
        text = _text(node)
        if re.search(r"(?i)\.exe\b", text) and re.search(r"(^|\s)2>", text):
            out.append(_at(node, "native-stderr", "a native command's redirected stderr throws on 5.1 under 'Stop'"))
    return out


RULES: dict[str, Callable[[Any], list[Finding]]] = {
    "framework-api": check_framework_calls,
    "encoding": check_encoding,
    "bom": check_bom_writes,
    "cmd-autorun": check_cmd_autorun,
    "recursive-removal": check_recursive_removal,
    "task-result": check_task_result,
    "json-first": check_first_of_json,
    "hardcoded-path": check_hardcoded_paths,
    "atomic-replace": check_non_atomic_replace,
    "progress": check_progress_silenced,
    "folder-acl": check_folder_acl,
    "stream-dispose": check_stream_disposal,
    "native-stderr": check_native_stderr,
}


def check(text: str, rules: list[str] | None = None) -> list[Finding]:
    root = _tree(text)
    out: list[Finding] = []
    for name in rules or list(RULES):
        out.extend(RULES[name](root))
    return sorted(out, key=lambda f: (f.line, f.col, f.rule))


# ==============================================================================================
# Facts the fake host's model consults
# ==============================================================================================
def kill_overloads(text: str) -> list[int]:
    """Argument counts of every ``$x.Kill(...)`` call in the script."""
    return [len(_args(inv)) for inv in _nodes(_tree(text), "invokation_expression") if _member(inv).lower() == "kill"]


def typed_variables(text: str) -> dict[str, str]:
    """Variables a script run in the caller's scope would leave type-constrained there: its
    script-level ``param()`` parameters with a type and ``[type]$x = ...`` casts (lower-case name
    -> lower-case type)."""
    root = _tree(text)
    out: dict[str, str] = {}
    blocks = [c for c in root.children if c.type == "param_block"]
    for block in blocks:
        for param in _nodes(block, "script_parameter"):
            name = ""
            type_ = ""
            for child in param.children:
                if child.type == "variable":
                    name = _text(child)[1:].lower()
                elif child.type == "attribute_list":
                    for attr in child.children:
                        literal = [c for c in attr.children if c.type == "type_literal"]
                        if literal:
                            type_ = _text(literal[0]).strip("[]").lower()
            if name and type_ and type_ not in ("string", "object", "psobject"):
                out[name] = type_
    for assign in _nodes(root, "assignment_expression"):
        m = re.fullmatch(r"\[([\w.]+)\]\s*\$(\w+)", _text(assign.children[0]).strip())
        if m and m.group(1).lower() not in ("string", "object", "psobject"):
            out[m.group(2).lower()] = m.group(1).lower()
    return out


def assigned_variables(text: str) -> dict[str, str]:
    """Variables the script assigns with ``$x = <expr>`` (lower-case name -> the right-hand side)."""
    out: dict[str, str] = {}
    for assign in _nodes(_tree(text), "assignment_expression"):
        m = re.fullmatch(r"\$(\w+)", _text(assign.children[0]).strip())
        if m:
            out.setdefault(m.group(1).lower(), _text(assign.children[-1]).strip())
    return out


def converts_to(type_: str, rhs: str) -> bool:
    """Whether PowerShell could convert the value of ``rhs`` to a variable constrained to ``type_``
    (conservative: only literals that obviously fit)."""
    if type_ in ("hashtable", "system.collections.hashtable"):
        return rhs.startswith("@{") or rhs == "$null"
    if type_ in ("int", "long", "int32", "int64", "double"):
        return bool(re.fullmatch(r"-?\d+|\$null|\[int\].*", rhs))
    if type_ in ("switch", "bool"):
        return rhs.lower() in ("$true", "$false")
    return False
