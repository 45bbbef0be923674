//! The metrics listener after real traffic: request latency by route, cache
//! outcome and status class, origin latency and errors, limits, slow
//! requests, and bounded series whatever clients send.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const RULES: &str = r#"
limits:
  tight: { rate: 1/min, burst: 1 }
routes:
  - name: products
    match: { prefix: "/api/products" }
    upstream: shop
    cache: { mode: override, ttl: 10m }
  - name: login
    match: { prefix: "/login" }
    upstream: shop
    limits: [tight]
  - name: slow
    match: { prefix: "/slow" }
    upstream: shop
    slow: { warn: 100ms, critical: 10s }
  - name: broken
    match: { prefix: "/broken" }
    upstream: dead
"#;

fn start(origin: &FakeOrigin) -> ProxyUnderTest {
    // Nothing listens on `dead`'s port.
    let dead: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .upstream("dead", &[dead], "")
            .rules(RULES),
    )
}

/// Every sample of the exposition: `name{labels}` -> value.
fn scrape(proxy: &ProxyUnderTest) -> HashMap<String, f64> {
    let r = get(proxy.metrics, "/metrics");
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} not exported"))
}

#[test]
fn the_exposition_tells_what_the_traffic_was() {
    let origin = FakeOrigin::start(|req| {
        if req.path().starts_with("/slow") {
            Reply::ok("late").delay(Duration::from_millis(150))
        } else {
            Reply::ok("ok")
        }
    });
    let proxy = start(&origin);
    let statuses = [
        get(proxy.addr, "/api/products").status,
        get(proxy.addr, "/api/products").status,
        get(proxy.addr, "/login").status,
        get(proxy.addr, "/login").status,
        get(proxy.addr, "/broken").status,
        get(proxy.addr, "/nowhere").status,
        get(proxy.addr, "/slow").status,
    ];
    assert_eq!(statuses, [200, 200, 200, 429, 502, 404, 200]);
    let m = eventually(
        "the last request to be counted",
        Duration::from_secs(5),
        || {
            let m = scrape(&proxy);
            let key = "awning_http_request_duration_seconds_count{cache=\"bypass\",method=\"GET\",route=\"slow\",status=\"2xx\"}";
            m.contains_key(key).then_some(m)
        },
    );
    let req = |route: &str, status: &str, cache: &str| {
        value(
            &m,
            &format!("awning_http_request_duration_seconds_count{{cache=\"{cache}\",method=\"GET\",route=\"{route}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(req("products", "2xx", "miss"), 1.0);
    assert_eq!(req("products", "2xx", "hit"), 1.0);
    assert_eq!(req("login", "2xx", "bypass"), 1.0);
    assert_eq!(req("login", "4xx", "bypass"), 1.0);
    assert_eq!(req("broken", "5xx", "bypass"), 1.0);
    assert_eq!(req("unmatched", "4xx", "bypass"), 1.0);
    assert_eq!(
        value(
            &m,
            "awning_upstream_response_duration_seconds_count{route=\"products\",upstream=\"shop\"}"
        ),
        1.0
    );
    assert!(
        value(
            &m,
            "awning_upstream_errors_total{kind=\"ConnectRefused\",upstream=\"dead\"}"
        ) >= 1.0
    );
    assert_eq!(
        value(
            &m,
            "awning_ratelimit_decisions_total{decision=\"deny\",policy=\"tight\",tier=\"local\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "awning_slow_requests_total{level=\"warn\",route=\"slow\"}"
        ),
        1.0
    );
    assert!(proxy.stderr().contains("slow request (warn): route slow"));
    let version = format!(
        "awning_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&m, &version), 1.0);
    assert!(m.contains_key("awning_open_connections"));
    assert!(value(&m, "awning_cache_stored_objects") >= 1.0);
    assert!(m.contains_key("awning_cache_evicted_bytes_total"));
    assert!(value(&m, "process_resident_memory_bytes") > 0.0);
    assert!(value(&m, "process_open_fds") > 0.0);
    let exposition = get(proxy.metrics, "/metrics").body;
    promtool_accepts(&exposition);
    dashboard_queries_only_exported_metrics(&String::from_utf8_lossy(&exposition));
    // The slow request's latency landed above 100 ms.
    let fast = value(
        &m,
        "awning_http_request_duration_seconds_bucket{cache=\"bypass\",method=\"GET\",route=\"slow\",status=\"2xx\",le=\"0.1\"}",
    );
    assert_eq!(fast, 0.0);
}

#[test]
fn ten_thousand_distinct_paths_hosts_and_methods_add_no_series() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin);
    let mut after_first_thousand = 0;
    for i in 0..10_000 {
        let path = match i % 3 {
            0 => format!("/nowhere/{i}"),
            1 => format!("/login/{i}?q={i}"),
            _ => format!("/x{i}"),
        };
        let method = if i % 2 == 0 { "GET" } else { "BREW" };
        let r = Request::new(method, &path)
            .host(Some(&format!("h{i}.example")))
            .send(proxy.addr);
        assert!(r.status < 500);
        if i == 999 {
            after_first_thousand = scrape(&proxy).len();
        }
    }
    let after = scrape(&proxy);
    assert_eq!(
        after.len(),
        after_first_thousand,
        "series grew with distinct paths, hosts or methods"
    );
    assert!(
        after
            .keys()
            .all(|k| !k.contains("/nowhere/") && !k.contains("example")),
        "a path or host became a label"
    );
}

#[test]
fn the_metrics_listener_answers_only_get_and_head_of_metrics() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin);
    assert_eq!(get(proxy.metrics, "/metrics").status, 200);
    assert_eq!(
        Request::new("HEAD", "/metrics").send(proxy.metrics).status,
        200
    );
    assert_eq!(
        Request::post("/metrics", b"x").send(proxy.metrics).status,
        405
    );
    assert_eq!(get(proxy.metrics, "/other").status, 404);
}

/// `promtool check metrics` finds no problem in `exposition`.
fn promtool_accepts(exposition: &[u8]) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: install it with `apt-get install prometheus` (or `make deps`)",
        );
    child.stdin.take().unwrap().write_all(exposition).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every metric `deploy/grafana/awning.json` queries is in `exposition`.
fn dashboard_queries_only_exported_metrics(exposition: &str) {
    let path = common::proxy::repo_root().join("deploy/grafana/awning.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr
                .match_indices("awning_")
                .chain(expr.match_indices("process_"))
            {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried.push(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in queried {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            exposition.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which is not exported"
        );
    }
}
