"""The Microsoft.HybridCompute resources (machines and their extensions): the create, read, update
and delete rules (``service``), finishing their long-running operations on the host (``completion``)
and what a restart repairs (``recovery``)."""

from .service import ResourceService

__all__ = ["ResourceService"]
