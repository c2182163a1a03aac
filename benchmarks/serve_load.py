"""Load test of ``fcnseg serve`` on loopback: concurrent clients, garbage mixed in.

    .venv/bin/python benchmarks/serve_load.py                    # 8 workers × 50 requests
    .venv/bin/python benchmarks/serve_load.py --workers 4 --requests 10 --out /tmp/load

Starts ``fcnseg serve`` in a subprocess on a saved FCN-8s/ResNet-18 checkpoint (random
weights, 11 classes: speed does not depend on their values), then ``--workers`` threads each
send ``--requests`` requests: mostly valid images of random sizes (64–512 px, PNG or JPEG), and
mixed in garbage bytes, truncated images, non-image uploads and oversized bodies. Every answer
must be 200 or a clean 400/413/415/503 with a JSON message; the server must stay up; its peak
resident memory is read from ``/proc`` while it runs. Writes ``serve_load.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
CLEAN = {200, 400, 413, 415, 503}


def make_checkpoint(path: Path, backbone: str = "resnet18") -> Path:
    import torch

    from fcnseg.checkpoint import save_checkpoint
    from fcnseg.data.palettes import CAMVID_CLASSES, CAMVID_PALETTE
    from fcnseg.models import fcn8s

    torch.manual_seed(0)
    model = fcn8s(backbone=backbone, num_classes=11)
    spec = {"name": "fcn8s", "backbone": backbone, "num_classes": 11, "mode": "exact"}
    return save_checkpoint(path, model, model_spec=spec, classes=list(CAMVID_CLASSES),
                           palette=[list(c) for c in CAMVID_PALETTE], ignore_index=255)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _request(rng: random.Random, max_upload: int) -> tuple[str, dict[str, Any]]:
    """A random request: (kind, httpx.post keyword arguments)."""
    r = rng.random()
    if r < 0.75:
        h, w = rng.randint(64, 512), rng.randint(64, 512)
        fmt = rng.choice(["PNG", "JPEG"])
        pixels = np.random.default_rng(rng.randint(0, 2**31)).integers(0, 256, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(buf, format=fmt)
        mime = "image/png" if fmt == "PNG" else "image/jpeg"
        return "valid", {"files": {"image": (f"x.{fmt.lower()}", buf.getvalue(), mime)}}
    if r < 0.83:
        garbage = rng.randbytes(rng.randint(0, 5000))
        return "garbage", {"files": {"image": ("bad.png", garbage, "image/png")}}
    if r < 0.88:
        buf = io.BytesIO()
        Image.new("RGB", (200, 150), (10, 20, 30)).save(buf, format="PNG")
        data = buf.getvalue()
        return "truncated", {"files": {"image": ("cut.png", data[: len(data) // 2], "image/png")}}
    if r < 0.94:
        return "not-an-image", {"files": {"image": ("notes.txt", b"hello", "text/plain")}}
    return "oversized", {
        "content": b"\0" * (max_upload + 1),
        "headers": {"content-type": "image/png"},
    }


def run_load(url: str, workers: int, requests: int, max_upload: int, seed: int = 0,
             pid: int | None = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Drive the server at ``url``; returns status counts, latencies and memory samples."""
    results: list[tuple[str, int, float, bool]] = []
    lock = threading.Lock()
    memory: list[tuple[float, float]] = []
    done = threading.Event()
    start = time.perf_counter()

    def sample_memory() -> None:
        while not done.is_set() and pid is not None:
            try:
                memory.append((time.perf_counter() - start, _rss_mb(pid)[0]))
            except (OSError, KeyError):
                return
            time.sleep(0.25)

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with httpx.Client(timeout=120, headers=headers or {}) as client:
            for _ in range(requests):
                kind, kwargs = _request(rng, max_upload)
                t0 = time.perf_counter()
                try:
                    res = client.post(url + "predict", **kwargs)
                    status = res.status_code
                    ok_body = status == 200 or "detail" in res.json()
                except (httpx.HTTPError, ValueError):
                    status, ok_body = -1, False
                with lock:
                    results.append((kind, status, time.perf_counter() - t0, ok_body))

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    done.set()
    wall = time.perf_counter() - start
    healthy = httpx.get(url + "health", timeout=10).status_code == 200
    lat = sorted(t for kind, s, t, _ in results if s == 200)
    by_kind: dict[str, Counter] = {}
    for kind, status, _, _ in results:
        by_kind.setdefault(kind, Counter())[str(status)] += 1
    return {
        "requests": len(results),
        "wall_s": wall,
        "status": dict(Counter(str(s) for _, s, _, _ in results)),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "unclean": sum(1 for _, s, _, ok in results if s not in CLEAN or not ok),
        "healthy_after": healthy,
        "latency_200_s": {
            "p50": statistics.median(lat) if lat else None,
            "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None,
            "max": lat[-1] if lat else None,
        },
        "memory": memory,
    }


TOKEN = "load-test-token-5e1f"


