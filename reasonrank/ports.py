"""A free TCP port for a server or a rendezvous about to start on this machine."""
from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to at `host` ("": every interface), chosen by the OS. Nothing reserves it: bind
    it soon, before another process takes it."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
