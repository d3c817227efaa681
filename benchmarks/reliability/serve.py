"""F6 F8 F10 F13: fuzzed requests, streams and slow clients against a real `lmlab serve`; F12: the
same mix of valid and invalid requests for minutes against a fresh server, its RSS watched."""

from __future__ import annotations

import json
import random
import re
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

from .environment import REPORTS
from .table import row
from .served import KEY, rss_kib, start_server, stop_server, tiny_served_model


MARKER = "zqxv-secret-prompt"


WEIRD = [float("nan"), float("inf"), float("-inf"), 1e-300, -1e-300, 5e-324, 1e308, 1e6, -1, 0, 0.5, 2, 1e12,
         2 ** 63, 2 ** 64, -(2 ** 63), "0.5", "", True, False, None, [], {}, [1, 2], "nan", {"a": [None]}]
UNICODE = ["中文提示", "emoji 👨‍👩‍👧 zwj", "e\u0301\u0308", "שלום مرحبا", "\u0000\u0001\u001f", "\ud7ff\ue000\uffff",
           "a\u202eb", "\U0001F600" * 30]


def random_text(rng: random.Random) -> str:
    parts = [rng.choice(UNICODE), "The cat", "hello world", MARKER, "x" * rng.randint(0, 300), " ".join(
        rng.choice(["the", "a", "我们", "月光", "sea"]) for _ in range(rng.randint(0, 40)))]
    return "".join(rng.sample(parts, rng.randint(1, 3)))


