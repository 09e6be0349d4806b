"""Client keys and user certificates for the tests, made with ``ssh-keygen``.

The tests need a user CA, client keys and short-lived certificates exactly as
OpenSSH makes them, so these wrap the real tool rather than re-implementing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuhop_sim.keys import run_keygen


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An ed25519 key on disk: private file, ``.pub`` file, and the public line."""

    private: Path
    public: Path
    public_line: str

    @property
    def cert(self) -> Path:
        """Where ``ssh-keygen -s`` writes this key's certificate (and ``ssh -i`` looks)."""
        return self.private.with_name(self.private.name + "-cert.pub")


def make_keypair(directory: Path, name: str, comment: str = "") -> KeyPair:
    """Generate ``directory/name`` (ed25519, no passphrase), or reuse it if present."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    public = private.with_name(name + ".pub")
    if not private.exists():
        run_keygen("-t", "ed25519", "-N", "", "-C", comment or name, "-f", str(private))
    return KeyPair(private, public, public.read_text().strip())


def sign_user_key(
    ca: KeyPair,
    key: KeyPair,
    principals: Sequence[str] = ("root",),
    validity: str = "+5m",
    identity: str = "test-user",
) -> Path:
    """Certify ``key`` as a user key signed by ``ca``; returns the certificate's path."""
    names = ",".join(principals)
    run_keygen("-s", str(ca.private), "-I", identity, "-n", names, "-V", validity, str(key.public))
    return key.cert
