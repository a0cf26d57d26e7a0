"""Load and fault runs against a real `medsam-lite serve` on 127.0.0.1 (bounded in count and time; it stops by
itself and stops the server it started).

Load: CLIENTS concurrent clients for SECONDS, mixing cached 2D box prompts on an encoded 1024x1024 X-ray
(native API), the same through samapi's /sam/ (base64 PNG, as QuPath sends it), first prompts on new 1024x1024
images (upload + segment), and a 3D CT case propagated. Per kind: client latency p50/p95/p99, the server's own
compute time (X-Compute-Seconds) p50/p95, count, 503s (deliberate: the queue is bounded) and errors; throughput;
the server's peak RSS against --cache-mb + a fixed margin.

Fault: FAULTS requests, a third malformed (bad JSON, bad base64, an over-limit upload, a PNG decompression bomb,
an npz with a pickle, a truncated npz, an unknown id, a box outside the image, an upload cut off mid-body),
interleaved with good prompts whose masks are checked against the first answer: the server must stay up, every
good request must get the right answer, and its RSS must come back to the baseline.

Usage: python benchmarks/bench_serve.py --export-dir work_dir/openvino [--shared ../shared] [--seconds 60]
       [--clients 16] [--faults 1000] [--cache-mb 256]
Stdlib only (http.client); needs the shared cases for the X-ray and CT images.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from medsam_lite.engines.cpu import cpu_name

XRAY = "2DBox_XRay_Pneumothorax-Masks_2041_train_1.npz"
CT = "3DBox_CT_Lesion_000001_02_01_008-023.npz"
RSS_MARGIN_MB = 700  # model, libraries and request buffers above the embedding cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                reply = self.conn.getresponse()
                return reply.status, dict(reply.getheaders()), reply.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt:
                    raise
        raise RuntimeError("unreachable")

    def json(self, path: str, payload) -> tuple:
        return self.request("POST", path, json.dumps(payload).encode(),
                            {"Content-Type": "application/json; charset=utf-8"})

    def upload(self, path: str, name: str, content: bytes) -> tuple:
        boundary = "benchboundary7f3a"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident MiB of a process."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def start_server(args, port: int, store: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "medsam_lite", "serve", "--port", str(port), "--export-dir", str(args.export_dir),
               "--cache-mb", str(args.cache_mb), "--store-dir", str(store), "--max-upload-mb", "64", "--queue", "8"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and server.poll() is None:
        try:
            if Client(port).request("GET", "/healthz")[0] == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server did not start: {server.stderr.read()[-2000:]}")


def quiet_run(port: int, xray: dict, repeats: int = 10) -> dict:
    """One client, nothing else running: server-side seconds of a cached box prompt and of the first prompt on
    a new 1024x1024 image (upload not counted), the issue's two targets."""
    client = Client(port)
    status, _, body = client.upload("/v1/images", XRAY, xray["bytes"])
    xray_id = json.loads(body)["id"]
    client.json(f"/v1/images/{xray_id}/segment", {})
    cached, first = [], []
    for i in range(repeats):
        status, headers, _ = client.json(f"/v1/images/{xray_id}/segment?format=rle", {"boxes": [xray["box"]]})
        cached.append(float({k.lower(): v for k, v in headers.items()}["x-compute-seconds"]))
        image = xray["imgs"].copy()
        image[i, i] ^= 1
        status, _, body = client.upload("/v1/images", f"2DBox_quiet_{i}.npz", npz_bytes(imgs=image, boxes=np.array([xray["box"]])))
        new_id = json.loads(body)["id"]
        status, headers, _ = client.json(f"/v1/images/{new_id}/segment?format=rle", {})
        first.append(float({k.lower(): v for k, v in headers.items()}["x-compute-seconds"]))
        client.request("DELETE", f"/v1/images/{new_id}")
    return {"cached": cached, "first": first}


