//! Hot reload: SIGHUP, the file watcher and `POST /reload` apply a changed
//! config without dropping a request; a broken config changes nothing.

mod common;

use std::fs;
use std::io::{BufReader, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::client::{connect, read_response};
use common::*;

const TOKEN: &str = "reload-token";

/// Rules whose only route marks its answers with `x-rule: MARK`.
fn rules(mark: &str) -> String {
    format!(
        "routes:\n  - name: all\n    match: {{ path: \"/**\" }}\n    upstream: shop\n    response_headers: {{ set: {{ x-rule: \"{mark}\" }} }}\n"
    )
}

fn start(origin: &FakeOrigin, extra: &str, rules_yaml: &str) -> ProxyUnderTest {
    let token = tempfile::NamedTempFile::new().unwrap();
    fs::write(token.path(), TOKEN).unwrap();
    let (_, token_path) = token.keep().unwrap();
    ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .admin_token_file(&token_path)
            .extra(extra)
            .rules(rules_yaml),
    )
}

fn rule_file(proxy: &ProxyUnderTest) -> std::path::PathBuf {
    proxy.config_dir().join("rules/routes.yaml")
}

/// Replaces `path` the way editors and config management do: a new file
/// renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn admin_post(proxy: &ProxyUnderTest, path: &str) -> Response {
    Request::post(path, b"")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send(proxy.admin)
}

fn marker(proxy: &ProxyUnderTest) -> Option<String> {
    get(proxy.addr, "/p").header("x-rule").map(str::to_string)
}

/// Waits until answers carry `mark`; returns how long that took.
fn live_within(proxy: &ProxyUnderTest, mark: &str, since: Instant, limit: Duration) -> Duration {
    eventually(&format!("rule {mark} live"), limit, || {
        (marker(proxy).as_deref() == Some(mark)).then_some(())
    });
    since.elapsed()
}

