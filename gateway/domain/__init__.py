"""The domain: pure values and rules (policy, placement ranking, metering,
the audit chain, inventory). No I/O, no clock (passed in), no asyncssh, sqlalchemy,
fastapi, httpx, docker or textual."""
