"""A scripted loopback server of the OpenAI Batch API (files and batches), for tests/test_batch.py.

It answers like the real API, with its state changes: a batch is ``validating`` when created,
then ``in_progress`` for ``in_progress_polls`` retrieves (or, with ``hold``, until ``release``
is set), ``finalizing``, and its end. Each request is answered deterministically from its
``seed`` (the call index with ``--seed 0``), exactly as ``scripted.Scripted`` answers the
same call synchronously, so a batch run and a synchronous run can be compared.

``outcomes[i]`` scripts the i-th batch created (default: completed, every request answered):
``end``: completed | expired | cancelled | failed (``code``: its error's code); ``fail``: {call: HTTP status} for requests
put in the error file; ``malformed``: calls whose answer has a number as content; ``answer``:
for expired / cancelled batches, how many requests were answered before the end.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

from aiohttp import web

from scripted import LoopbackServer, numbered


class ScriptedBatch(LoopbackServer):
    def __init__(self, outcomes: list[dict] | None = None, in_progress_polls: int = 2, hold: bool = False,
                 batches_api: bool = True, models=("scripted",), flaky_polls: int = 0):
        self.outcomes = outcomes or []
        self.in_progress_polls = in_progress_polls
        self.hold = hold
        self.release = threading.Event()
        self.batches_api = batches_api
        self.refuse_after: int | None = None  # retrieves answered before the key is refused (401)
        self.flaky_polls = flaky_polls  # the first retrieves answer 503, as a busy API does
        self.refuse_create_at: int | None = None  # this create (0 = the first) answered 400 once
        self.models = list(models)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.polls: Counter = Counter()
        self.history: dict[str, list[str]] = {}  # the statuses each batch was seen in, in order
        self.creates = 0
        self.uploads = 0
        self.deleted: list[str] = []  # the files deleted, in order
        self.in_progress_seen = 0
        self.submitted: list[list[int]] = []  # the calls of each batch, in creation order
        self.url = ""

    # ---------------------------------------------------------------- answers

    @staticmethod
    def completion(body: dict, content=None) -> dict:
        call = int(body.get("seed", 0))
        prompt = body["messages"][0]["content"]
        count = int(re.search(r"(?:Create|Write) (\d+) ", prompt).group(1))
        text = numbered(call, count) if content is None else content
        return {
            "id": f"c{call}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(str(text).split()), "total_tokens": 0},
        }

    def _finish(self, batch: dict) -> None:
        script = batch["script"]
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].decode().splitlines()]
        end = script.get("end", "completed")
        answered = len(lines) if end == "completed" else script.get("answer", 0)
        out, errs = [], []
        for i, line in enumerate(lines):
            call = int(line["body"].get("seed", 0))
            rid = f"req_{batch['id']}_{i}"
            if end == "failed":
                continue
            if i >= answered:
                if end == "expired":
                    errs.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                                 "error": {"code": "batch_expired", "message": "not executed before the window expired"}})
                continue
            if call in script.get("fail", {}):
                status = script["fail"][call]
                errs.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                             "response": {"status_code": status, "request_id": rid, "body": {"error": {"message": f"scripted {status}"}}}})
                continue
            content = 5 if call in script.get("malformed", ()) else None
            out.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": rid, "body": self.completion(line["body"], content)}})
        for kind, rows in (("output_file_id", out), ("error_file_id", errs)):
            if rows:
                fid = f"file-{kind[:3]}-{batch['id']}"
                self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[kind] = fid
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errs)}
        if end == "failed":
            code = script.get("code", "invalid_request")
            batch["errors"] = {"object": "list", "data": [{"code": code, "message": "scripted refusal", "line": None, "param": None}]}
        batch["status"] = end

    def _advance(self, batch: dict) -> None:
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return
        polls = self.polls[batch["id"]]
        self.polls[batch["id"]] += 1
        end = batch["script"].get("end", "completed")
        if polls == 0:
            batch["status"] = "in_progress"
        elif batch["status"] == "in_progress" and (self.hold and not self.release.is_set() or not self.hold and polls <= self.in_progress_polls):
            pass
        elif batch["status"] == "in_progress":
            batch["status"] = "cancelling" if end == "cancelled" else "finalizing"
        else:
            self._finish(batch)
        if batch["status"] == "in_progress":
            self.in_progress_seen += 1

    @staticmethod
    def public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "script"}

    # ---------------------------------------------------------------- endpoints

    async def _models(self, request):
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "t"} for m in self.models]})

    async def _upload(self, request):
        form = await request.post()
        upload = form["file"]
        fid = f"file-in-{self.uploads}"
        self.files[fid] = upload.file.read()
        self.uploads += 1
        return web.json_response({"id": fid, "object": "file", "bytes": len(self.files[fid]), "created_at": 0,
                                  "filename": upload.filename, "purpose": form["purpose"], "status": "processed"})

    async def _content(self, request):
        fid = request.match_info["fid"]
        if fid not in self.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=self.files[fid], content_type="application/octet-stream")

    async def _delete(self, request):
        fid = request.match_info["fid"]
        if self.files.pop(fid, None) is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        self.deleted.append(fid)
        return web.json_response({"id": fid, "object": "file", "deleted": True})

    async def _create(self, request):
        body = await request.json()
        if self.refuse_create_at == self.creates:
            self.refuse_create_at = None
            return web.json_response({"error": {"message": "scripted refusal of the create"}}, status=400)
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        bid = f"batch_{self.creates}"
        script = self.outcomes[self.creates] if self.creates < len(self.outcomes) else {}
        self.creates += 1
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines()]
        self.submitted.append([int(line["body"]["seed"]) for line in lines])
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None, "input_file_id": body["input_file_id"],
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": 0, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"), "script": script,
        }
        self.history[bid] = ["validating"]
        return web.json_response(self.public(self.batches[bid]))

    async def _retrieve(self, request):
        batch = self.batches.get(request.match_info["bid"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if self.refuse_after is not None and sum(self.polls.values()) >= self.refuse_after:
            return web.json_response({"error": {"message": "Incorrect API key provided"}}, status=401)
        if self.flaky_polls:
            self.flaky_polls -= 1
            return web.json_response({"error": {"message": "busy"}}, status=503)
        self._advance(batch)
        self.history[batch["id"]].append(batch["status"])
        return web.json_response(self.public(batch))

    async def _list(self, request):
        limit = int(request.query.get("limit", 20))
        data = [self.public(b) for b in reversed(list(self.batches.values()))][:limit]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        if self.batches_api:
            app.router.add_post("/v1/files", self._upload)
            app.router.add_get("/v1/files/{fid}/content", self._content)
            app.router.add_delete("/v1/files/{fid}", self._delete)
            app.router.add_post("/v1/batches", self._create)
            app.router.add_get("/v1/batches", self._list)
            app.router.add_get("/v1/batches/{bid}", self._retrieve)
