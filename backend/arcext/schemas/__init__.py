"""marshmallow schemas: the ARM wire shapes of Microsoft.HybridCompute (api-versions 2024-07-10, 2026-07-15)."""