def load_run(args, port: int, pid: int, xray: dict, ct: dict) -> dict:
    setup = Client(port)
    status, _, body = setup.upload("/v1/images", XRAY, xray["bytes"])
    xray_id = json.loads(body)["id"]
    setup.json(f"/v1/images/{xray_id}/segment", {})  # encode it once: later prompts are cached
    status, _, body = setup.upload("/v1/images", CT, ct["bytes"])
    ct_id = json.loads(body)["id"]
    b64 = base64.b64encode(cv2.imencode(".png", cv2.cvtColor(xray["imgs"], cv2.COLOR_RGB2BGR))[1].tobytes()).decode()
    setup.json("/sam/", {"b64img": b64, "bbox": xray["box"]})
    results: dict[str, dict[str, list]] = {k: {"latency": [], "server": [], "busy": [], "errors": []}
                                           for k in ("cached_2d", "samapi_cached", "new_2d_first_prompt", "3d_propagate")}
    stop_at = time.time() + args.seconds
    peak = [0.0]
    lock = threading.Lock()

    def record(kind: str, status: int, headers: dict, started: float, body: bytes) -> None:
        with lock:
            entry = results[kind]
            if status == 200:
                entry["latency"].append(time.perf_counter() - started)
                if "x-compute-seconds" in headers:
                    entry["server"].append(float(headers["x-compute-seconds"]))
            elif status == 503:
                entry["busy"].append(1)
            else:
                entry["errors"].append(f"{status} {body[:200]!r}")

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        client = Client(port)
        while time.time() < stop_at:
            draw = rng.random()
            x0, y0, x1, y1 = xray["box"]
            jitter = [x0 + rng.randint(-20, 20), y0 + rng.randint(-20, 20), x1 + rng.randint(-20, 20), y1 + rng.randint(-20, 20)]
            if draw < 0.5:
                kind, started = "cached_2d", time.perf_counter()
                status, headers, body = client.json(f"/v1/images/{xray_id}/segment?format=rle", {"boxes": [jitter]})
                headers = {k.lower(): v for k, v in headers.items()}
            elif draw < 0.7:
                kind, started = "samapi_cached", time.perf_counter()
                status, headers, body = client.json("/sam/", {"b64img": b64, "bbox": jitter})
                headers = {k.lower(): v for k, v in headers.items() if k.lower() == "retry-after"}
            elif draw < 0.9:
                image = xray["imgs"].copy()
                image[rng.randrange(1024), rng.randrange(1024)] ^= 1  # a new image: other bytes, another id
                status, _, body = client.upload("/v1/images", f"2DBox_new_{index}.npz",
                                                npz_bytes(imgs=image, boxes=np.array([xray["box"]])))
                if status != 200:
                    record("new_2d_first_prompt", status, {}, time.perf_counter(), body)
                    time.sleep(1)
                    continue
                new_id = json.loads(body)["id"]
                kind, started = "new_2d_first_prompt", time.perf_counter()
                status, headers, body = client.json(f"/v1/images/{new_id}/segment?format=rle", {})
                headers = {k.lower(): v for k, v in headers.items()}
                client.request("DELETE", f"/v1/images/{new_id}")
            else:
                kind, started = "3d_propagate", time.perf_counter()
                status, headers, body = client.json(f"/v1/images/{ct_id}/segment?format=rle", {})
                headers = {k.lower(): v for k, v in headers.items()}
            record(kind, status, headers, started, body)
            if status == 503:
                time.sleep(float(headers.get("retry-after", 1)))  # as a polite client does

    def sample_rss() -> None:
        while time.time() < stop_at + 1:
            peak[0] = max(peak[0], rss_mb(pid)[0])
            time.sleep(0.2)

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    sampler = threading.Thread(target=sample_rss)
    for t in threads + [sampler]:
        t.start()
    for t in threads + [sampler]:
        t.join()
    wall = time.perf_counter() - started
    done = sum(len(r["latency"]) for r in results.values())
    return {"results": results, "wall": wall, "throughput": done / wall, "peak_rss": max(peak[0], rss_mb(pid)[0]),
            "xray_id": xray_id}


