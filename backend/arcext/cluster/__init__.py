"""Several arcext nodes on one PostgreSQL database: one leader schedules, every node runs jobs (docs/deploy.md)."""
