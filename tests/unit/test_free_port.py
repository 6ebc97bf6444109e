"""free_port: a port for a server started next, which no outgoing connection can
take meanwhile and which is not handed out twice in a row."""

from __future__ import annotations

import socket

from shared.util.natsserver import ephemeral_range, free_port


def test_ports_lie_outside_the_ephemeral_range_and_differ() -> None:
    low, high = ephemeral_range()
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]


def test_a_port_something_listens_on_is_not_offered() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert taken not in {free_port() for _ in range(500)}
