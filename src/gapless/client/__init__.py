"""`gapless.client`: typed Python clients of the management server and the gateway, for
integrators and for the `gapless` command itself (the same pydantic models the servers answer with)."""

from gapless.client.api import ApiError, Federation, GatewayClient, ManagementClient

__all__ = ["ApiError", "Federation", "GatewayClient", "ManagementClient"]
