#!/usr/bin/env bash
# Makes docs/dashboard.png: runs the demo (awning + sample storefront) under a
# few minutes of mixed traffic (hits, misses, searches, carts, a login brute
# force that gets limited, a config reload and a rejected one), scrapes it
# with a local Prometheus (Debian's prometheus package) and draws the
# dashboard's panels with render.py (needs python3-matplotlib or
# `pip install matplotlib`). Uses the demo's ports 8080, 9090, 9091 and 9099.
#   deploy/grafana/picture.sh [minutes]
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-4}"
command -v prometheus >/dev/null || { echo "needs prometheus: sudo apt-get install -y prometheus"; exit 1; }
python3 -c "import matplotlib" 2>/dev/null || { echo "needs matplotlib: pip install matplotlib"; exit 1; }
cargo build -q
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cp -r proxy.yaml rules "$work/"
# One load generator stands for many customers: lift the per-client API and
# page limits (login keeps its brute-force limit, so 429s and lockouts show).
sed -i -e 's|api:     { rate: 300/min, burst: 50 }|api:     { rate: 60000/min, burst: 1000 }|' \
       -e 's|general: { rate: 500/min, burst: 100 }|general: { rate: 60000/min, burst: 1000 }|' "$work/rules/storefront.yaml"
grep -q "rate: 60000/min" "$work/rules/storefront.yaml" || { echo "rules/storefront.yaml changed: update picture.sh"; exit 1; }
target/debug/awning demo -c "$work/proxy.yaml" >"$work/demo.log" 2>&1 & pids+=($!)
awning_pid=$!
cat >"$work/prometheus.yml" <<YAML
global: { scrape_interval: 2s, evaluation_interval: 2s }
scrape_configs:
  - job_name: awning
    static_configs: [ { targets: ["127.0.0.1:9091"] } ]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:9099 >"$work/prometheus.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:9090/readyz >/dev/null && break; sleep 0.1; done

python3 - "$minutes" "$work" "$awning_pid" <<'PY'
import os, random, signal, sys, threading, time, urllib.request
minutes, work, awning = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
end = time.time() + minutes * 60
base = "http://127.0.0.1:8080"
def hit(path, data=None):
    headers = {"Content-Type": "application/json"} if data else {}
    try:
        urllib.request.urlopen(urllib.request.Request(base + path, data=data, headers=headers), timeout=10).read()
    except Exception:
        pass
def browse():
    while time.time() < end:
        r = random.random()
        if r < 0.45: hit(f"/api/products/{random.randint(1, 6)}")
        elif r < 0.6: hit(f"/_next/static/chunks/main-4f2a9c.js")
        elif r < 0.72: hit(f"/api/search?q={random.choice(['shoe', 'hat', 'coat', 'bag'])}")
        elif r < 0.82: hit("/api/cart", b'{"product": 3}')
        elif r < 0.97: hit(random.choice(["/", "/products/canvas-awning", "/products/deck-chair", "/api/categories"]))
        else: hit(f"/no-such-page-{random.randint(1, 1000)}")
        time.sleep(random.uniform(0.002, 0.02))
def brute_force():
    while time.time() < end:
        hit("/api/auth/login", b'{"user": "a", "password": "guess"}')
        time.sleep(0.5)
threads = [threading.Thread(target=browse) for _ in range(6)] + [threading.Thread(target=brute_force)]
for t in threads: t.start()
rule = os.path.join(work, "rules", "storefront.yaml")
good = open(rule).read()
time.sleep(minutes * 60 / 3)
open(rule, "w").write(good + "\n# a reload\n")          # applied (watched)
time.sleep(minutes * 60 / 3)
open(rule, "w").write("routes: [\n")                      # rejected
time.sleep(3)
open(rule, "w").write(good)                               # applied again
for t in threads: t.join()
PY
sleep 4  # one more scrape after the traffic
mkdir -p docs
python3 deploy/grafana/render.py --prometheus http://127.0.0.1:9099 --out docs/dashboard.png \
  --minutes "$minutes" --rate-window 1m
