"""charlm serve under load: 1, 8 and 32 concurrent clients against 127.0.0.1, each for a fixed time.

    python benchmarks/serve_load.py --run-dir RUN | --model MODEL [--seconds 30] [--clients 1,8,32]
                                    [--length 200] [--prefix "The "] [--limit NAME=VALUE ...] [--json PATH]
                                    [--openai]

It starts `charlm serve` on a free port of 127.0.0.1 (a subprocess), then for each number of clients runs
that many asyncio tasks, each sending POST /generate (unseeded samples of --length characters, so they are
batched) one after another for --seconds, with httpx. It checks every answer (200, one sample that starts
with the prefix and has --length characters or ends with a stop text) and prints one JSON object: per
number of clients, requests/s, characters/s, p50 and p99 latency, the complete well-formed answers and the
failures; and the ratio of the most clients' characters/s to one client's (the issue's goal: >= 4x at 32).

With --openai the clients are the `openai` package's AsyncOpenAI, streaming POST /v1/completions (max_tokens
= --length): each answer is checked assembled from its chunks (--length characters, or finish_reason
"stop"), and each row adds p50/p99 time to the first character (the first chunk with text).
Time it on a quiet machine: the figures are the machine's, and another load skews them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def start_server(source: list[str], limits: list[str]) -> tuple[subprocess.Popen, str]:
    """`charlm serve` (this checkout's) on a free port; the URL it prints once it listens."""
    flags = [item for limit in limits for item in ("--limit", limit)]
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", "serve", *source, "--port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        found = re.search(r"at (http://\S+) \(", lines.get(timeout=300))
    except queue.Empty:
        found = None
    if not found:
        process.kill()
        sys.exit("charlm serve did not start (see its error above)")
    return process, found.group(1)


def well_formed(response: httpx.Response, prefix: str, length: int) -> int | None:
    """The characters one answer generated, or None when it is not a complete, well-formed answer."""
    if response.status_code != 200:
        return None
    samples = response.json().get("samples")
    if not isinstance(samples, list) or len(samples) != 1:
        return None
    sample = samples[0]
    text, generated = sample.get("text"), sample.get("generated")
    complete = generated == length or (sample.get("stop") is not None and text.endswith(sample["stop"]))
    if not (isinstance(text, str) and text.startswith(prefix) and complete and len(text) == len(prefix) + generated):
        return None
    return generated


async def native_request(http: httpx.AsyncClient, body: dict) -> tuple[int | None, float | None]:
    """One POST /generate: (characters, None) or (None, None) when the answer is not complete and well-formed."""
    try:
        return well_formed(await http.post("/generate", json=body), body["prefix"], body["length"]), None
    except httpx.HTTPError:
        return None, None


async def streamed_completion(sdk, body: dict) -> tuple[int | None, float | None]:
    """One streamed /v1/completions through the SDK: (characters, seconds to the first) or (None, None)."""
    import openai

    started, first, text, finish = time.monotonic(), None, "", None
    try:
        stream = await sdk.completions.create(
            model="charlm", prompt=body["prefix"], max_tokens=body["length"], temperature=0.8, stream=True
        )
        async for chunk in stream:
            piece = chunk.choices[0].text if chunk.choices else ""
            if piece and first is None:
                first = time.monotonic() - started
            text += piece
            finish = chunk.choices[0].finish_reason if chunk.choices else finish
    except openai.OpenAIError:
        return None, None
    complete = len(text) == body["length"] or finish == "stop"
    return (len(text), first) if complete and first is not None else (None, None)


async def client(ask, body: dict, until: float, tally: dict) -> None:
    """Requests one after another until `until`: `ask(body)` gives (characters, seconds to the first) or None."""
    while time.monotonic() < until:
        started = time.monotonic()
        chars, first = await ask(body)
        if chars is None:
            tally["failed"] += 1
            continue
        tally["latencies"].append(time.monotonic() - started)
        if first is not None:
            tally["first"].append(first)
        tally["chars"] += chars


async def measure(url: str, clients: int, seconds: float, body: dict, *, sdk: bool = False) -> dict:
    tally = {"latencies": [], "first": [], "chars": 0, "failed": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        await http.post("/generate", json=body)  # warm: the batch step is built on the first request
        if sdk:  # imported and made before the clock starts (an import under load can take seconds)
            import openai

            api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, http_client=http)
            ask = functools.partial(streamed_completion, api)
        else:
            ask = functools.partial(native_request, http)
        started = time.monotonic()
        await asyncio.gather(*(client(ask, body, started + seconds, tally) for _ in range(clients)))
        elapsed = time.monotonic() - started
    latencies, first = sorted(tally["latencies"]), sorted(tally["first"])
    timings = {"first_char_p50_s": _at(first, 0.5), "first_char_p99_s": _at(first, 0.99)} if sdk else {}
    return {
        "clients": clients,
        "seconds": round(elapsed, 3),
        "complete": len(latencies),
        "failed": tally["failed"],
        "requests_per_s": len(latencies) / elapsed,
        "chars_per_s": tally["chars"] / elapsed,
        "p50_s": latencies[len(latencies) // 2] if latencies else None,
        "p99_s": _at(latencies, 0.99),
        **timings,
    }


def _at(ordered: list[float], share: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path)
    source.add_argument("--model", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0, help="per number of clients")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--prefix", default="The ")
    parser.add_argument("--limit", action="append", default=[], help="passed to charlm serve --limit")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--openai", action="store_true", help="stream /v1/completions with the openai package")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    where = ["--run-dir", str(args.run_dir)] if args.run_dir else ["--model", str(args.model)]
    process, url = start_server(where, args.limit)
    body = {"prefix": args.prefix, "length": args.length}
    try:
        rows = [asyncio.run(measure(url, n, args.seconds, body, sdk=args.openai)) for n in counts]
        facts = httpx.get(f"{url}/model", timeout=30).json()
    finally:
        process.terminate()
        process.wait(60)
    one, most = rows[0], rows[-1]
    ratio = most["chars_per_s"] / one["chars_per_s"] if one["chars_per_s"] else None
    route = "/v1/completions (openai SDK, streamed)" if args.openai else "/generate"
    result = {"model": facts, "route": route, "length": args.length, "prefix": args.prefix, "rows": rows}
    result["ratio"] = ratio
    result["ratio_of"] = f"{most['clients']} clients' chars/s to {one['clients']} client's"
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
