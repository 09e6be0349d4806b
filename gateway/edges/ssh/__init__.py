"""The gateway's SSH edge: the front server users connect to, and its legs to hosts."""