/// Keep-alive clients sending requests until stopped; counts answers and
/// failures (anything but a 200 with a rule marker, or a broken connection).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                thread::spawn(move || {
                    // Bounded: a stuck proxy ends the loop rather than the test run.
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut conn: Option<BufReader<std::net::TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let reader = conn.get_or_insert_with(|| BufReader::new(connect(addr)));
                        let exchange =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                reader
                                    .get_mut()
                                    .write_all(b"GET /load HTTP/1.1\r\nHost: shop.test\r\n\r\n")
                                    .expect("write request");
                                read_response(reader, false, true)
                            }));
                        match exchange {
                            Ok(r) if r.status == 200 && r.has_header("x-rule") => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if r.header("connection") == Some("close") {
                                    conn = None;
                                }
                            }
                            Ok(r) => {
                                eprintln!("load: {} {:?}", r.status, r.headers);
                                failed.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Stops the clients; returns (answered, failed).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[derive(Clone, Copy, Debug)]
enum How {
    Signal,
    Watch,
    Admin,
}

/// 50 reloads alternating between two configs under constant keep-alive
/// load: no request fails and each change is live within a second.
fn fifty_reloads_under_load(how: How) {
    let origin = FakeOrigin::fixed("ok");
    let extra = match how {
        How::Watch => "",
        // The watcher would race the trigger under test.
        How::Signal | How::Admin => "reload: { watch: false }",
    };
    let proxy = start(&origin, extra, &rules("A"));
    assert_eq!(marker(&proxy).as_deref(), Some("A"));
    let load = Load::start(proxy.addr, 2);
    let mut slowest = Duration::ZERO;
    for i in 1..=50 {
        let mark = if i % 2 == 1 { "B" } else { "A" };
        let text = rules(mark);
        // Half the edits rewrite the file in place (a partial file may be
        // read and rejected on the way), half rename a new one over it.
        if i % 4 < 2 {
            replace(&rule_file(&proxy), &text);
        } else {
            fs::write(rule_file(&proxy), &text).unwrap();
        }
        let triggered = Instant::now();
        match how {
            How::Signal => proxy.signal(libc::SIGHUP),
            How::Watch => {}
            How::Admin => {
                let r = admin_post(&proxy, "/reload");
                assert_eq!(r.status, 200, "{}", r.text());
                let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(doc["outcome"], "applied", "{doc}");
                assert_eq!(doc["trigger"], "admin");
                assert_eq!(
                    marker(&proxy).as_deref(),
                    Some(mark),
                    "live when POST /reload answers"
                );
            }
        }
        let took = live_within(&proxy, mark, triggered, Duration::from_secs(5));
        assert!(
            took < Duration::from_secs(1),
            "reload {i} ({how:?}) took {took:?}"
        );
        slowest = slowest.max(took);
    }
    let (answered, failed) = load.finish();
    eprintln!("{how:?}: 50 reloads, slowest live after {slowest:?}, {answered} requests under load, {failed} failed");
    assert_eq!(failed, 0, "requests failed during reloads");
    assert!(answered >= 50, "the load kept running ({answered} answers)");
    let generation = proxy.metric("awning_config_generation");
    assert!(generation >= 51.0, "generation {generation}");
    assert!(proxy.metric("awning_config_reloads_total{outcome=\"applied\"}") >= 50.0);
}

#[test]
fn fifty_sighup_reloads_under_load_drop_nothing() {
    fifty_reloads_under_load(How::Signal);
}

#[test]
fn fifty_watched_file_changes_under_load_drop_nothing() {
    fifty_reloads_under_load(How::Watch);
}

#[test]
fn fifty_admin_reloads_under_load_drop_nothing() {
    fifty_reloads_under_load(How::Admin);
}

#[test]
fn broken_configs_are_rejected_with_their_errors_and_change_nothing() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin, "reload: { watch: false }", &rules("good"));
    let file = rule_file(&proxy);
    let proxy_yaml = proxy.config_dir().join("proxy.yaml");
    let good_proxy_yaml = fs::read_to_string(&proxy_yaml).unwrap();
    let half = rules("half");
    // (what, how to break the files, the file the error names, what it says)
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "invalid YAML",
            Box::new(|| {
                fs::write(&file, "routes:\n  - name: x\n    match: {path: \"/\"\n").unwrap()
            }),
            "routes.yaml",
            "invalid YAML",
        ),
        (
            "unknown key",
            Box::new(|| fs::write(&file, rules("x").replace("upstream:", "upstraem:")).unwrap()),
            "routes.yaml",
            "unknown field `upstraem`",
        ),
        (
            "bad reference",
            Box::new(|| {
                fs::write(
                    &file,
                    rules("x").replace("upstream: shop", "upstream: nope"),
                )
                .unwrap()
            }),
            "routes.yaml",
            "nope",
        ),
        (
            "invalid pattern",
            Box::new(|| fs::write(&file, rules("x").replace("/**", "/[a-")).unwrap()),
            "routes.yaml",
            "/[a-",
        ),
        (
            "half-written file",
            Box::new(|| fs::write(&file, &half[..half.len() - 30]).unwrap()),
            "routes.yaml",
            "",
        ),
        (
            "a rule file that disappeared",
            Box::new(|| fs::remove_file(&file).unwrap()),
            "proxy.yaml",
            "matches no file",
        ),
        (
            "a rule file replaced by a directory",
            Box::new(|| {
                fs::remove_file(&file).unwrap();
                fs::create_dir(&file).unwrap();
            }),
            // `rules/*.yaml` matches files only: no rule file is left.
            "proxy.yaml",
            "matches no file",
        ),
        (
            "unknown key in proxy.yaml",
            Box::new(|| {
                fs::write(&proxy_yaml, format!("{good_proxy_yaml}\ncahce: {{}}\n")).unwrap()
            }),
            "proxy.yaml",
            "unknown key `cahce`",
        ),
    ];
    for (i, (what, breaks, in_file, says)) in cases.iter().enumerate() {
        breaks();
        let r = admin_post(&proxy, "/reload");
        assert_eq!(r.status, 422, "{what}: {}", r.text());
        let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(doc["outcome"], "rejected", "{what}");
        assert_eq!(
            doc["generation"], 1,
            "{what}: the running generation is unchanged"
        );
        let errors = doc["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "{what}: {doc}");
        let named = errors.iter().any(|e| {
            e["file"].as_str().unwrap_or("").ends_with(in_file)
                && e["message"].as_str().unwrap_or("").contains(says)
        });
        assert!(
            named,
            "{what}: expected an error in {in_file} saying {says:?}: {doc}"
        );
        // Positions are given wherever the text has one.
        if *in_file == "routes.yaml" && !file.is_dir() {
            assert!(errors.iter().all(|e| e["line"].is_u64()), "{what}: {doc}");
        }
        assert_eq!(
            marker(&proxy).as_deref(),
            Some("good"),
            "{what}: old rules still answer"
        );
        assert_eq!(
            proxy.metric("awning_config_reloads_total{outcome=\"rejected\"}") as usize,
            i + 1
        );
        // Repair for the next case.
        if file.is_dir() {
            fs::remove_dir(&file).unwrap();
        }
        fs::write(&file, rules("good")).unwrap();
        fs::write(&proxy_yaml, &good_proxy_yaml).unwrap();
    }
    let log = proxy.stderr();
    assert!(
        log.contains("routes.yaml:3:") && log.contains("config reload rejected"),
        "errors are logged with file:line:\n{log}"
    );
    // A good change after all that applies.
    fs::write(&file, rules("fixed")).unwrap();
    let r = admin_post(&proxy, "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(marker(&proxy).as_deref(), Some("fixed"));
}

#[test]
fn the_watcher_follows_a_configmap_style_symlink_swap() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin, "", &rules("v1"));
    // rules/routes.yaml -> ..data/routes.yaml, ..data -> ..v1: how Kubernetes
    // mounts a ConfigMap and swaps it (one atomic rename of ..data).
    let rules_dir = proxy.config_dir().join("rules");
    let version = |name: &str, mark: &str| {
        let dir = rules_dir.join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("routes.yaml"), rules(mark)).unwrap();
    };
    version("..v1", "v1");
    std::os::unix::fs::symlink("..v1", rules_dir.join("..data")).unwrap();
    let tmp_link = rules_dir.join("routes.yaml.link");
    std::os::unix::fs::symlink("..data/routes.yaml", &tmp_link).unwrap();
    fs::rename(&tmp_link, rules_dir.join("routes.yaml")).unwrap();
    assert_eq!(marker(&proxy).as_deref(), Some("v1"));

    for (n, mark) in [(2, "v2"), (3, "v3")] {
        version(&format!("..v{n}"), mark);
        let swap = rules_dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{n}"), &swap).unwrap();
        let swapped = Instant::now();
        fs::rename(&swap, rules_dir.join("..data")).unwrap();
        let took = live_within(&proxy, mark, swapped, Duration::from_secs(5));
        assert!(took < Duration::from_secs(1), "{mark} live after {took:?}");
    }
}