def serve_and_load(args: argparse.Namespace, tmp: Path, ckpt: Path, token: str | None) -> dict:
    """Start ``fcnseg serve`` (with ``FCNSEG_TOKEN`` set when ``token``), run the load and a
    sequential ``GET /classes`` timing (the bare cost of a request and of its token check)."""
    import os

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    limits = ["--max-concurrent", str(args.max_concurrent), "--max-queue",
              str(args.max_queue), "--max-upload-mb", str(args.max_upload_mb)]  # fmt: skip
    cmd = [sys.executable, "-m", "fcnseg", "serve", str(ckpt), "--port", str(port),
           "--device", "cpu", *limits]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "FCNSEG_TOKEN"}
    env |= {"FCNSEG_TOKEN": token} if token else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    log = (tmp / f"serve-{port}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        for _ in range(600):  # until the model is loaded: /ready (the port answers before)
            try:
                if httpx.get(url + "ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        idle_rss = _rss_mb(proc.pid)[0]
        with httpx.Client(headers=headers) as client:
            assert client.get(url + "classes").status_code == 200
            times = []
            for _ in range(300):
                t0 = time.perf_counter()
                client.get(url + "classes")
                times.append(time.perf_counter() - t0)
        result = run_load(url, args.workers, args.requests, int(args.max_upload_mb * 2**20),
                          pid=proc.pid, headers=headers)  # fmt: skip
        result["classes_ms_p50"] = 1e3 * statistics.median(times)
        result["server_idle_rss_mb"] = idle_rss
        result["server_peak_rss_mb"] = _rss_mb(proc.pid)[1]
        result["server_alive"] = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="per worker")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--max-upload-mb", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "m.safetensors")
        result = serve_and_load(args, Path(tmp), ckpt, token=None)
        result["with_token"] = serve_and_load(args, Path(tmp), ckpt, token=TOKEN)
    result.update(
        command=" ".join([".venv/bin/python", *sys.argv]),
        settings=vars(args) | {"out": str(args.out)},
        model="fcn8s/resnet18, 11 classes, random weights, CPU",
    )
    lat = result["latency_200_s"]
    alive = result["server_alive"] and result["healthy_after"]
    md = [
        "# `fcnseg serve` under load (loopback)",
        "",
        f"Command: `{result['command']}`  ",
        f"Server: {result['model']}; --max-concurrent {args.max_concurrent}, --max-queue "
        f"{args.max_queue}, --max-upload-mb {args.max_upload_mb}.  ",
        f"Clients: {args.workers} threads × {args.requests} requests = {result['requests']}; "
        "~75% valid PNG/JPEG of 64–512 px, the rest garbage, truncated, non-image and "
        "oversized uploads.",
        "",
        "| result | value |",
        "|---|---|",
        f"| status codes | {', '.join(f'{k}: {v}' for k, v in sorted(result['status'].items()))} |",
        f"| answers other than 200/400/413/415/503 with a message | {result['unclean']} |",
        f"| server alive and healthy afterwards | {alive} |",
        f"| latency of 200s: p50 / p95 / max | {lat['p50']:.2f} s / {lat['p95']:.2f} s / "
        f"{lat['max']:.2f} s |",
        f"| server RSS idle → peak | {result['server_idle_rss_mb']:.0f} MB → "
        f"{result['server_peak_rss_mb']:.0f} MB |",
        f"| wall time | {result['wall_s']:.0f} s |",
        "",
        "By kind of request: "
        + "; ".join(f"{k}: {dict(sorted(v.items()))}" for k, v in result["by_kind"].items()),
        "",
        "## With authentication (`FCNSEG_TOKEN` set, every request carrying the bearer token)",
        "",
        "The same load against a second server started with a token, in the same run; and the "
        "bare cost of a request, `GET /classes` 300 times in a row (median).",
        "",
        "| | no token | with token | ratio |",
        "|---|---:|---:|---:|",
    ]
    auth = result["with_token"]
    pairs = [
        ("`GET /classes`, median ms", result["classes_ms_p50"], auth["classes_ms_p50"]),
        ("200s under load: p50 s", lat["p50"], auth["latency_200_s"]["p50"]),
        ("200s under load: p95 s", lat["p95"], auth["latency_200_s"]["p95"]),
        ("load wall time, s", result["wall_s"], auth["wall_s"]),
    ]
    md += [f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |" for name, a, b in pairs]
    md += [
        f"| status codes | {', '.join(f'{k}: {v}' for k, v in sorted(result['status'].items()))}"
        f" | {', '.join(f'{k}: {v}' for k, v in sorted(auth['status'].items()))} | |",
        f"| unclean answers; alive afterwards | {result['unclean']}; {alive} | "
        f"{auth['unclean']}; {auth['server_alive'] and auth['healthy_after']} | |",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    import json

    (args.out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "serve_load.md").write_text("\n".join(md) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    if result["memory"]:
        t, m = zip(*result["memory"], strict=True)
        ax.plot(t, m)
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title("fcnseg serve memory under load")
    fig.tight_layout()
    fig.savefig(args.out / "serve_load.png", dpi=120)
    print("\n".join(md))


if __name__ == "__main__":
    main()
