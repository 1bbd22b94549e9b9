"""The process' one request loop (oc_pool.request_loop) and what pools running on it at once share: one limiter per
model server, one request rate per model, one client per model (closed when the last pool using it ends)."""

from __future__ import annotations

import asyncio
import threading

from pool_inference import model_for

from aieval_engine import oc_pool
from aieval_engine.concurrency import shared_limiter


def on_request_loop(coroutine_function):
    """Run coroutine_function() on the request loop from a thread of its own, as a pair's inferencer does."""
    result = {}

    def call():
        result["value"] = asyncio.run_coroutine_threadsafe(coroutine_function(), oc_pool.request_loop()).result()

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(30)
    return result["value"]


def test_threads_share_one_request_loop_and_with_it_one_limiter_per_server_and_one_rate_per_model():
    settings = {"concurrency": 4, "max_concurrency": 16}
    model, other_model = model_for("http://127.0.0.1:9/v1", 4), model_for("http://127.0.0.1:9/v1", 4)

    async def shared_things():
        return (asyncio.get_running_loop(), shared_limiter("http://127.0.0.1:9/v1", settings),
                oc_pool.shared_rate(model, 5), oc_pool.shared_rate(other_model, 5))

    first, second = on_request_loop(shared_things), on_request_loop(shared_things)
    assert first[0] is second[0] is oc_pool.request_loop() and first[0].is_running()
    assert first[1] is second[1] and first[1].limit == 4  # one limiter for the server, whichever thread asks
    assert first[2] is second[2] and first[2] is not first[3]  # one rate per model


def test_pools_running_at_once_share_the_model_client_which_closes_after_the_last():
    model = model_for("http://127.0.0.1:9/v1", 4)

    async def two_pools():
        async with oc_pool.shared_client(model) as first:
            async with oc_pool.shared_client(model) as second:
                assert first is second
            assert model in oc_pool._shared_clients[asyncio.get_running_loop()]  # the first pool still uses it
        assert model not in oc_pool._shared_clients[asyncio.get_running_loop()]
        async with oc_pool.shared_client(model) as later:
            return first, later

    first, later = on_request_loop(two_pools)
    assert later is not first  # a pool after the others gets a fresh client
