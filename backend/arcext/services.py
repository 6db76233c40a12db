"""The domain objects one server holds, wired together (no Flask here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .auth import TokenService
from .catalog import Catalog
from .crypto import SecretBox
from .resources import ResourceService
from .store import Store, TinyDBStore
from .upgrades.clock import Clock, ManualClock, SystemClock


@dataclass
class Services:
    store: Store
    box: SecretBox
    clock: Clock
    tokens: TokenService
    catalog: Catalog
    resources: ResourceService

    @classmethod
    def open(cls, data_dir: Path, manual_clock: bool = False, seed_catalog: bool = True) -> Services:
        store = TinyDBStore(data_dir)
        box = SecretBox.from_data_dir(data_dir)
        clock: Clock = ManualClock() if manual_clock else SystemClock()
        catalog = Catalog(store)
        if seed_catalog:
            catalog.seed(clock.now())
        return cls(
            store=store,
            box=box,
            clock=clock,
            tokens=TokenService(store),
            catalog=catalog,
            resources=ResourceService(store, box, clock),
        )

    def start(self) -> None:
        self.resources.start()

    def close(self) -> None:
        self.resources.stop()
        self.store.close()
