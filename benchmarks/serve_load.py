"""Load test of `qkv serve` on loopback: latency percentiles, throughput and errors as JSON.

    python benchmarks/serve_load.py --model runs/reverse [--requests 200 --concurrency 16]
        > benchmarks/results/serve_load.json
    python benchmarks/serve_load.py --model runs/reverse --engine ct2 --ct2-model exported/reverse-ct2

Starts `python -m qkv serve` on a free 127.0.0.1 port (and only there), sends `--requests`
POST /v1/translate requests (one short sentence each, from a fixed seed) with at most
`--concurrency` in flight, probes GET /health while the load runs, then stops the server.
Bounded in count and in time (`--timeout` seconds for the whole run). Waiting translations
with the same options are decoded together, so concurrency raises throughput; run with
`--concurrency 1` for the one-at-a-time baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import string
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

import httpx
import numpy as np

from qkv.entry import run_main
from qkv.files import atomic_write_bytes
from qkv.machine import describe

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def server(model: str, startup_timeout: float = 120.0, extra: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """`qkv serve --model MODEL [EXTRA]` in a child process on a free loopback port, answering
    /health; yields its URL and process id."""
    port = free_port()
    cmd = [sys.executable, "-m", "qkv", "serve", "--model", model, "--host", HOST, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"qkv serve exited: {proc.stderr.read().strip()[-500:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"qkv serve did not answer /health within {startup_timeout:.0f} s")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def sentences(n: int, seed: int) -> list[str]:
    """`n` lowercase words of 3-10 letters (inputs of the built-in reverse/copy/sort tasks)."""
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(n)]


async def run_load(url: str, texts: list[str], concurrency: int, body: dict) -> dict:
    """Send one request per text with at most `concurrency` in flight; probe /health meanwhile."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    health: list[float] = []
    done = asyncio.Event()

    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=httpx.Limits(max_connections=concurrency + 1)) as client:
        async def one(text: str) -> None:
            async with gate:
                start = time.perf_counter()
                try:
                    r = await client.post("/v1/translate", json={**body, "texts": [text]})
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                        return
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
                latencies.append(time.perf_counter() - start)

        async def probe() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await client.get("/health")
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.1)

        prober = asyncio.create_task(probe())
        start = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        wall = time.perf_counter() - start
        done.set()
        await prober
    return {"latencies": latencies, "errors": errors, "wall": wall, "health": health}


def percentiles_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.array(values) * 1000
    return {f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 90, 99)} | {"max": round(float(a.max()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run directory to serve")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole load")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--engine", default="qkv", help="qkv or ct2 (qkv serve --engine)")
    parser.add_argument("--ct2-model", default=None, help="with --engine ct2: the run exported by qkv export --format ct2")
    args = parser.parse_args()
    if not 1 <= args.requests <= 5000 or not 1 <= args.concurrency <= 64:
        raise SystemExit("keep the load bounded: 1-5000 requests, concurrency 1-64")

    texts = sentences(args.requests, args.seed)
    body = {"beam_size": args.beam}
    extra = ("--engine", args.engine) + (("--ct2-model", args.ct2_model) if args.ct2_model else ())
    with server(args.model, extra=extra) as (url, _):
        asyncio.run(run_load(url, texts[:8], min(args.concurrency, 8), body))          # warm-up
        result = asyncio.run(asyncio.wait_for(run_load(url, texts, args.concurrency, body), args.timeout))
    ok = len(result["latencies"])
    report = {
        "benchmark": "serve_load",
        "endpoint": "POST /v1/translate (one text per request)",
        "model": args.model,
        "engine": args.engine,
        "search": "greedy" if args.beam == 1 else f"beam {args.beam}",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "ok": ok,
        "errors": result["errors"],
        "wall_s": round(result["wall"], 2),
        "throughput_rps": round(ok / result["wall"], 1),
        "latency_ms": percentiles_ms(result["latencies"]),
        "health_during_load_ms": percentiles_ms(result["health"]),
        "machine": {**describe(), "load_avg_1m": round(os.getloadavg()[0], 1), "python": platform.python_version()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.out, (text + "\n").encode("utf-8"))


if __name__ == "__main__":
    sys.exit(run_main(main))
