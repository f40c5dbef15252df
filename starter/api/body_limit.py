"""A request body over 1 MiB is PAYLOAD_TOO_LARGE (413), refused before it is read whole (SPEC §5).

Pure ASGI, outermost: a declared Content-Length over the limit is refused before any of the body is
read; a body without one (chunked) is counted as it arrives and refused at the first byte past it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.codes import ErrorCode, default_message

MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _refuse(send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Read no further; whatever the app answers to the cut body is replaced below.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        answered = False

        async def answering_send(message: Message) -> None:
            nonlocal answered
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await _refuse(send)
            answered = answered or message["type"] == "http.response.start"

        try:
            await self.app(scope, counting_receive, answering_send)
        except Exception:
            # The app gave up on the cut body (a disconnect) instead of answering: the answer is ours.
            if not too_large:
                raise
            if not answered:
                await _refuse(send)


async def _refuse(send: Send) -> None:
    code = ErrorCode.PAYLOAD_TOO_LARGE
    body = json.dumps({"error": {"code": code, "message": default_message(code), "details": {}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code.http_status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
