"""The algorithms both legs offer: modern only, unless compatibility is asked for.

asyncssh's defaults still include SHA-1 key exchange and MACs, CBC ciphers and
the ``ssh-rsa``/``ssh-dss`` signatures, so every connection the gateway makes
or accepts names its lists explicitly. Order is preference.

The default (``modern``) set is what ``ssh-audit`` passes with no ``[fail]`` and
no ``[warn]``: the ML-KEM hybrid first, then curve25519; no NIST ECDH (the
curves' provenance is doubted) and no finite-field DH groups (DHEat: a client
can make the server do the expensive modular exponentiation for free);
encrypt-then-MAC MACs only. OpenSSH >= 6.5, paramiko >= 3 and asyncssh all
connect with it. ``compatible`` adds, after the modern ones, the NIST ECDH
curves, DH group16/18 and the non-ETM SHA-2 MACs, for clients that offer
nothing modern (old embedded SSH stacks, some Java libraries): ``ssh-audit``
then warns, as it should.
"""

from __future__ import annotations

from typing import Any, Literal

AlgorithmSet = Literal["modern", "compatible"]

KEX_ALGS = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)

COMPAT_KEX_ALGS = (
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)

ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)

MAC_ALGS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)

COMPAT_MAC_ALGS = (
    "hmac-sha2-256",
    "hmac-sha2-512",
)

SIGNATURE_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def connection_algorithms(algorithm_set: AlgorithmSet = "modern") -> dict[str, Any]:
    """Keyword arguments for asyncssh connection options, on either leg."""
    compatible = algorithm_set == "compatible"
    return {
        "kex_algs": list(KEX_ALGS + (COMPAT_KEX_ALGS if compatible else ())),
        "encryption_algs": list(ENCRYPTION_ALGS),
        "mac_algs": list(MAC_ALGS + (COMPAT_MAC_ALGS if compatible else ())),
        "signature_algs": list(SIGNATURE_ALGS),
        "compression_algs": ["none"],
    }
