"""The board through which gunicorn workers see each other's open connections (risk/api/worker.py)."""

from __future__ import annotations

import multiprocessing

from risk.api.worker import ConnectionBoard


def _publish(board: ConnectionBoard, slot: int, connections: int) -> None:
    board.publish(slot, connections)


def test_a_worker_sees_the_connections_another_process_publishes_and_not_its_own() -> None:
    board = ConnectionBoard()  # made before forking, as the arbiter does
    assert board.fewest_elsewhere(1) is None  # nobody else yet
    board.publish(1, 7)
    for slot, connections in ((2, 5), (3, 2)):
        child = multiprocessing.get_context("fork").Process(target=_publish, args=(board, slot, connections))
        child.start()
        child.join(timeout=30)
        assert child.exitcode == 0
    assert board.fewest_elsewhere(1) == 2
    assert board.fewest_elsewhere(3) == 5
    board.leave(3)  # a worker that stops takes its slot with it
    assert board.fewest_elsewhere(1) == 5
