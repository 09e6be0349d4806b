"""The inventory: which regions, hosts, roles and users exist, and lookups over them.

Built once from config (``Settings.inventory()``) and never mutated; services
share one instance. Lookups are exact: names, key blobs and (address, port)
pairs are compared as given, with no DNS, case folding or address parsing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.domain.inventory.keys import blob_algorithm, decode_blob, parse_public_key
from gateway.domain.models import Host, Region, Role, User
from gateway.errors import ConfigError, KeyMaterialError

#: The port clients name when they say "ssh to host X" (``ssh -J gw sg-1``).
SSH_PORT = 22

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Inventory:
    """Regions, hosts, roles and users, indexed by name (and users by key)."""

    hosts: tuple[Host, ...] = ()
    regions: tuple[Region, ...] = ()
    roles: tuple[Role, ...] = ()
    users: tuple[User, ...] = ()
    _hosts: dict[str, Host] = field(init=False, repr=False, compare=False)
    _endpoints: dict[tuple[str, int], Host] = field(init=False, repr=False, compare=False)
    _roles: dict[str, Role] = field(init=False, repr=False, compare=False)
    _users: dict[str, User] = field(init=False, repr=False, compare=False)
    _keys: dict[bytes, User] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = _index("host", ((h.name, h) for h in self.hosts))
        endpoints = _index("host address", (((h.address, h.port), h) for h in self.hosts))
        _index("region", ((r.name, r) for r in self.regions))
        roles = _index("role", ((r.name, r) for r in self.roles))
        users = _index("user", ((u.name, u) for u in self.users))
        keys: dict[bytes, User] = {}
        for user in self.users:
            for line in user.keys:
                try:
                    blob = parse_public_key(line).blob
                except KeyMaterialError as exc:
                    raise ConfigError(f"user {user.name}: bad key: {exc}") from None
                other = keys.setdefault(blob, user)
                if other is not user:
                    raise ConfigError(
                        f"user {user.name}: key is already registered to {other.name}"
                    )
        object.__setattr__(self, "_hosts", hosts)
        object.__setattr__(self, "_endpoints", endpoints)
        object.__setattr__(self, "_roles", roles)
        object.__setattr__(self, "_users", users)
        object.__setattr__(self, "_keys", keys)

    def host(self, name: str) -> Host | None:
        """The host called ``name``, if declared."""
        return self._hosts.get(name)

    def user(self, name: str) -> User | None:
        """The user called ``name``, if declared."""
        return self._users.get(name)

    def role(self, name: str) -> Role | None:
        """The role called ``name``, if declared."""
        return self._roles.get(name)

    def roles_of(self, user: User | str) -> tuple[Role, ...]:
        """The user's roles in the user's order; names that match no role are skipped."""
        found = self._users.get(user) if isinstance(user, str) else user
        if found is None:
            return ()
        return tuple(self._roles[r] for r in found.roles if r in self._roles)

    def user_for_key(self, key: str | bytes) -> User | None:
        """The user who registered ``key``, or None.

        ``key`` may be a one-line public key (comment ignored), its base64 data
        alone, or the raw wire blob (what an SSH library reports after auth).
        """
        if isinstance(key, bytes):
            return self._keys.get(key)
        parts = key.split()
        try:
            if len(parts) == 1:
                return self._keys.get(decode_blob(parts[0]))
            if len(parts) >= 2:
                blob = decode_blob(parts[1])
                if blob_algorithm(blob) == parts[0]:
                    return self._keys.get(blob)
        except KeyMaterialError:
            pass
        return None

    def resolve_forward(self, dest_host: str, dest_port: int) -> Host | None:
        """The inventory host a forwarding request (direct-tcpip) names, or None to refuse.

        Strict on purpose: the gateway must never become an open proxy. A
        request is honoured only when it names a declared host exactly:

        * by inventory name, on port 22 (what ``ssh -J gw NAME`` sends) or the
          host's own SSH port; the caller then connects to the host's real
          address and port, never to anything the client supplied;
        * by the host's configured address *string* and exactly its port.

        Nothing is normalised: "127.1", "localhost", "::ffff:127.0.0.1", a
        trailing dot or a different case are other spellings that would let a
        client reach services the inventory never declared (the gateway's own
        listeners, a database on the same box), so they are refused, as is any
        other port on a declared address.
        """
        if not dest_host or isinstance(dest_port, bool):
            return None
        host = self._hosts.get(dest_host)
        if host is not None and dest_port in (SSH_PORT, host.port):
            return host
        return self._endpoints.get((dest_host, dest_port))


def _index(kind: str, items: Iterable[tuple[_K, _V]]) -> dict[_K, _V]:
    """A dict of ``items``; a repeated key is a config error, not a silent overwrite."""
    index: dict[_K, _V] = {}
    for key, value in items:
        if key in index:
            shown = ":".join(map(str, key)) if isinstance(key, tuple) else key
            raise ConfigError(f"duplicate {kind} {shown}")
        index[key] = value
    return index
