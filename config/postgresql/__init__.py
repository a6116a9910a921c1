"""Django's PostgreSQL backend with a pool that recovers from a server restart at once (base.py)."""