#[test]
fn a_storm_of_reloads_ends_on_the_newest_valid_config() {
    let origin = FakeOrigin::fixed("ok");
    // SIGHUP alone: the watcher would reload on its own.
    let proxy = start(&origin, "reload: { watch: false }", &rules("start"));
    let file = rule_file(&proxy);
    let load = Load::start(proxy.addr, 1);
    let storm = Instant::now();
    for i in 0..100 {
        // Every fifth version is broken; the last one is valid.
        let text = if i % 5 == 3 {
            "routes: [\n".to_string()
        } else {
            rules(&format!("v{i}"))
        };
        replace(&file, &text);
        proxy.signal(libc::SIGHUP);
        thread::sleep(Duration::from_millis(8));
    }
    let stormed = storm.elapsed();
    live_within(&proxy, "v99", Instant::now(), Duration::from_secs(5));
    let (answered, failed) = load.finish();
    assert_eq!(failed, 0, "{answered} answered during the storm");
    let reloads: f64 = ["applied", "unchanged", "rejected"]
        .iter()
        .map(|o| proxy.metric(&format!("awning_config_reloads_total{{outcome=\"{o}\"}}")))
        .sum();
    eprintln!("100 changes + SIGHUPs in {stormed:?} -> {reloads} reloads");
    assert!((1.0..=100.0).contains(&reloads), "{reloads} reloads");
    assert_eq!(get(proxy.admin, "/healthz").status, 200);
}

