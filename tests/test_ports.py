"""The one free-port function every server, rendezvous and test cluster on this machine takes its port from."""
from __future__ import annotations

import socket

import pytest

from reasonrank.ports import free_port


@pytest.mark.parametrize("host", ["127.0.0.1", ""])
def test_a_free_port_takes_a_server_that_answers_on_it(host):
    port = free_port(host)
    assert 0 < port < 65536
    with socket.create_server((host, port)) as server, socket.create_connection(("127.0.0.1", port), timeout=5):
        accepted, _ = server.accept()
        accepted.close()

