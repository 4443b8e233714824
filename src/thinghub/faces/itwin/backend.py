"""What the iTwin face's socket and REST APIs share: the network, writes, observations, the
fan-out, and how callers authenticate and which scopes they need."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from thinghub.domain.errors import Forbidden, Unauthorized
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.faces.itwin.data import Observations
from thinghub.faces.itwin.fanout import Fanout
from thinghub.faces.itwin.network import Network
from thinghub.faces.itwin.sensor_metrics import SensorMetrics
from thinghub.faces.itwin.writes import EntityWriter
from thinghub.services.authz import authorize
from thinghub.services.core import Services

__all__ = [
    "ITWIN_SCOPES",
    "READ_DATA",
    "READ_PROJECTS",
    "WRITE_DATA",
    "WRITE_PROJECTS",
    "Backend",
    "MissingScope",
    "require",
]

# The OAuth2 scopes of POST /connect/token (seed, Sensor Data Service: "Required scopes").
READ_DATA: Final = frozenset({"sensor-data:read", "sensor-data:modify"})
WRITE_DATA: Final = frozenset({"sensor-data:modify"})
READ_PROJECTS: Final = frozenset({"itwins:read", "itwins:modify"})
WRITE_PROJECTS: Final = frozenset({"itwins:modify"})
ITWIN_SCOPES: Final = frozenset(
    {"sensor-data:read", "sensor-data:modify", "itwins:read", "itwins:modify", "users:read"}
)


class MissingScope(Forbidden):
    """An access token without the scope a call needs. The socket answers it as any refusal
    (-32003); REST answers 401, as the seed's Sensor Data Service says of a token that "does
    not have required scopes"."""


def require(principal: Principal, scopes: Collection[str], *, write: bool = False) -> None:
    """Check that `principal` may do this: with an access token that has scopes, one of
    `scopes`; when `write`, a role that changes devices (services.authz.authorize).

    Raises:
        MissingScope: naming the scope.
        Forbidden: naming the role.
    """
    if principal.scopes is not None and not principal.scopes & set(scopes):
        raise MissingScope(
            f"the access token needs the scope {' or '.join(sorted(scopes))}", field="scope"
        )
    if write:
        authorize(principal, Permission.DEVICES_WRITE)


@dataclass(frozen=True, slots=True)
class Backend:
    services: Services
    network: Network
    metrics: SensorMetrics
    writer: EntityWriter
    observations: Observations
    fanout: Fanout

    @classmethod
    def build(cls, services: Services) -> Backend:
        metrics = SensorMetrics(services)
        network = Network(services, metrics)
        observations = Observations(services, network, metrics)
        return cls(
            services,
            network,
            metrics,
            EntityWriter(services, network),
            observations,
            Fanout(services.live, network, observations),
        )

    async def authenticate(self, credential: str) -> Principal:
        """An API token or an access token (JWT from /connect/token or /v1/auth/token).

        Raises:
            Unauthorized: it is neither.
        """
        if not credential.strip():
            raise Unauthorized("the credential is empty", field="Authorization")
        return await self.services.auth.authenticate_bearer(credential)

    def now(self) -> float:
        """The server's time (the services' clock)."""
        return self.services.auth.clock.now()
