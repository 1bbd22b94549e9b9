"""A message acknowledged while Redis is restarting still frees its consumer's slot (redis_transport.py).

With kombu's own Redis transport the failed acknowledgement leaves the message "in delivery" for ever: a consumer
allowed one message at a time (the worker's prefetch of 1) never takes another one. Checked against a private
redis-server (the machine's shared Redis is never stopped)."""

from __future__ import annotations

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis
from private_services import PrivateRedis

QUEUE = Queue("acks", Exchange("acks", type="direct"), routing_key="acks")


@pytest.fixture
def redis_server(tmp_path):
    server = PrivateRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def take_one(connection: Connection):
    """One message, with at most one in delivery at a time (as a worker slot takes them)."""
    channel = connection.default_channel
    channel.basic_qos(prefetch_size=0, prefetch_count=1)
    message = channel.basic_get(QUEUE.name, no_ack=False)
    assert message is not None
    return channel, message


def publish(connection: Connection, body: str) -> None:
    with connection.Producer() as producer:
        producer.publish(body, exchange=QUEUE.exchange, routing_key="acks", declare=[QUEUE], retry=True)


@pytest.mark.parametrize("transport, frees_the_slot", [
    ("aieval_server.redis_transport:Transport", True),
    (kombu_redis.Transport, False),  # the defect this transport fixes
])
def test_an_ack_while_redis_is_away_frees_the_slot(redis_server, transport, frees_the_slot):
    with Connection(redis_server.url, transport=transport) as connection:
        publish(connection, "first")
        channel, message = take_one(connection)
        assert not channel.qos.can_consume(), "one message in delivery: the slot is taken"

        redis_server.stop()
        try:
            message.ack()
        except Exception:  # noqa: BLE001 (kombu's transport raises; Celery logs it and goes on)
            assert not frees_the_slot, "the fixed transport must not raise"
        finally:
            redis_server.start()

        assert channel.qos.can_consume() is frees_the_slot
        if frees_the_slot:
            connection.close()  # the connection to the stopped server is gone; a new one takes the next message
            with Connection(redis_server.url, transport=transport) as again:
                publish(again, "second")
                _, second = take_one(again)
                assert second.payload == "second"
                second.ack()
