"""Persistence: the Store protocol and its embedded TinyDB implementation."""

from .base import MachineDoc, Store
from .tinydb_store import TinyDBStore

__all__ = ["MachineDoc", "Store", "TinyDBStore"]
