#!/usr/bin/env python3
"""awning against nginx's proxy_cache, side by side, in one run.

`make bench` runs this. It builds awning, the bench origin and the open-loop
load generator, starts the origin, awning and nginx (each proxy pinned to
core 0, the load to core 1), runs every scenario on both proxies in turn
(A/B/A/B, three repetitions by default), and writes the medians, the ratios
awning/nginx and the targets to benches/RESULTS.md.

Proxy CPU per request is read from /proc (utime + stime of every process of
the proxy, over the measured run, divided by the requests answered): it
depends far less on what else the machine is doing than req/s does.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "benches", "load")
RELEASE = os.path.join(ROOT, "target", "release")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The targets issue 9 sets, checked against the medians.
STAMPEDE_ORIGIN_MS = 100
STAMPEDE_SLACK_MS = 20
OVERHEAD_LIMIT_MIB = 64


def log(*args):
    print("[bench]", *args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def have(tool):
    return shutil.which(tool) is not None


def apt_install(packages):
    """Installs Debian packages when this process may (root or sudo -n)."""
    if not have("apt-get"):
        return False
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log("installing", " ".join(packages), "with apt-get")
    subprocess.run(prefix + ["apt-get", "update", "-qq"], env=env, capture_output=True)
    done = subprocess.run(prefix + ["apt-get", "install", "-y", "-qq"] + packages, env=env,
                          capture_output=True)
    return done.returncode == 0


def nginx_binary():
    for candidate in ("nginx", "/usr/sbin/nginx"):
        path = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
        if path:
            return path
    return None


# ---------------------------------------------------------------- processes

def proc_sum(pids, name, value):
    """Sums `value(text)` of /proc/PID/NAME over `pids` (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/{name}") as f:
                total += value(f.read())
        except FileNotFoundError:
            pass
    return total


def cpu_ticks(pids):
    # utime + stime, after the command name (which may hold spaces).
    return proc_sum(pids, "stat", lambda text: sum(int(x) for x in text.rsplit(")", 1)[1].split()[11:13]))


def rss_kib(pids):
    return proc_sum(pids, "status", lambda text: int(re.search(r"^VmRSS:\s+(\d+)", text, re.M).group(1)))


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


def http_get(addr, path, headers=None):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def warm(addr, paths):
    """Requests each path over one keep-alive connection (fills the cache)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"bench: warming {path} on {addr} answered {response.status}")
    conn.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(core, enabled):
    return ["taskset", "-c", str(core)] if enabled else []


class Origin:
    def __init__(self, workdir, pinned):
        out = open(os.path.join(workdir, "origin.out"), "w+")
        self.proc = subprocess.Popen(pin(1, pinned) + [os.path.join(RELEASE, "examples", "bench_origin")],
                                     stdout=out, stderr=subprocess.STDOUT)
        self.out = out
        wait_for(lambda: "listening" in open(out.name).read(), "the origin")
        self.addr = open(out.name).read().split()[1]

    def count(self, what):
        return json.loads(http_get(self.addr, "/__stats")[2])[what]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Awning:
    name = "awning"

    def __init__(self, workdir, origin, threads, pinned):
        self.dir = os.path.join(workdir, f"awning-{threads}")
        os.makedirs(os.path.join(self.dir, "rules"), exist_ok=True)
        # Not beside proxy.yaml: awning watches that directory for edits, and
        # a log written there wakes the watcher on every line.
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        self.addr = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        admin = f"127.0.0.1:{free_port()}"
        with open(os.path.join(self.dir, "proxy.yaml"), "w") as f:
            f.write(f"""# awning's side of the bench: one route that caches what the origin allows.
threads: {threads}
listen: {{ http: ["{self.addr}"] }}
upstreams:
  # nginx keeps idle origin connections 60 s (its `keepalive_timeout`); the
  # default 4 s would make the stampede, run after a quiet minute, connect anew.
  origin: {{ servers: ["{origin.addr}"], idle_timeout: 60s }}
admin: {{ listen: "{admin}" }}
metrics: {{ listen: "{self.metrics}" }}
cache: {{ memory: 256MiB, max_object: 8MiB }}
access_log: {{ to: {os.path.join(workdir, "logs", f"awning-{threads}.log")} }}
rules: ["rules/*.yaml"]
""")
        with open(os.path.join(self.dir, "rules", "bench.yaml"), "w") as f:
            f.write("""routes:
  - name: pages
    match: { path: "/**" }
    upstream: origin
    cache: { mode: origin }
""")
        self.log = open(os.path.join(self.dir, "awning.out"), "w")
        self.proc = subprocess.Popen(
            pin(0, pinned) + [os.path.join(RELEASE, "awning"), "run", "-c", os.path.join(self.dir, "proxy.yaml")],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: http_get(admin, "/readyz")[0] == 200, "awning to be ready")

    def pids(self):
        return [self.proc.pid]

    def stored_bytes(self):
        text = http_get(self.metrics, "/metrics")[2].decode()
        match = re.search(r"^awning_cache_stored_bytes\s+(\S+)", text, re.M)
        return float(match.group(1)) if match else 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Nginx:
    name = "nginx"

    def __init__(self, workdir, origin, binary, workers, pinned):
        self.dir = os.path.join(workdir, f"nginx-{workers}")
        os.makedirs(self.dir, exist_ok=True)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else workdir
        self.cache_dir = tempfile.mkdtemp(prefix="awning-bench-nginx-cache-", dir=shm)
        self.addr = f"127.0.0.1:{free_port()}"
        template = open(os.path.join(HERE, "nginx.conf.in")).read()
        conf = (template.replace("@USER@", "user root;" if os.geteuid() == 0 else "")
                .replace("@WORKERS@", str(workers))
                .replace("@PREFIX@", self.dir)
                .replace("@CACHE_DIR@", self.cache_dir)
                .replace("@ORIGIN@", origin.addr)
                .replace("@LISTEN@", self.addr))
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.log = open(os.path.join(self.dir, "nginx.out"), "w")
        self.proc = subprocess.Popen(
            pin(0, pinned) + [binary, "-p", self.dir, "-c", path, "-g", "daemon off;"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: http_get(self.addr, "/__stats")[0] == 200, "nginx to answer")

    def pids(self):
        # The master and its workers (and the cache manager); the load is
        # carried by the workers.
        return [self.proc.pid] + children(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.cache_dir, ignore_errors=True)


# ---------------------------------------------------------------- load

def parse_wrk_duration(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]


def wrk(addr, path, seconds, connections, threads=1, script=None, pinned=True):
    cmd = pin(1, pinned) + ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = run(cmd + [f"http://{addr}{path}"])
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    result = {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
    }
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_us"] = parse_wrk_duration(m.group(1)) if m else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = (int(errors.group(1)) if errors else 0) + (
        sum(int(x) for x in sockets.groups()) if sockets else 0)
    return result


def loadgen(*args, pinned=True):
    out = run(pin(1, pinned) + [os.path.join(RELEASE, "examples", "bench_loadgen")] + [str(a) for a in args])
    return json.loads(out)


def measured(proxy, load):
    """Runs `load`, adding the proxy's CPU microseconds per request."""
    before = cpu_ticks(proxy.pids())
    result = load()
    ticks = cpu_ticks(proxy.pids()) - before
    answered = result.get("requests") or result.get("ok") or 1
    result["cpu_us_per_req"] = ticks * 1e6 / CLK_TCK / answered
    return result


KEYS_SCRIPT = """-- 1,000 distinct cache keys, round-robin
counter = 0
request = function()
  counter = (counter + 1) % 1000
  return wrk.format(nil, "/small?k=" .. counter)
end
"""


def scenarios(args, origin, workdir):
    keys_script = os.path.join(workdir, "keys.lua")
    with open(keys_script, "w") as f:
        f.write(KEYS_SCRIPT)
    s, w, c = args.seconds, args.warmup, args.connections

    def hits(path):
        def go(proxy, rep):
            warm(proxy.addr, [path])
            wrk(proxy.addr, path, w, c)
            return measured(proxy, lambda: wrk(proxy.addr, path, s, c))
        return go

    def keys(proxy, rep):
        warm(proxy.addr, [f"/small?k={k}" for k in range(1000)])
        wrk(proxy.addr, "/", w, c, script=keys_script)
        return measured(proxy, lambda: wrk(proxy.addr, "/", s, c, script=keys_script))

    def fixed_rate(proxy, rep):
        warm(proxy.addr, ["/small"])
        return measured(proxy, lambda: loadgen("rate", proxy.addr, "/small", "--rps", args.rate,
                                               "--seconds", s, "--connections", c))

    def stampede(proxy, rep):
        path = f"/slow?cold={proxy.name}-{rep}-{time.time_ns()}"
        before = origin.count("slow")
        result = measured(proxy, lambda: loadgen("stampede", proxy.addr, path, "--clients", args.clients))
        result["origin_requests"] = origin.count("slow") - before
        return result

    runs = {"hit_1k": hits("/small"), "hit_100k": hits("/large"), "pass": hits("/nocache"),
            "keys_1000": keys, "rate_5000": fixed_rate, "stampede": stampede}
    return [(key, title, runs[key]) for key, title in scenario_titles(args).items()]


def scenario_titles(args):
    return {
        "hit_1k": "1 KiB hits",
        "hit_100k": "100 KiB hits",
        "pass": "pass (no-store)",
        "keys_1000": "1,000 distinct keys",
        "rate_5000": f"fixed {args.rate} req/s",
        "stampede": f"stampede ({args.clients} on a cold 100 ms URL)",
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------- report

def fmt(value, unit=""):
    if value is None:
        return "–"
    if unit == "us":
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"
    if unit == "rps":
        return f"{value:,.0f}"
    if unit == "cpu":
        return f"{value:.1f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // (1024 * 1024)
    return f"{model}, {os.cpu_count()} cores, {mem} GiB, Linux {platform.release()}"


def versions(nginx):
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    out = {"awning": rev + (" (with uncommitted changes)" if dirty else "")}
    if nginx:
        out["nginx"] = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    out["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return out


def report(args, results, scaling, memory, nginx_path, started):
    A, B = "awning", "nginx"

    def med(scenario, proxy, key):
        return median([r[key] for r in results.get((scenario, proxy), []) if key in r])

    has_nginx = any(p == B for (_, p) in results)
    lines = []
    v = versions(nginx_path)
    lines += [
        "# Load bench: awning against nginx `proxy_cache`",
        "",
        f"Written by `make bench` (benches/load/run.py) on {started:%Y-%m-%d %H:%M} UTC, "
        f"in {(time.time() - started.timestamp()) / 60:.0f} minutes.",
        "",
        f"- **Machine:** {machine()}.",
        f"- **Versions:** awning {v['awning']}" + (f", nginx {v['nginx']}" if "nginx" in v else "") +
        f", wrk {v['wrk']}.",
        f"- **Method:** each proxy pinned to core 0 (`taskset`), the load generator (and the origin) to core 1; "
        f"both proxies run side by side and each scenario runs on awning, then nginx, "
        f"{args.reps} times (A/B/A/B); every figure is the median of the {args.reps} runs. "
        f"Closed-loop scenarios: `wrk -t1 -c{args.connections} -d{args.seconds}s` after a {args.warmup} s warm-up. "
        f"Fixed rate: open loop, latency from each request's intended start. "
        f"CPU µs/request: utime + stime of all the proxy's processes (from `/proc`) over the run, "
        f"divided by the requests answered.",
        "- **Configs:** awning: one route, `cache: {mode: origin}`, `threads: 1`, access log to a file, "
        "default security headers, origin connections kept idle 60 s as nginx does. nginx: `proxy_cache` on tmpfs with `proxy_cache_lock on`, "
        "`proxy_cache_use_stale updating`, upstream keep-alive, the same six security headers, a request id "
        "and the `combined` access log to a file, `worker_processes 1` "
        "(benches/load/nginx.conf.in).",
        "",
    ]
    if not has_nginx:
        lines += ["**nginx was not available: awning's figures only, no ratios.**", ""]

    lines += ["## Results (medians)", "",
              "| scenario | figure | awning | nginx | awning/nginx |",
              "|---|---|---:|---:|---:|"]
    figures = {
        "hit_1k": [("req/s", "rps", "rps"), ("CPU µs/req", "cpu_us_per_req", "cpu"), ("p50", "p50_us", "us"),
                   ("p99", "p99_us", "us")],
        "hit_100k": [("req/s", "rps", "rps"), ("CPU µs/req", "cpu_us_per_req", "cpu"), ("p99", "p99_us", "us")],
        "pass": [("req/s", "rps", "rps"), ("CPU µs/req", "cpu_us_per_req", "cpu"), ("p50", "p50_us", "us"),
                 ("p99", "p99_us", "us")],
        "keys_1000": [("req/s", "rps", "rps"), ("CPU µs/req", "cpu_us_per_req", "cpu"), ("p99", "p99_us", "us")],
        "rate_5000": [("achieved req/s", "achieved_rps", "rps"), ("CPU µs/req", "cpu_us_per_req", "cpu"),
                      ("p50", "p50_us", "us"), ("p99", "p99_us", "us"), ("p99.9", "p999_us", "us"),
                      ("errors", "errors", "")],
        "stampede": [("origin requests", "origin_requests", ""), ("fastest client", "min_us", "us"),
                     ("median client", "p50_us", "us"), ("slowest client", "max_us", "us"),
                     ("errors", "errors", "")],
    }
    titles = scenario_titles(args)
    for scenario, rows in figures.items():
        for label, key, unit in rows:
            a, b = med(scenario, A, key), med(scenario, B, key)
            lines.append(f"| {titles[scenario]} | {label} | {fmt(a, unit)} | {fmt(b, unit)} | {ratio(a, b)} |")
    lines.append("")

    if scaling:
        lines += ["## Two cores (`threads: 2` / `worker_processes 2`, nothing pinned, `wrk -t2`)", "",
                  "| proxy | 1 KiB hits req/s, 1 core | 2 cores | scaling |", "|---|---:|---:|---:|"]
        for proxy in (A, B):
            one = med("hit_1k", proxy, "rps")
            two = median([r["rps"] for r in scaling.get(proxy, [])])
            if two is not None:
                lines.append(f"| {proxy} | {fmt(one, 'rps')} | {fmt(two, 'rps')} | {ratio(two, one)}× |")
        lines += ["", "With two cores the load generator and the origin share them with the proxy, "
                      "so this shows how far a proxy gains from a second core, not its ceiling.", ""]

    lines += ["## Memory after the runs", "",
              "| proxy | RSS | stored bytes | RSS − stored |", "|---|---:|---:|---:|"]
    for proxy, (rss, stored) in memory.items():
        stored_text = f"{stored / 2**20:.1f} MiB" if stored is not None else "on tmpfs, outside RSS"
        overhead = f"{(rss - (stored or 0)) / 2**20:.1f} MiB"
        lines.append(f"| {proxy} | {rss / 2**20:.1f} MiB | {stored_text} | {overhead} |")
    lines.append("")

    # The targets.
    checks = []

    def target(text, ok, detail):
        checks.append(f"| {text} | {detail} | {'met' if ok else '**not met**'} |")

    if has_nginx:
        a, b = med("hit_1k", A, "cpu_us_per_req"), med("hit_1k", B, "cpu_us_per_req")
        target("1 KiB hits: CPU/req ≤ 0.75 × nginx", a <= 0.75 * b, f"{ratio(a, b)} ×")
        a, b = med("hit_100k", A, "rps"), med("hit_100k", B, "rps")
        target("100 KiB hits: req/s ≥ nginx", a >= b, f"{ratio(a, b)} ×")
        a, b = med("rate_5000", A, "p99_us"), med("rate_5000", B, "p99_us")
        target(f"fixed {args.rate} req/s: p99 ≤ nginx", a <= b, f"{fmt(a, 'us')} vs {fmt(b, 'us')}")
        a, b = med("pass", A, "cpu_us_per_req"), med("pass", B, "cpu_us_per_req")
        target("pass: CPU/req ≤ 1.2 × nginx", a <= 1.2 * b, f"{ratio(a, b)} ×")
    origin_requests = [r["origin_requests"] for r in results.get(("stampede", A), [])]
    slowest_each = [r["max_us"] for r in results.get(("stampede", A), [])]
    slowest = max(slowest_each or [0])
    target("stampede: exactly 1 origin request", origin_requests and all(n == 1 for n in origin_requests),
           f"{origin_requests} (each run)")
    limit_us = (STAMPEDE_ORIGIN_MS + STAMPEDE_SLACK_MS) * 1000
    target(f"stampede: every client within {STAMPEDE_ORIGIN_MS} + {STAMPEDE_SLACK_MS} ms, in every run",
           slowest <= limit_us, "slowest client per run: " + ", ".join(fmt(v, "us") for v in slowest_each))
    rss, stored = memory[A]
    overhead = (rss - stored) / 2**20
    target(f"memory: RSS − stored ≤ {OVERHEAD_LIMIT_MIB} MiB", overhead <= OVERHEAD_LIMIT_MIB, f"{overhead:.1f} MiB")
    lines += ["## Targets (issue 9)", "", "| target | this run | |", "|---|---|---|"] + checks + [
        "", "Where the time of a cached answer goes, and what was changed for it: benches/PROFILE.md.", ""]

    lines += ["## Every run", "", "| scenario | proxy | rep | figures |", "|---|---|---:|---|"]
    for (scenario, proxy), runs in sorted(results.items()):
        for rep, r in enumerate(runs, 1):
            shown = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in r.items() if k not in ("mode",))
            lines.append(f"| {scenario} | {proxy} | {rep} | {shown} |")
    for proxy, runs in scaling.items():
        for rep, r in enumerate(runs, 1):
            lines.append(f"| hit_1k, 2 cores | {proxy} | {rep} | rps={r['rps']:.1f}, requests={r['requests']} |")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="length of each measured run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--only", help="comma-separated scenarios to run")
    parser.add_argument("--no-scaling", action="store_true", help="skip the two-core run")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "benches", "RESULTS.md"))
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)

    if not have("wrk") and not apt_install(["wrk"]):
        raise SystemExit("bench: wrk is missing and cannot be installed here: sudo apt-get install -y wrk")
    nginx = nginx_binary()
    if not nginx and (apt_install(["nginx-light"]) or apt_install(["nginx"])):
        nginx = nginx_binary()
    if not nginx:
        log("nginx is missing and cannot be installed: awning is measured alone")
    pinned = have("taskset") and (os.cpu_count() or 1) >= 2
    if not pinned:
        log("taskset or a second core is missing: nothing is pinned")

    if not args.no_build:
        log("building (release)")
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "awning", "--example", "bench_origin",
                        "--example", "bench_loadgen"], cwd=ROOT, check=True)

    workdir = tempfile.mkdtemp(prefix="awning-bench-")
    os.chmod(workdir, 0o755)
    origin = Origin(workdir, pinned)
    proxies = [Awning(workdir, origin, 1, pinned)]
    if nginx:
        proxies.append(Nginx(workdir, origin, nginx, 1, pinned))
    results, scaling, memory = {}, {}, {}
    try:
        chosen = scenarios(args, origin, workdir)
        if args.only:
            wanted = args.only.split(",")
            chosen = [s for s in chosen if s[0] in wanted]
        for rep in range(1, args.reps + 1):
            for key, title, go in chosen:
                for proxy in proxies:
                    result = go(proxy, rep)
                    results.setdefault((key, proxy.name), []).append(result)
                    log(f"rep {rep} {key:10} {proxy.name:6}",
                        " ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in result.items() if k != "mode"))
        memory["awning"] = (rss_kib(proxies[0].pids()) * 1024, proxies[0].stored_bytes())
        if nginx:
            memory["nginx"] = (rss_kib(proxies[1].pids()) * 1024, None)
        for proxy in proxies:
            proxy.stop()
        proxies = []

        if not args.no_scaling:
            proxies = [Awning(workdir, origin, 2, False)]
            if nginx:
                proxies.append(Nginx(workdir, origin, nginx, 2, False))
            for rep in range(1, args.reps + 1):
                for proxy in proxies:
                    warm(proxy.addr, ["/small"])
                    wrk(proxy.addr, "/small", args.warmup, args.connections, threads=2, pinned=False)
                    result = wrk(proxy.addr, "/small", args.seconds, args.connections, threads=2, pinned=False)
                    scaling.setdefault(proxy.name, []).append(result)
                    log(f"rep {rep} 2 cores    {proxy.name:6} rps={result['rps']:.0f}")
    finally:
        for proxy in proxies:
            proxy.stop()
        origin.stop()

    text = report(args, results, scaling, memory, nginx, started)
    with open(args.out, "w") as f:
        f.write(text)
    log("wrote", args.out)
    print(text)


if __name__ == "__main__":
    main()
