"""Projects on the iTwin face: which thinghub project a request is about (`projectIds`).

thinghub projects are iTwin projects, and a project's id is its name. Devices that belong to
no project (IoT Central's, iTwin entities created without `projectIds`) form the account's
own project, whose id is the account's id (a UUID, which no project name can equal in
practice); it is what `PROJECT_ID` shows for them.

Rules (issue 9, seed "Working with Projects"; decisions where thinghub differs):

- `projectIds` omitted: everything the caller sees (the whole account, or the project its
  token is limited to). The seed's "Default Project" is the organization's view; thinghub
  devices registered on /v1 always have a project, and every thinghub device is visible here
  without extra steps. Entities created without `projectIds` go to the account's own project.
- `projectIds: [p]`: project `p` only, for lists and look-ups by id alike; the account's id
  names the devices without a project. A token limited to another project finds nothing
  there (not found, never forbidden: it cannot tell a project it may not see from one that
  does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from thinghub.domain.errors import NotFound
from thinghub.domain.ids import parse_id
from thinghub.domain.live import WILDCARD
from thinghub.domain.model import Device, Principal

__all__ = ["ANY_PROJECT", "Scope", "scope_of"]

ANY_PROJECT: Final = WILDCARD  # a live-feed key: every project the caller sees


@dataclass(frozen=True, slots=True)
class Scope:
    """Who asks (`principal`) and about which project.

    Attributes:
        project: the thinghub project (None: devices without one); ignored when `is_all`.
        is_all: no project was named: everything the principal sees.
    """

    principal: Principal
    project: str | None
    is_all: bool = False

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    @property
    def is_explicit(self) -> bool:
        return not self.is_all

    @property
    def write_project(self) -> str | None:
        """Where entities created in this scope go (the account's own project for all)."""
        return None if self.is_all else self.project

    @property
    def feed_project(self) -> str | None:
        """The project of a live feed of everything in this scope (ANY_PROJECT for all)."""
        return ANY_PROJECT if self.is_all else self.project

    def holds(self, device: Device) -> bool:
        """Whether `device` is in this scope (what lists show and look-ups find)."""
        if device.account_id != self.account_id:
            return False
        if self.is_all:
            return self.principal.sees(device.project)
        return device.project == self.project

    def project_id_of(self, device: Device) -> str:
        """The iTwin id of a device's project (PROJECT_ID)."""
        return device.project if device.project is not None else device.account_id


def scope_of(principal: Principal, project_id: str | None, field: str = "projectIds") -> Scope:
    """The scope of a request that gave `project_id` (None: omitted).

    Raises:
        Invalid: the id is not a project name (nor the account's id).
        NotFound: the principal is limited to another project.
    """
    if project_id is None:
        if principal.project is not None:
            return Scope(principal, principal.project)
        return Scope(principal, None, is_all=True)
    project = None if project_id == principal.account_id else parse_id(project_id, field)
    if principal.project is not None and project != principal.project:
        raise NotFound(f"project {project_id!r} not found", field=field)
    return Scope(principal, project)
