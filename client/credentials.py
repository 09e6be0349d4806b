"""Where the API token lives: the OS keyring, or the environment on CI runners.

``gpuhop login`` stores the gateway URL and token in the keyring under the
service ``gpuhop``; ``GPUHOP_GATEWAY`` + ``GPUHOP_TOKEN`` take precedence and
need no keyring at all. Keyring failures are translated here, once: a machine
without a backend (a CI container, a headless server) gets :class:`NoKeyring`,
whose one line says to use the variables instead.

keyring is imported only when a token is actually needed, since asking the OS
for its backend is slow and most ``gpuhop run`` invocations only need the
certificate already on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from client.errors import CredentialsError, NoKeyring, NotLoggedIn
from client.settings import KEYRING_SERVICE, ClientSettings, Secret

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

URL_ENTRY = "gateway"
TOKEN_ENTRY = "token"  # noqa: S105  (an entry name, not a secret)
NO_KEYRING = (
    "no OS keyring is available here; set GPUHOP_GATEWAY and GPUHOP_TOKEN in the environment"
)


@dataclass(frozen=True)
class Credentials:
    """A gateway URL and the bearer token that acts there."""

    url: str
    token: Secret
    source: str  # "environment" or "keyring"


def resolve(settings: ClientSettings) -> Credentials:
    """The credentials to use now: the environment first, then the keyring."""
    if settings.token is not None:
        url = settings.gateway_url
        if url is None:
            stored = _read(URL_ENTRY, quiet=True)
            if stored is None:
                raise NotLoggedIn("GPUHOP_TOKEN is set but GPUHOP_GATEWAY is not")
            url = stored
        return Credentials(url, settings.token, "environment")
    url = _read(URL_ENTRY)
    token = _read(TOKEN_ENTRY)
    if url is None or token is None:
        raise NotLoggedIn(
            "not logged in: run `gpuhop login GATEWAY_URL`, or set GPUHOP_GATEWAY and GPUHOP_TOKEN"
        )
    if settings.gateway_url is not None and settings.gateway_url != url:
        raise NotLoggedIn(
            f"GPUHOP_GATEWAY is {settings.gateway_url} but the stored login is for {url}; "
            "set GPUHOP_TOKEN too, or log in to that gateway"
        )
    return Credentials(url, Secret(token), "keyring")


def store(url: str, token: Secret) -> None:
    """Keep ``url`` and ``token`` in the keyring (replacing a previous login)."""
    backend = _backend()
    try:
        backend.set_password(KEYRING_SERVICE, URL_ENTRY, url)
        backend.set_password(KEYRING_SERVICE, TOKEN_ENTRY, token.get())
    except Exception as exc:
        raise _translate(exc) from None


def forget() -> bool:
    """Remove the stored login; False when there was none."""
    backend = _backend()
    import keyring.errors

    removed = False
    for entry in (TOKEN_ENTRY, URL_ENTRY):
        try:
            backend.delete_password(KEYRING_SERVICE, entry)
            removed = True
        except keyring.errors.PasswordDeleteError:
            pass
        except Exception as exc:
            raise _translate(exc) from None
    return removed


def _read(entry: str, *, quiet: bool = False) -> str | None:
    try:
        value = _backend().get_password(KEYRING_SERVICE, entry)
    except CredentialsError:
        if quiet:
            return None
        raise
    except Exception as exc:
        if quiet:
            return None
        raise _translate(exc) from None
    return value or None


def _backend() -> KeyringBackend:
    import keyring
    import keyring.backends.fail

    try:
        backend = keyring.get_keyring()
    except Exception as exc:
        raise _translate(exc) from None
    if isinstance(backend, keyring.backends.fail.Keyring):
        raise NoKeyring(NO_KEYRING)
    chained = getattr(backend, "backends", None)
    if chained is not None and not chained:
        raise NoKeyring(NO_KEYRING)
    return backend


def _translate(exc: Exception) -> CredentialsError:
    import keyring.errors

    if isinstance(exc, keyring.errors.NoKeyringError | keyring.errors.InitError):
        return NoKeyring(NO_KEYRING)
    if isinstance(exc, keyring.errors.KeyringLocked):
        return CredentialsError("the OS keyring is locked; unlock it, or set GPUHOP_TOKEN")
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CredentialsError(f"the OS keyring failed ({first}); or set GPUHOP_TOKEN")
