"""The scripted OpenAI-compatible chat server: a real loopback HTTP server whose answers are
scripted per call and attempt, for the faults a real server will not produce on demand (429 with
Retry-After, 500, a hang, a dropped connection, malformed and refused answers).

Shared by the test modules (``from scripted import Scripted``, as ``scripted_batch`` is imported);
``tests/scripted_batch.py`` answers each call of a batch exactly as ``Scripted`` answers it.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from urllib.parse import urlsplit

from aiohttp import web

_WORDS = (
    "son daughter toddler asthma inhaler autism speech therapy ADHD school nurse doctor night cough "
    "words diagnosis proud tired hopeful meltdown bedtime teacher appointment waiting list breakfast "
    "stims sensory puffer nebulizer ER weekend grandma park swing blocks letters counting focus homework "
    "meds dose spacer wheeze playground daycare evaluation IEP flashcards bubbles trampoline lego dinosaurs"
).split()


def fake_post(call: int, item: int) -> str:
    rng = random.Random(f"{call}-{item}")
    return f"call {call} item {item}: " + " ".join(rng.sample(_WORDS, 12))


def numbered(call: int, count: int) -> str:
    return "\n".join(f"{i}. {fake_post(call, i)}" for i in range(1, count + 1))


class LoopbackServer:
    """An aiohttp app on 127.0.0.1 (a free port) in a thread of its own, for ``with``; subclasses
    add their handlers in :meth:`routes`. ``url`` is the OpenAI-style base URL (``.../v1``)."""

    url = ""
    #: a base URL to come back at (its port): a resumed run must meet the server that answered first,
    #: since the call cache's key names the server (``backends.cache_identity``); None: a free port
    at: str | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def __enter__(self):
        app = web.Application()
        self.routes(app)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", urlsplit(self.at).port if self.at else 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Scripted(LoopbackServer):
    """An OpenAI-compatible chat server whose answers are scripted per call and attempt.

    The call index is read from the request's ``seed`` (with ``--seed 0`` they are equal).
    ``script[call]`` lists actions for the call's successive attempts; afterwards it answers
    a clean numbered list. Actions: ("429", retry_after), ("500",), ("hang", seconds),
    ("drop",), ("content", text[, finish_reason]), ("body", raw JSON text of a 200 answer),
    ("error", status, message).

    ``json_forms``: the ``response_format`` types it takes (answering ``{"posts": [...]}``); a
    request with another one gets HTTP 400 (as from a server without structured outputs),
    before it is counted. ``formats`` records the ``response_format`` of every chat request.
    """

    def __init__(self, script: dict[int, list[tuple]] | None = None, delay: float = 0.0, models=("scripted",), json_forms=(),
                 at: str | None = None):
        self.at = at
        self.json_forms = tuple(json_forms)
        self.formats: list = []
        self.script = script or {}
        self.delay = delay
        self.models = list(models)
        self.attempts: Counter = Counter()
        self.times: dict[int, list[float]] = defaultdict(list)
        self.auth: list[str | None] = []
        self.url = ""

    async def _models(self, request):
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "t"} for m in self.models]})

    async def _chat(self, request):
        body = await request.json()
        rf = body.get("response_format")
        self.formats.append(rf)
        if rf is not None and rf.get("type") not in self.json_forms:
            return web.json_response({"error": {"message": f"response_format type {rf.get('type')} is not supported"}}, status=400)
        call = int(body.get("seed", 0))
        self.auth.append(request.headers.get("Authorization"))
        attempt = self.attempts[call]
        self.attempts[call] += 1
        self.times[call].append(time.monotonic())
        actions = self.script.get(call, [])
        action = actions[attempt] if attempt < len(actions) else ("ok",)
        prompt = body["messages"][0]["content"]
        count = int(re.search(r"(?:Create|Write) (\d+) ", prompt).group(1))
        if self.delay:
            await asyncio.sleep(self.delay)
        kind = action[0]
        if kind == "429":
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit"}}, status=429, headers={"Retry-After": str(action[1])})
        if kind == "500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if kind == "error":
            return web.json_response({"error": {"message": action[2]}}, status=action[1])
        if kind == "body":
            return web.Response(text=action[1], content_type="application/json")
        if kind == "hang":
            await asyncio.sleep(action[1])
        if kind == "drop":
            request.transport.abort()
            return web.Response()
        content, finish = numbered(call, count), "stop"
        if rf is not None:
            content = json.dumps({"posts": [fake_post(call, i) for i in range(1, count + 1)]})
        if kind == "content":
            content = action[1]
            finish = action[2] if len(action) > 2 else "stop"
        return web.json_response({
            "id": f"c{call}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split()), "total_tokens": 0},
        })

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