#[test]
fn cache_entries_unchanged_limits_and_server_health_survive_a_reload() {
    let origin = FakeOrigin::start(|r| match r.path() {
        "/cached" => Reply::ok("stored").header("cache-control", "public, max-age=300"),
        _ => Reply::ok("ok"),
    });
    let dead: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let rules_for = |extra_route: &str, login_limit: u32| {
        format!(
            "limits:\n  login: {{ rate: {login_limit}/min }}\n  api: {{ rate: 2/min }}\n\
             routes:\n  - {{ name: cached, match: {{ path: /cached }}, upstream: shop, cache: {{ mode: origin }} }}\n\
             \x20 - {{ name: login, match: {{ path: /login }}, upstream: shop, limits: [login] }}\n\
             \x20 - {{ name: api, match: {{ path: /api }}, upstream: shop, limits: [api] }}\n\
             \x20 - {{ name: flaky, match: {{ path: /flaky }}, upstream: flaky }}\n{extra_route}"
        )
    };
    let token = tempfile::NamedTempFile::new().unwrap();
    fs::write(token.path(), TOKEN).unwrap();
    let proxy = ProxyUnderTest::start(
        Setup::new()
            .upstream("shop", &[origin.addr()], "")
            .upstream("flaky", &[dead, origin.addr()], "fail_timeout: 60s")
            .admin_token_file(token.path())
            .extra("reload: { watch: false }")
            .rules(&rules_for("", 2)),
    );
    assert_eq!(get(proxy.addr, "/cached").status, 200);
    assert_eq!(origin.count("/cached"), 1);
    for _ in 0..2 {
        assert_eq!(get(proxy.addr, "/login").status, 200);
        assert_eq!(get(proxy.addr, "/api").status, 200);
    }
    // The dead server is found out and taken out for 60 s.
    eventually(
        "the dead server marked down",
        Duration::from_secs(5),
        || {
            get(proxy.addr, "/flaky");
            (proxy.metric("awning_upstream_healthy_servers{upstream=\"flaky\"}") == 1.0)
                .then_some(())
        },
    );

    // Reload: a new route, `login` allows 3 now, `api` is unchanged.
    fs::write(
        proxy.config_dir().join("rules/routes.yaml"),
        rules_for(
            "  - { name: new, match: { path: /new }, upstream: shop }\n",
            3,
        ),
    )
    .unwrap();
    let r = admin_post(&proxy, "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(proxy.metric("awning_config_generation"), 2.0);

    let hit = get(proxy.addr, "/cached");
    assert_eq!((hit.status, hit.text().as_str()), (200, "stored"));
    assert_eq!(
        origin.count("/cached"),
        1,
        "the cached copy answered after the reload"
    );
    assert_eq!(
        get(proxy.addr, "/api").status,
        429,
        "the unchanged policy kept its counter"
    );
    assert_eq!(
        get(proxy.addr, "/login").status,
        200,
        "the changed policy started afresh"
    );
    assert_eq!(
        proxy.metric("awning_upstream_healthy_servers{upstream=\"flaky\"}"),
        1.0,
        "the dead server is still out"
    );
    assert_eq!(get(proxy.addr, "/new").status, 200);
}

#[test]
fn rollback_restores_the_previous_config_and_the_config_is_visible() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(&origin, "reload: { watch: false }", &rules("first"));
    let auth = format!("Bearer {TOKEN}");
    let view = || {
        let r = Request::get("/config")
            .header("authorization", &auth)
            .send(proxy.admin);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()
    };
    assert_eq!(
        get(proxy.admin, "/config").status,
        401,
        "the config view needs the token"
    );
    let first = view();
    assert_eq!(first["generation"], 1);
    assert_eq!(
        admin_post(&proxy, "/config/rollback").status,
        409,
        "nothing to roll back to yet"
    );

    fs::write(rule_file(&proxy), rules("second")).unwrap();
    assert_eq!(admin_post(&proxy, "/reload").status, 200);
    assert_eq!(marker(&proxy).as_deref(), Some("second"));
    let second = view();
    assert_eq!(second["generation"], 2);
    assert_ne!(second["hash"], first["hash"]);
    let ready = proxy.readiness();
    assert_eq!(ready["checks"]["config"]["hash"], second["hash"]);
    assert_eq!(ready["checks"]["config"]["previous_hash"], first["hash"]);
    let hash = second["hash"].as_str().unwrap();
    assert_eq!(
        proxy.metric(&format!("awning_config_info{{hash=\"{hash}\"}}")),
        1.0
    );
    let rule_text =
        second["files"][1]["content"]["routes"][0]["response_headers"]["set"]["x-rule"].clone();
    assert_eq!(rule_text, "second", "{second}");
    assert_eq!(second["effective"]["routes"][0]["name"], "all");

    let r = admin_post(&proxy, "/config/rollback");
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (doc["trigger"].as_str(), doc["generation"].as_u64()),
        (Some("rollback"), Some(3))
    );
    assert_eq!(
        doc["hash"], first["hash"],
        "the first config's content is back"
    );
    assert_eq!(marker(&proxy).as_deref(), Some("first"));
    assert_eq!(view()["hash"], first["hash"]);
}

#[test]
fn settings_read_at_start_are_reported_as_needing_a_restart() {
    let origin = FakeOrigin::fixed("ok");
    let proxy = start(
        &origin,
        "reload: { watch: false }\ncache: { memory: 64MiB }",
        &rules("a"),
    );
    let proxy_yaml = proxy.config_dir().join("proxy.yaml");
    let text = fs::read_to_string(&proxy_yaml).unwrap();
    let moved = free_port();
    let text = text
        .replace("memory: 64MiB", "memory: 128MiB")
        .replace(&proxy.addr.to_string(), &format!("127.0.0.1:{moved}"));
    fs::write(&proxy_yaml, text).unwrap();
    fs::write(rule_file(&proxy), rules("b")).unwrap();
    let r = admin_post(&proxy, "/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["outcome"], "applied");
    assert_eq!(
        doc["needs_restart"],
        serde_json::json!(["listen.http", "cache.memory"]),
        "{doc}"
    );
    assert_eq!(marker(&proxy).as_deref(), Some("b"), "the rest applied");
    assert!(std::net::TcpStream::connect(("127.0.0.1", moved)).is_err());
    assert_eq!(
        proxy.metric("awning_cache_capacity_bytes"),
        (64 * 1024 * 1024) as f64
    );
}
