"""The HTTP contracts: pydantic models of request and response bodies, shared by the servers that
answer with them and the clients that read them (backfill, gateway, audit)."""
