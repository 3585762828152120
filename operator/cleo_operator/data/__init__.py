"""PostgreSQL: tenant databases and roles, replication lag, promotion, connection pools."""
