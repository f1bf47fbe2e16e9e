"""An independent MCP client for Agora's tests: the official Python SDK (`mcp` from PyPI),
talking streamable HTTP to the real server. The Rust tests (tests/e2e/mcp.rs) run it with a
command and a JSON input on stdin; it prints one JSON answer on stdout, and the Rust side
asserts on it and on the server's state.

Commands:
  tools      tools/list, resource templates and prompts
  session    as one agent, a list of tool calls in order; each answer is recorded
  many       several agents at once, each with its own session, each making its calls
  work       workers that claim, report and complete until nothing is pending
  resources  lists every resource (following cursors) and reads some
  prompts    gets the prompts
  connect    connects with the URL and header of a printed `claude mcp add` line
  refused    tries to connect with a token; prints how the connection failed
"""

import asyncio
import json
import shlex
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def result_of(r):
    """A tool result as JSON: whether it is an error, its text and its structured content."""
    texts = [c.text for c in r.content if getattr(c, "type", None) == "text"]
    return {
        "is_error": bool(r.is_error),
        "text": "\n".join(texts),
        "structured": r.structured_content,
    }


class Session:
    """One MCP session of one agent (the bearer token on every request)."""

    def __init__(self, url, token, mode):
        self.url, self.token, self.mode = url, token, mode

    async def __aenter__(self):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = create_mcp_http_client(headers=headers)
        await self.http.__aenter__()
        self.client = Client(
            streamable_http_client(self.url, http_client=self.http), mode=self.mode, cache=None
        )
        try:
            await self.client.__aenter__()
        except BaseException:
            await self.http.__aexit__(None, None, None)
            raise
        return self.client

    async def __aexit__(self, *exc):
        try:
            await self.client.__aexit__(*exc)
        finally:
            await self.http.__aexit__(None, None, None)


async def call(client, name, args):
    try:
        return result_of(await client.call_tool(name, args))
    except Exception as e:  # a protocol error, recorded for the test to judge
        return {"protocol_error": f"{type(e).__name__}: {e}"}


async def tools(inp):
    async with Session(inp["url"], inp["token"], inp.get("mode", "legacy")) as c:
        listed = await c.list_tools()
        templates = await c.list_resource_templates()
        prompts = await c.list_prompts()
        return {
            "protocol_version": c.protocol_version,
            "server": c.server_info.name if c.server_info else None,
            "instructions": c.instructions,
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.input_schema,
                    "read_only": bool(t.annotations and t.annotations.read_only_hint),
                }
                for t in listed.tools
            ],
            "templates": [t.uri_template for t in templates.resource_templates],
            "prompts": [p.name for p in prompts.prompts],
        }


async def session(inp):
    async with Session(inp["url"], inp["token"], inp.get("mode", "legacy")) as c:
        return [await call(c, step["tool"], step.get("args", {})) for step in inp["calls"]]


async def many(inp):
    """Each agent opens its session, then all make their calls at the same moment."""
    ready = asyncio.Barrier(len(inp["agents"]))

    async def one(agent):
        async with Session(inp["url"], agent["token"], inp.get("mode", "legacy")) as c:
            await ready.wait()
            return [await call(c, step["tool"], step.get("args", {})) for step in agent["calls"]]

    return await asyncio.gather(*(one(a) for a in inp["agents"]))


async def work(inp):
    """Workers claim (and the claim starts the task), report progress and complete, until a
    claim finds nothing pending; each returns the tasks it completed."""

    async def worker(token):
        done = []
        async with Session(inp["url"], token, inp.get("mode", "legacy")) as c:
            while True:
                claim = await call(c, "claim_task", {"wait_secs": inp.get("wait_secs", 2)})
                if claim.get("is_error") or "structured" not in claim:
                    return {"done": done, "failed_on": claim}
                claimed = claim["structured"]
                if claimed["task"] is None:
                    return {"done": done}
                task, lease = claimed["task"], claimed["lease_id"]
                progress = await call(c, "report_progress", {
                    "task_id": task["id"], "lease_id": lease,
                    "progress": 50, "message": "halfway",
                })
                if progress["is_error"]:
                    return {"done": done, "failed_on": progress}
                complete = await call(c, "complete_task", {
                    "task_id": task["id"], "lease_id": lease,
                    "result": {"did": task["task_spec"]},
                })
                if complete["is_error"]:
                    return {"done": done, "failed_on": complete}
                done.append(task["id"])

    return await asyncio.gather(*(worker(t) for t in inp["tokens"]))


async def resources(inp):
    async with Session(inp["url"], inp["token"], inp.get("mode", "legacy")) as c:
        listed, cursor, pages = [], None, 0
        while True:
            page = await c.list_resources(cursor=cursor)
            pages += 1
            listed += [{"uri": r.uri, "name": r.name, "mime_type": r.mime_type} for r in page.resources]
            cursor = page.next_cursor
            if not cursor:
                break
        reads = {}
        for uri in inp.get("read", []):
            try:
                got = await c.read_resource(uri)
                reads[uri] = {"text": got.contents[0].text, "mime_type": got.contents[0].mime_type}
            except Exception as e:
                reads[uri] = {"error": f"{type(e).__name__}: {e}"}
        return {"resources": listed, "pages": pages, "reads": reads}


async def prompts(inp):
    async with Session(inp["url"], inp["token"], inp.get("mode", "legacy")) as c:
        out = {}
        for name, args in inp["get"]:
            try:
                got = await c.get_prompt(name, args)
                out[name + json.dumps(args, sort_keys=True)] = {
                    "text": "\n".join(m.content.text for m in got.messages)
                }
            except Exception as e:
                out[name + json.dumps(args, sort_keys=True)] = {"error": f"{type(e).__name__}: {e}"}
        return out


async def connect(inp):
    """Runs the printed `claude mcp add` line as Claude Code would read it: its URL and header."""
    words = shlex.split(inp["line"])
    assert words[:5] == ["claude", "mcp", "add", "--transport", "http"], words
    name, url = words[5], words[6]
    header = words[words.index("--header") + 1]
    key, value = header.split(": ", 1)
    assert key == "Authorization" and value.startswith("Bearer "), header
    async with Session(url, value.removeprefix("Bearer "), inp.get("mode", "legacy")) as c:
        return {"name": name, "url": url, "whoami": await call(c, "whoami", {})}


async def refused(inp):
    try:
        async with Session(inp["url"], inp.get("token"), inp.get("mode", "legacy")) as c:
            await c.list_tools()
            return {"connected": True}
    except BaseException as e:  # an ExceptionGroup from the transport's task group, often
        return {"connected": False, "error": describe(e)}


def describe(e):
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


COMMANDS = {f.__name__: f for f in (tools, session, many, work, resources, prompts, connect, refused)}

if __name__ == "__main__":
    command = sys.argv[1]
    answer = asyncio.run(COMMANDS[command](json.load(sys.stdin)))
    print(json.dumps(answer))
