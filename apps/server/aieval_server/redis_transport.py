"""kombu's Redis transport, with acknowledgements that survive a Redis restart.

kombu's Redis QoS removes an acknowledged message from its "unacked" index in Redis *before* it forgets the
message in memory. When Redis is away at that moment (a job finished during a restart), the first step raises,
the second never runs, and the message stays "in delivery" for ever: with one message prefetched per slot
(`worker_prefetch_multiplier=1`) the worker then never takes another message, though it stays up and healthy
(seen in tests/integration/server/test_restarts.py).

Here the slot is freed whatever Redis answers. The index entry left behind is restored into the queue after the
visibility timeout (or when a worker starts): one extra message, which only makes a worker look for the fairest
queued job and finds none or a real one (services/scheduling.py)."""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag):
        try:
            self._remove_from_indices(delivery_tag).execute()
        except UNREACHABLE as exc:
            log.warning("Redis was unreachable while acknowledging a message (%s); its slot is freed anyway, and "
                        "the message may come back once as a spare", exc)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        except UNREACHABLE as exc:
            log.warning("Redis was unreachable while rejecting a message (%s); its slot is freed anyway", exc)
        virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
