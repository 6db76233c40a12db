"""Progress on stderr (rich): a spinner while a long-running operation runs, a bar for rollouts.

Shown only when stderr is a terminal (``ARCEXT_PROGRESS=1`` forces it, ``=0`` hides it), so
piped output and scripts see nothing but the result on stdout and errors on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

Update = Callable[..., None]


def enabled() -> bool:
    forced = os.environ.get("ARCEXT_PROGRESS", "").strip().lower()
    if forced:
        return forced in {"1", "true", "yes", "always", "on"}
    return sys.stderr.isatty()


def _console() -> Console:
    return Console(file=sys.stderr, force_terminal=True, stderr=True)


def _noop(*_args: object, **_kwargs: object) -> None:
    return None


@contextmanager
def spinner(description: str) -> Iterator[Update]:
    """``update(description=...)`` changes the text; the line disappears when the wait ends."""
    if not enabled():
        yield _noop
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=_console(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(**fields: object) -> None:
            progress.update(task, **fields)  # type: ignore[arg-type]

        yield update


@contextmanager
def bar(description: str, total: int | None) -> Iterator[Update]:
    """``update(completed=n, total=m, description=...)`` moves the bar."""
    if not enabled():
        yield _noop
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(),
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(**fields: object) -> None:
            progress.update(task, **fields)  # type: ignore[arg-type]

        yield update
