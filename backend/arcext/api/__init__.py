"""HTTP only: flask-smorest blueprints, the ARM error envelope and the per-request hooks."""
