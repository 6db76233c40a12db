"""The agent scripts as they reach a Windows host: each ``scripts/<Name>.ps1`` with the arcext common
block (``scripts/AgentCommon.ps1``, the one copy of the helpers) put in place of its include line.

A script file holds the line ``# --- arcext common block: AgentCommon.ps1 ---`` (indented as the code
around it) where the helpers belong; :func:`script_text` replaces it with the block, indented the
same, so every script still carries its helpers in its own scope (psrp sends the composed text, the
winrm bootstrap uploads it, the handler task runs it from its file) and nothing on the host reads
another file. The composed text is what the drivers hash, send and verify, what the fake host
recognises, and what the static checks read.
"""

from __future__ import annotations

from importlib import resources

#: the file that holds the common block; not an agent script of its own (never sent alone)
COMMON = "AgentCommon"
#: the line in a script that the common block replaces (after any indentation)
INCLUDE = f"# --- arcext common block: {COMMON}.ps1 ---"
#: the first and last lines of the block itself
BLOCK_START = "# --- arcext common block"
BLOCK_END = "# --- end of the arcext common block ---"


def _read(name: str) -> str:
    return (resources.files("arcext.hosts") / "scripts" / f"{name}.ps1").read_text(encoding="utf-8")


def script_names() -> list[str]:
    """Every agent script (the names of ``scripts/*.ps1``, the common block's file left out)."""
    folder = resources.files("arcext.hosts") / "scripts"
    return sorted(
        p.name.removesuffix(".ps1") for p in folder.iterdir() if p.name.endswith(".ps1") and p.name != f"{COMMON}.ps1"
    )


def source_text(name: str) -> str:
    """The script's own file, include line and all (what the repository holds, not what runs)."""
    return _read(name)


def common_block() -> str:
    """The arcext common block, from its start line to its end line (with the end line's newline)."""
    lines = _read(COMMON).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(BLOCK_START))
    return "".join(lines[start:])


def compose(source: str) -> str:
    """``source`` with each include line replaced by the common block, indented like the line."""
    block = common_block()
    out: list[str] = []
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == INCLUDE:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + b if b.strip() else b for b in block.splitlines(keepends=True))
        else:
            out.append(line)
    return "".join(out)


def script_text(name: str) -> str:
    """What runs on the host for ``scripts/<name>.ps1``: its file with the common block composed in."""
    if name == COMMON:
        raise ValueError(f"{COMMON}.ps1 is the common block, not an agent script")
    return compose(_read(name))