def fuzz_request(rng: random.Random) -> tuple[str, str, dict, bytes, bool]:
    """(method, path, headers, body, valid): mostly JSON bodies with 0-3 fields set to odd values."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = rng.random()
    if r < 0.04:
        return "GET", rng.choice(["/health", "/v1/models", "/v1/models/tiny", "/v1/models/../x", "/nope"]), \
            headers, b"", False
    path = rng.choices(["/v1/completions", "/v1/chat/completions", "/v1/attention", "/v1/classify", "/v1/answer",
                        "/v1/summarize", "/v1/translate"], weights=[40, 30, 10, 5, 5, 5, 5])[0]
    sampling = {"max_tokens": rng.randint(1, 8), "temperature": rng.choice([0, 0.7, 1.0]), "seed": rng.randint(0, 99)}
    if path == "/v1/completions":
        body = {"model": "tiny", "prompt": random_text(rng), **sampling}
    elif path == "/v1/chat/completions":
        body = {"model": "tiny", "messages": [{"role": rng.choice(["system", "user", "assistant"]),
                                               "content": random_text(rng)} for _ in range(rng.randint(1, 3))],
                **sampling}
        body["messages"][-1]["role"] = "user"
    elif path == "/v1/attention":
        body = {"model": "tiny", "text": random_text(rng)[:60] or "x"}
    elif path == "/v1/answer":
        body = {"model": "tiny", "question": random_text(rng), "context": random_text(rng)}
    else:
        body = {"model": "tiny", "text": random_text(rng)}
    valid = path in ("/v1/completions", "/v1/chat/completions", "/v1/attention")
    fields = ["model", "prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "stream",
              "n", "repetition_penalty", "logprobs", "echo", "user", "stream_options", "text", "unknown_field"]
    for _ in range(rng.choices([0, 1, 2, 3], weights=[25, 40, 20, 15])[0]):
        valid = False
        field = rng.choice(fields)
        kind = rng.random()
        if kind < 0.5:
            body[field] = rng.choice(WEIRD)
        elif kind < 0.6:
            body.pop(field, None)
        elif kind < 0.75 and field in ("stop", "prompt"):
            body[field] = [random_text(rng)[:8] for _ in range(rng.choice([0, 1, 5, 100, 1000]))]
        elif kind < 0.85:
            body[field] = random_text(rng) * rng.choice([1, 100])
        else:
            body[field] = rng.choice([10 ** 400, -(10 ** 400), 2 ** 70, 1e-300, 3.5, -0.0])
    if "temperature" in body and rng.random() < 0.05:
        body["temperature"] = 1e-300  # a valid value that underflows 1/T
        valid = False
    valid = valid and len(json.dumps(body)) < 300  # short prompts: well inside the context
    raw = json.dumps(body, allow_nan=True).encode()
    r = rng.random()
    if r < 0.06:
        valid = False
        raw = rng.choice([raw[:rng.randint(0, max(len(raw) - 1, 0))], bytes(rng.randrange(256) for _ in range(40)),
                          b"[" * rng.randint(1, 100_000), b'{"a":' * rng.randint(1, 50_000), b"\xef\xbb\xbf" + raw,
                          raw.replace(b'"', b"'"), b"null", b"[]", b"1e999"])
    elif r < 0.10:
        valid = False
        headers["Content-Type"] = rng.choice(["text/plain", "application/x-www-form-urlencoded",
                                              "multipart/form-data; boundary=x", "application/xml", "", "json"])
    elif r < 0.12:
        valid = False
        headers["Authorization"] = rng.choice(["", "Bearer wrong-key-0000", KEY, f"Basic {KEY}"])
    return "POST", path, headers, raw, valid


def campaign_serve(work: Path, quick: bool) -> list[dict]:
    import httpx

    model = tiny_served_model(work)
    log = work / "serve.log"
    log.unlink(missing_ok=True)
    proc, port = start_server(work, model, log)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        rows += fuzz_server(url, proc, log, 600 if quick else 10_000)
        rows += stream_validity(url, 20 if quick else 100)
        rows += slow_clients(url, proc, port, quick)
        alive = proc.poll() is None and httpx.get(f"{url}/health", timeout=5).status_code == 200
        for r in rows:
            if r["id"] == "F8":
                r["lost"] += f"; server alive after F6-F8: {'yes' if alive else 'NO'}"
                r["failures"] += not alive
        text = log.read_text(errors="replace")
        leaks = text.count(KEY) + text.count(MARKER) + text.count("wrong-key-0000")
        rows.append(row("F13", text.count("\n"), leaks,
                        f"log lines holding the API key, a wrong key or the prompts' marker: {leaks} "
                        f"(of {text.count(chr(10))} lines logged at the default level)",
                        "campaign F6 (the server's own log after the fuzz run)"))
    finally:
        stop_server(proc)
    return rows


def fuzz_server(url: str, proc: subprocess.Popen, log: Path, n: int) -> list[dict]:
    import httpx

    rng = random.Random(6)
    statuses: dict[int, int] = {}
    server_errors, conn_errors, reject_ms, valid_bad, valid_errors = [], [], [], 0, []
    valid_total = 0
    with httpx.Client(timeout=60) as client:
        client.get(f"{url}/health")
        rss0 = rss_kib(proc.pid)
        t_start = time.monotonic()
        for i in range(n):
            method, path, headers, raw, valid = fuzz_request(rng)
            t0 = time.perf_counter()
            try:
                r = client.request(method, url + path, headers=headers, content=raw if method == "POST" else None)
                status = r.status_code
            except httpx.HTTPError as e:
                conn_errors.append(f"{path}: {type(e).__name__}")
                status = -1
                if proc.poll() is not None:
                    break
                client = httpx.Client(timeout=60)
            ms = (time.perf_counter() - t0) * 1000
            statuses[status] = statuses.get(status, 0) + 1
            if 400 <= status < 500:
                reject_ms.append(ms)
            if status >= 500 and len(server_errors) < 200:
                server_errors.append({"path": path, "status": status, "body": raw.decode("utf-8", "replace")[:20_000],
                                      "answer": r.text[:300]})
            if valid:
                valid_total += 1
                valid_bad += status != 200
                if status != 200 and len(valid_errors) < 20:
                    valid_errors.append({"path": path, "status": status, "body": raw.decode("utf-8", "replace"),
                                         "answer": r.text[:300] if status > 0 else ""})
        elapsed = time.monotonic() - t_start
        rss1 = rss_kib(proc.pid)
    n5 = sum(v for k, v in statuses.items() if k >= 500)
    p99 = statistics.quantiles(reject_ms, n=100)[98] if len(reject_ms) >= 100 else max(reject_ms, default=0.0)
    kinds = {}
    for e in server_errors:
        tiny = sorted({k for k, v in re.findall(r'"(temperature|repetition_penalty|top_p)": ([-0-9.e]+)', e["body"])
                       if 0 < abs(float(v)) < 1e-200})
        cause = f"{' and '.join(tiny)} ≤ 1e-300" if tiny else "other"
        key = f"{e['status']} {e['path']} ({cause})"
        kinds[key] = kinds.get(key, 0) + 1
    (REPORTS / "reliability-f6-5xx.json").write_text(json.dumps({"5xx": server_errors, "valid_not_200": valid_errors},
                                                               indent=1, ensure_ascii=False))
    alive = proc.poll() is None
    rows = [row("F6", n, n5 + len(conn_errors) + (not alive),
                f"5xx: {n5} ({kinds or 'none'}); connection errors: {len(conn_errors)}; server alive: "
                f"{'yes' if alive else 'NO'}; p99 latency of 4xx: {p99:.1f} ms; "
                f"statuses {dict(sorted(statuses.items()))}",
                f"campaign F6 (seeded fuzz of 7 POST routes + GETs against `lmlab serve`, {elapsed:.0f} s; the 5xx "
                "bodies in reports/reliability-f6-5xx.json)",
                five_xx=n5, p99_reject_ms=p99, statuses=statuses)]
    rows[0]["lost"] += (f"; valid requests not answered 200: {valid_bad}/{valid_total}; server RSS "
                        f"{rss0 / 1024:.0f} → {rss1 / 1024:.0f} MiB from its start (F12 measures the drift)")
    rows[0]["figures"].update(valid_not_200=valid_bad, rss_start_kib=rss0, rss_end_kib=rss1)
    return rows


def stream_validity(url: str, n: int) -> list[dict]:
    import httpx

    rng = random.Random(10)
    bad_chunks = no_finish = no_done = 0
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for i in range(n):
            chat = i % 2 == 1
            body = {"model": "tiny", "max_tokens": rng.randint(1, 40), "temperature": rng.choice([0, 0.8, 1.3]),
                    "top_p": rng.choice([1.0, 0.9]), "seed": i, "stream": True}
            if chat:
                body["messages"] = [{"role": "user", "content": rng.choice(UNICODE + ["我们喜欢", "The sea"])}]
            else:
                body["prompt"] = rng.choice(UNICODE + ["我们喜欢", "The sea", "🙂"])
            path = "/v1/chat/completions" if chat else "/v1/completions"
            last, done = None, False
            r = client.post(url + path, json=body)  # the whole event stream, as bytes: UTF-8 checked per event
            for event in r.content.split(b"\n\n"):
                if not event.strip():
                    continue
                data = event.removeprefix(b"data: ")
                if data == b"[DONE]":
                    done = True
                    continue
                try:
                    last = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    bad_chunks += 1
            no_done += not done
            no_finish += not (last and last["choices"] and last["choices"][0].get("finish_reason"))
    return [row("F10", n, bad_chunks + no_finish + no_done,
                f"chunks failing UTF-8 or JSON: {bad_chunks}; final chunk without finish_reason: {no_finish}; "
                f"streams without [DONE]: {no_done}",
                "campaign F10 (streamed completions and chats, random sampling, CJK/emoji/RTL prompts)")]


def slow_clients(url: str, proc: subprocess.Popen, port: int, quick: bool) -> list[dict]:
    """Slow-loris: sockets that trickle header bytes one a second; then more idle sockets than the
    server's connection limit, and the time until valid requests are answered again."""
    import httpx

    def valid() -> int:
        try:
            return httpx.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
                              json={"model": "tiny", "prompt": "The cat", "max_tokens": 4}).status_code
        except httpx.HTTPError:
            return -1

    def answered(s: socket.socket) -> bool:
        """The server wrote to the socket (its 408) or closed it."""
        try:
            return len(s.recv(4096)) >= 0
        except BlockingIOError:
            return False
        except OSError:
            return True

    limit = 8.0 if quick else 30.0
    n_slow = 10 if quick else 50
    slow = []
    for _ in range(n_slow):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(s)
    t0 = time.monotonic()
    closed_at: dict[int, float] = {}
    statuses = []
    while time.monotonic() - t0 < limit and len(closed_at) < n_slow:
        tick = time.monotonic()
        for i, s in enumerate(slow):
            if i in closed_at:
                continue
            if answered(s):
                closed_at[i] = time.monotonic() - t0
                continue
            try:
                s.send(b"a")
            except OSError:
                closed_at[i] = time.monotonic() - t0
        statuses.append(valid())
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    for s in slow:
        s.close()
    ok = statuses.count(200)
    slow_text = (f"{len(closed_at)}/{n_slow} trickling connections answered 408 or closed within {limit:.0f} s"
                 + (f" (after {min(closed_at.values()):.1f}-{max(closed_at.values()):.1f} s)" if closed_at else "")
                 + f"; valid requests meanwhile: {ok}/{len(statuses)} answered 200")
    # idle connections beyond the server's limit: refused at once? answered again when?
    n_idle = 200 if quick else 1000
    idle = []
    for _ in range(n_idle):
        try:
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    t0 = time.monotonic()
    first = [valid() for _ in range(5)]
    recovered = None
    while time.monotonic() - t0 < 30:
        if valid() == 200:
            recovered = time.monotonic() - t0
            break
        time.sleep(0.5)
    dropped = 0
    for s in idle:
        s.setblocking(False)
        dropped += answered(s)
        s.close()
    idle_text = (f"{len(idle)} idle sockets: valid requests at once {first}; answered 200 again after "
                 + (f"{recovered:.1f} s" if recovered is not None else "> 30 s (never)")
                 + f"; idle sockets the server had answered 408 or closed by then: {dropped}/{len(idle)}")
    failures = (n_slow - len(closed_at)) + (ok < len(statuses)) + (recovered is None)
    return [row("F8", n_slow + len(idle), failures,
                f"slow-loris: {slow_text}. Connection exhaustion: {idle_text}",
                "campaign F8 (loopback; header bytes trickled at 1 B/s per socket)",
                slowloris_closed=len(closed_at), idle_answered=dropped, recovery_s=recovered)]


