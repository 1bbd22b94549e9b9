"""WebSockets pushing evaluation updates. Each message carries the same data `show`/`list` return, so
clients may equally poll. The reading is shared: one reader per watched thing per process, whatever the
number of sockets (services/live_hub.py); a socket only forwards what its queue receives.

A socket outlives a restart of Redis or the database (the hub polls the database while Redis is away, and
waits while the database is away).

With sign-in on, a handshake without a valid session is refused before it is accepted (close 1008, HTTP 403):
main.create_app puts routers/deps.caller_dep on this router as on every other."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..schemas.ids import DatabaseId
from ..services.live_hub import Close, LiveHub, Subscription
from .deps import CurrentUser

router = APIRouter(tags=["live"])


def _hub(websocket: WebSocket) -> LiveHub:
    return LiveHub.of(websocket.app.state, websocket.app.state.settings)


async def _forward(websocket: WebSocket, subscription: Subscription) -> None:
    """Send what the subscription receives until it says to close or the client goes away."""

    async def notice_disconnect() -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                await websocket.receive_text()
        subscription.deliver(Close(None))

    listener = asyncio.create_task(notice_disconnect())
    try:
        while True:
            item = await subscription.next()
            if isinstance(item, Close):
                if item.code is not None:
                    await websocket.close(code=item.code)
                return
            await websocket.send_text(item)
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away while a message was being sent
    finally:
        listener.cancel()
        subscription.cancel()


@router.websocket("/evaluations/{evaluation_id}/ws")
async def evaluation_updates(websocket: WebSocket, evaluation_id: DatabaseId, caller: CurrentUser):
    """`{"type": "update", "evaluation": <show>}` now and on every change, `{"type": "log", "lines": [...]}`
    as the run logs (with Redis); closed with 1000 once the evaluation is final, 4404 if there is none or the
    caller may not read it (the same answer: services/access.py)."""
    await websocket.accept()
    await _forward(websocket, _hub(websocket).watch_evaluation(evaluation_id, caller))


@router.websocket("/evaluations/ws")
async def list_updates(websocket: WebSocket, caller: CurrentUser):
    """`{"type": "evaluations", "items": [<summary>...]}`: the newest evaluations and every active one now,
    then the items whose revision changed; only those the caller may read."""
    await websocket.accept()
    await _forward(websocket, _hub(websocket).watch_list(caller))
