"""`tunesmith serve` under load, beside `tunesmith predict` on the same texts in one batch.

The run's own test texts (cycled to --requests) go one per request from --concurrency clients at once to a
`tunesmith serve` process started here; the table gives latency p50/p99, requests/s, errors and the server's
peak RSS (VmHWM). Rows: micro-batching on (the default), micro-batching off (`--max-batch-size 1`: one model
call per request), one client at a time, and each --also folder (an ONNX export, say). The reference is the
same texts through `tunesmith predict --input` in one batch: its texts/s with the model loaded, and the
command's whole wall time. Server and client share this machine's cores: the client's share is in the
numbers, as it is when a service and its caller share a host.

Usage: tunesmith demo && python bench/serve.py [RUN] [--requests 1000] [--concurrency 32] [--also FOLDER ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tunesmith.utils import cpu_name


def test_texts(run: Path, n: int) -> list[str]:
    split = run / "splits" / "test.jsonl"
    if not split.is_file():
        sys.exit(f"{split} not found: run `tunesmith demo` first, or give a classifier run folder")
    texts = [json.loads(line)["text"] for line in split.read_text(encoding="utf-8").splitlines() if line]
    return [texts[i % len(texts)] for i in range(n)]


class Server:
    """`tunesmith serve FOLDER` in its own process, on a free port."""

    def __init__(self, folder: Path, *flags: str) -> None:
        cmd = [sys.executable, "-m", "tunesmith.cli", "serve", f"m={folder}", "--port", "0", *flags]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.url = ""
        while not self.url:
            line = self.proc.stderr.readline()
            if not line:
                sys.exit(f"the server did not start: {' '.join(cmd)}")
            if "listening on " in line:
                self.url = line.split("listening on ")[1].split()[0]

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


async def fire(url: str, texts: list[str], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            text = queue.get_nowait()
            start = time.perf_counter()
            reply = await http.post("/v1/classify", json={"input": text})
            latencies.append(time.perf_counter() - start)
            if reply.status_code != 200 or "label" not in reply.json()["data"][0]:
                errors += 1

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        for t in texts[:20]:  # warm-up: first calls allocate
            await http.post("/v1/classify", json={"input": t})
        before = (await http.get("/health")).json()["batching"]["m"]
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - start
        after = (await http.get("/health")).json()["batching"]["m"]
    q = statistics.quantiles(latencies, n=100)
    per_call = (after["texts"] - before["texts"]) / max(after["model_calls"] - before["model_calls"], 1)
    return {"p50": q[49] * 1000, "p99": q[98] * 1000, "rps": len(texts) / wall, "errors": errors, "batch": per_call}


def serve_row(folder: Path, texts: list[str], concurrency: int, *flags: str) -> dict[str, float]:
    server = Server(folder, "--device", "cpu", *flags)
    try:
        row = asyncio.run(fire(server.url, texts, concurrency))
        row["rss"] = server.peak_rss_mb()
    finally:
        server.stop()
    return row


def predict_row(run: Path, texts: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "texts.csv", Path(tmp) / "out.csv"
        import pandas as pd

        pd.DataFrame({"text": texts}).to_csv(src, index=False)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tunesmith.cli",
                "predict",
                str(run),
                "--input",
                str(src),
                "--output",
                str(out),
                "--text-column",
                "text",
                "--device",
                "cpu",
            ],
            check=True,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - start
    from tunesmith.inference import load_run, predict_texts

    model = load_run(run, "cpu")
    predict_texts(model, texts[:20])
    start = time.perf_counter()
    predict_texts(model, texts)
    return {"rps": len(texts) / (time.perf_counter() - start), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", default="runs/demo")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--also", nargs="*", default=[], help="more folders to serve at --concurrency (exports)")
    args = parser.parse_args()
    run = Path(args.run)
    texts = test_texts(run, args.requests)
    n, c = args.requests, args.concurrency
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {n} requests of one text from {run}'s test split")
    rows = [
        (f"serve, concurrency {c}", serve_row(run, texts, c)),
        (f"serve, concurrency {c}, --max-batch-size 1", serve_row(run, texts, c, "--max-batch-size", "1")),
        ("serve, concurrency 1", serve_row(run, texts[: max(n // 5, 50)], 1)),
        *[(f"serve {Path(a).name}, concurrency {c}", serve_row(Path(a), texts, c)) for a in args.also],
    ]
    reference = predict_row(run, texts)
    print()
    print("| setup | p50 ms | p99 ms | requests/s | errors | texts per model call | server peak RSS | vs predict |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        ratio = r["rps"] / reference["rps"]
        print(
            f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['rps']:.1f} | {r['errors']:.0f} | {r['batch']:.1f} | "
            f"{r['rss']:.0f} MB | {ratio:.2f}x |"
        )
    loaded = f"{reference['rps']:.1f} texts/s (model loaded)"
    print(f"| `tunesmith predict`, one batch of {n} | | | {loaded} | | | | 1.00x |")
    print(f"\n`tunesmith predict --input` on the {n} texts took {reference['wall']:.1f} s in all, loading included.")


if __name__ == "__main__":
    main()
