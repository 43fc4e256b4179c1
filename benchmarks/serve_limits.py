"""Memory of `qkv serve` before and after oversize request bodies, as JSON.

    python benchmarks/serve_limits.py --model runs/reverse [--megabytes 100 --repeat 3]

Starts `python -m qkv serve` on a free 127.0.0.1 port (and only there), answers a few ordinary
translations, reads the server's resident memory (VmRSS), then offers `--repeat` chunked bodies and
one Content-Length body of `--megabytes` MiB each, over raw sockets, and reads the memory again a
second later. Reports what each oversize request got (its status, and how many bytes the client
could send before the server refused, the kernel's socket buffers included) and the memory ratio
after/before (the server's promise: within 1.10). Linux only (/proc).
Bounded: every socket operation times out after 30 s, every body stops at `--megabytes`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import time
from pathlib import Path

from qkv.entry import run_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import HOST, server  # noqa: E402  (the same child server as the load benchmark)

CHUNK = 1 << 16
PREFIX = b'{"texts": ["'   # a body that would be JSON, were it not cut off


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def exchange(port: int, head: bytes, body_chunks, timeout: float = 30.0) -> tuple[int | None, int]:
    """Send `head` then the chunks until the server stops taking them; (status or None, bytes the client got into the socket: the server read them or the kernel buffered them)."""
    sent = 0
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while len(answer) < 1 << 16:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
    return status, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run directory")
    parser.add_argument("--megabytes", type=int, default=100, help="size of each oversize body (MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="chunked oversize requests")
    args = parser.parse_args()
    with server(args.model) as (url, pid):
        port = int(url.rsplit(":", 1)[1])
        head = f"POST /v1/translate HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        small = b'{"texts": ["abc"], "max_new_tokens": 5}'
        for _ in range(5):
            exchange(port, f"{head}Content-Length: {len(small)}\r\nConnection: close\r\n\r\n".encode(), [small])
        time.sleep(1)
        before = rss_mib(pid)
        total = args.megabytes << 20
        piece = b"a" * CHUNK
        results = []
        for _ in range(args.repeat):
            framed = b"%x\r\n%s\r\n" % (CHUNK, piece)
            chunks = itertools.chain([b"%x\r\n%s\r\n" % (len(PREFIX), PREFIX)], itertools.repeat(framed, total // CHUNK),
                                     [b"0\r\n\r\n"])
            status, sent = exchange(port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode(), chunks)
            results.append({"kind": "chunked", "status": status, "bytes_sent": sent})
        chunks = itertools.repeat(piece, total // CHUNK)
        status, sent = exchange(port, f"{head}Content-Length: {total}\r\n\r\n".encode(), chunks)
        results.append({"kind": "content-length", "status": status, "bytes_sent": sent})
        time.sleep(1)
        after = rss_mib(pid)
    print(json.dumps({"body_mib": args.megabytes, "requests": results, "rss_before_mib": round(before, 1),
                      "rss_after_mib": round(after, 1), "ratio": round(after / before, 3)}, indent=1))


if __name__ == "__main__":
    sys.exit(run_main(main))
