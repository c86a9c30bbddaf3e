"""The only code that runs SQL. Queries live in ``queries/*.sql``, migrations in ``migrations/``."""