# -- F12: soak ----------------------------------------------------------------------------------------

SOAK_CLIENTS = 4  # concurrent clients: rows of different requests share batches, as in service


def soak_request(rng: random.Random) -> tuple[str, str, dict, bytes, bool, bool]:
    """A `fuzz_request`, a fifth of whose valid completions and chats are streamed; + streamed."""
    method, path, headers, raw, valid = fuzz_request(rng)
    stream = valid and path != "/v1/attention" and rng.random() < 0.2
    if stream:
        raw = json.dumps({**json.loads(raw), "stream": True}).encode()
    return method, path, headers, raw, valid, stream


def soak_client(url: str, seed: int, until: float, tally: dict, lock: threading.Lock) -> None:
    """Send soak requests until `until` (monotonic); count them into `tally`."""
    import httpx

    rng = random.Random(seed)
    client = httpx.Client(timeout=60)
    while time.monotonic() < until:
        method, path, headers, raw, valid, stream = soak_request(rng)
        try:
            r = client.request(method, url + path, headers=headers, content=raw if method == "POST" else None)
            status, text = r.status_code, r.text
        except httpx.HTTPError as e:
            status, text = -1, type(e).__name__
            client.close()
            client = httpx.Client(timeout=60)
        ok = status == 200 and (not stream or text.endswith("data: [DONE]\n\n"))
        with lock:
            tally["requests"] += 1
            tally["statuses"][status] = tally["statuses"].get(status, 0) + 1
            if valid:
                tally["valid"] += 1
                tally["streamed"] += stream
                if not ok:
                    tally["valid_bad"] += 1
                    if len(tally["valid_errors"]) < 20:
                        tally["valid_errors"].append({"path": path, "status": status, "stream": stream,
                                                      "body": raw.decode("utf-8", "replace"), "answer": text[:300]})
    client.close()


