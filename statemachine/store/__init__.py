"""PostgreSQL: the models, the queries, leases and scheduling, the outbox and the incident records."""
