"""Use cases the CLI and the TUI share; edges (click commands, screens) call these.

gateway.py    one SSH connection factory to the gateway, from the login
placement.py  the host a job runs on: the gateway's ranking, never a second one
images.py     make sure a host holds an image before a container job
ssh.py        the OpenSSH config and argv for a shell on a host
"""