def soak_phase(url: str, proc: subprocess.Popen, seconds: float, seed: int, samples: list | None = None) -> dict:
    """`SOAK_CLIENTS` clients for `seconds`; RSS sampled every 5 s into `samples` as (s, KiB)."""
    tally = {"requests": 0, "valid": 0, "valid_bad": 0, "streamed": 0, "statuses": {}, "valid_errors": []}
    lock = threading.Lock()
    t0 = time.monotonic()
    until = t0 + seconds
    threads = [threading.Thread(target=soak_client, args=(url, seed + i, until, tally, lock), daemon=True)
               for i in range(SOAK_CLIENTS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if samples is not None and proc.poll() is None:
            samples.append((round(time.monotonic() - t0, 1), rss_kib(proc.pid)))
        for t in threads:
            t.join(max(0.0, min(5.0, until + 70 - time.monotonic())) / len(threads))
        if time.monotonic() > until + 70:  # a client stuck past its 60 s timeout: stop waiting
            break
    if samples is not None and proc.poll() is None:
        samples.append((round(time.monotonic() - t0, 1), rss_kib(proc.pid)))
    return tally


def campaign_soak(work: Path, quick: bool, minutes: float | None = None) -> list[dict]:
    """F12: a fresh `lmlab serve` of the tiny model (dtype auto, as the command runs it) under the F6 mix
    of valid and invalid requests from `SOAK_CLIENTS` clients: a warm-up (a tenth of the run, 1 to 5
    minutes: the kernels of the prefill shapes, allocator pools), then `minutes` (default 2, quick 0.5;
    the checklist's figure is 30) with RSS sampled every 5 s. Fails on any valid request not answered
    200 (a stream without its [DONE]), an RSS drift over 5 % from the end of the warm-up, or a dead server."""
    minutes = minutes if minutes is not None else (0.5 if quick else 2.0)
    warmup_s = 30.0 if quick else min(300.0, max(60.0, 6.0 * minutes))
    model = tiny_served_model(work)
    log = work / "soak.log"
    log.unlink(missing_ok=True)
    proc, port = start_server(work, model, log)
    url = f"http://127.0.0.1:{port}"
    samples: list[tuple[float, int]] = []
    try:
        rss_boot = rss_kib(proc.pid)
        warm = soak_phase(url, proc, warmup_s, seed=1200)
        rss0 = rss_kib(proc.pid)
        t0 = time.monotonic()
        tally = soak_phase(url, proc, 60.0 * minutes, seed=1212, samples=samples)
        elapsed = time.monotonic() - t0
        alive = proc.poll() is None
        rss1 = rss_kib(proc.pid) if alive else 0
    finally:
        stop_server(proc)
    peak = max([kib for _, kib in samples] + [rss0, rss1])
    drift, peak_drift = (rss1 - rss0) / max(rss0, 1), (peak - rss0) / max(rss0, 1)
    (REPORTS / "reliability-f12-soak.json").write_text(json.dumps(
        {"minutes": minutes, "warmup_s": warmup_s, "clients": SOAK_CLIENTS, "rss_boot_kib": rss_boot,
         "rss_start_kib": rss0, "rss_max_kib": peak, "rss_end_kib": rss1, "rss_samples_s_kib": samples,
         "warmup": {k: v for k, v in warm.items() if k != "valid_errors"}, "soak": tally}, indent=1,
        ensure_ascii=False))
    n5 = sum(v for k, v in tally["statuses"].items() if k >= 500)
    failures = tally["valid_bad"] + (drift > 0.05) + (not alive)
    return [row("F12", tally["valid"], failures,
                f"valid requests not answered 200: {tally['valid_bad']}/{tally['valid']} ({tally['streamed']} of them "
                f"streamed); server RSS after the warm-up {rss0 / 1024:.0f} MiB, max {peak / 1024:.0f} MiB "
                f"({peak_drift:+.1%}), end {rss1 / 1024:.0f} MiB: drift {drift:+.1%} (limit 5 %); at boot "
                f"{rss_boot / 1024:.0f} MiB; {tally['requests']} requests in {elapsed / 60:.1f} min from "
                f"{SOAK_CLIENTS} clients (5xx: {n5}), statuses {dict(sorted(tally['statuses'].items()))}; server "
                f"alive: {'yes' if alive else 'NO'}",
                f"campaign F12 (the F6 mix, a fifth of valid generations streamed, {minutes:g} min after a "
                f"{warmup_s:.0f} s warm-up ({warm['requests']} requests); RSS every 5 s in "
                "reports/reliability-f12-soak.json)",
                rss_start_kib=rss0, rss_max_kib=peak, rss_end_kib=rss1, rss_drift=drift,
                valid_not_200=tally["valid_bad"], minutes=minutes)]
