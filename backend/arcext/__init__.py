"""arcext: a self-hosted, Azure Arc-compatible control plane for VM-extension lifecycle."""

__version__ = "0.1.0"
