import socket

import pytest

from aieval_engine.local_server import free_port


def test_a_ranged_free_port_is_in_range_and_skips_busy_ports():
    port = free_port(18950, 18960)
    assert 18950 <= port <= 18960
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        other = free_port(18950, 18960)
        assert other != port and 18950 <= other <= 18960


def test_a_fully_busy_range_is_an_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="no free port"):
            free_port(port, port)