def png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def cut_upload(port: int) -> int:
    """An upload whose client goes away after half the body."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 4000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
                  b"filename=\"x.npz\"\r\n\r\n" + b"\0" * 100000)
    return 0


def fault_run(args, port: int, pid: int, xray: dict, xray_id: str, store: Path) -> dict:
    client = Client(port)
    good_box = {"boxes": [xray["box"]]}
    status, _, expected = client.json(f"/v1/images/{xray_id}/segment", good_box)
    assert status == 200, status
    time.sleep(1)
    baseline = rss_mb(pid)[0]
    evil = io.BytesIO()
    np.savez(evil, imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.array([{"x": 1}, None], dtype=object))
    b64 = base64.b64encode(cv2.imencode(".png", np.zeros((64, 64), np.uint8))[1].tobytes()).decode()
    bad = [
        ("bad json", lambda: client.request("POST", "/sam/", b'{"b64img": ', {"Content-Type": "application/json"}), 422),
        ("bad base64", lambda: client.json("/sam/", {"b64img": "@@@@", "bbox": [0, 0, 4, 4]}), 400),
        ("over limit", lambda: client.upload("/v1/images", "big.npz", b"\0" * (65 << 20)), 413),
        ("png bomb", lambda: client.upload("/v1/images", "bomb.png", png_bomb(200000, 200000)), 413),
        ("pickle", lambda: client.upload("/v1/images", "2DBox_evil.npz", evil.getvalue()), 422),
        ("truncated", lambda: client.upload("/v1/images", "2DBox_t.npz", xray["bytes"][:3000]), 422),
        ("unknown id", lambda: client.json("/v1/images/" + "0" * 64 + "/segment", good_box), 404),
        ("box outside", lambda: client.json(f"/v1/images/{xray_id}/segment", {"boxes": [[2000, 2000, 2100, 2100]]}), 422),
        ("samapi box outside", lambda: client.json("/sam/", {"b64img": b64, "bbox": [100, 100, 120, 120]}), 422),
    ]
    counts = {"good": 0, "good_wrong": 0, "bad": 0, "bad_unexpected": [], "cut": 0}
    rng = random.Random(0)
    started = time.perf_counter()
    for i in range(args.faults):
        if time.perf_counter() - started > args.fault_seconds:
            break
        if i % 3 == 2:
            what, call, want = bad[rng.randrange(len(bad))]
            if rng.random() < 0.1:
                cut_upload(port)
                counts["cut"] += 1
                continue
            status, _, body = call()
            counts["bad"] += 1
            if status != want or not json.loads(body).get("detail"):
                counts["bad_unexpected"].append(f"{what}: {status} {body[:120]!r}")
        else:
            status, _, body = client.json(f"/v1/images/{xray_id}/segment", good_box)
            counts["good"] += 1
            if status != 200 or body != expected:
                counts["good_wrong"] += 1
    time.sleep(1)
    alive = client.request("GET", "/healthz")[0] == 200
    after = rss_mb(pid)[0]
    leftover = list((store / ".incoming").iterdir())
    return {**counts, "alive": alive, "rss_baseline": baseline, "rss_after": after, "incoming_left": len(leftover),
            "seconds": time.perf_counter() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", type=Path, default=Path("work_dir/openvino"))
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--fault-seconds", type=float, default=300, help="stop the fault run after this long")
    parser.add_argument("--cache-mb", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    xray_path, ct_path = args.shared / "cases/imgs" / XRAY, args.shared / "cases/imgs" / CT
    with np.load(xray_path) as data:
        xray = {"imgs": data["imgs"], "box": data["boxes"][0].tolist(), "bytes": xray_path.read_bytes()}
    ct = {"bytes": ct_path.read_bytes()}
    port = free_port()
    store = Path(tempfile.mkdtemp(prefix="bench-serve-store-"))
    server = start_server(args, port, store)
    try:
        print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.clients} clients for {args.seconds:.0f} s; "
              f"--cache-mb {args.cache_mb}")
        quiet = quiet_run(port, xray)
        print(f"\none client alone (server-side, {len(quiet['cached'])} each): cached 2D box prompt on the 1024x1024 "
              f"X-ray p50 {percentile(quiet['cached'], 50) * 1000:.1f} ms (target <= 50); first prompt on a new "
              f"1024x1024 image p50 {percentile(quiet['first'], 50) * 1000:.0f} ms (target <= 600)")
        load = load_run(args, port, server.pid, xray, ct)
        print("\n| kind | ok | 503 | errors | client p50 ms | p95 | p99 | server p50 ms | server p95 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for kind, r in load["results"].items():
            lat = [v * 1000 for v in r["latency"]]
            srv = [v * 1000 for v in r["server"]]
            print(f"| {kind} | {len(lat)} | {len(r['busy'])} | {len(r['errors'])} | {percentile(lat, 50):.0f} | "
                  f"{percentile(lat, 95):.0f} | {percentile(lat, 99):.0f} | "
                  f"{percentile(srv, 50):.1f} | {percentile(srv, 95):.1f} |")
            for error in r["errors"][:3]:
                print(f"  error: {error}")
        print(f"\nthroughput {load['throughput']:.1f} requests/s over {load['wall']:.1f} s; peak RSS "
              f"{load['peak_rss']:.0f} MiB (limit: cache {args.cache_mb} + margin {RSS_MARGIN_MB} = "
              f"{args.cache_mb + RSS_MARGIN_MB} MiB): {'ok' if load['peak_rss'] <= args.cache_mb + RSS_MARGIN_MB else 'OVER'}")
        faults = fault_run(args, port, server.pid, xray, load["xray_id"], store)
        print(f"\nfault run ({faults['seconds']:.0f} s): {faults['good']} good requests, {faults['good_wrong']} wrong; "
              f"{faults['bad']} malformed, {len(faults['bad_unexpected'])} with an unexpected answer; "
              f"{faults['cut']} uploads cut mid-body; server alive: {faults['alive']}; RSS {faults['rss_baseline']:.0f} "
              f"-> {faults['rss_after']:.0f} MiB; upload files left behind: {faults['incoming_left']}")
        for line in faults["bad_unexpected"][:5]:
            print(f"  unexpected: {line}")
        ok = (faults["alive"] and not faults["good_wrong"] and not faults["bad_unexpected"] and not faults["incoming_left"]
              and not any(r["errors"] for r in load["results"].values()))
        return 0 if ok else 1
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
