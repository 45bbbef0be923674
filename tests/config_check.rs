//! `awning check` and `awning run` against good and broken configurations.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::proxy::{binary, repo_root};
use common::*;

fn awning(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run awning");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_config_passes_check_with_a_one_line_summary() {
    let config = repo_root().join("proxy.yaml");
    let (code, stdout, stderr) = awning(&["check", "-c", &config.to_string_lossy()]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("configuration OK: "), "{stdout}");
    assert!(stdout.contains("routes"), "{stdout}");
}

#[test]
fn every_invalid_fixture_fails_with_its_expected_message_and_line() {
    let dir = repo_root().join("tests/fixtures/invalid");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "fixtures missing in {}", dir.display());
    for case in cases {
        let expected = fs::read_to_string(case.join("expected"))
            .unwrap_or_else(|_| panic!("{} has no `expected` file", case.display()));
        let config = case.join("proxy.yaml");
        let (code, stdout, stderr) = awning(&["check", "-c", &config.to_string_lossy()]);
        let name = case.file_name().unwrap().to_string_lossy();
        assert_eq!(
            code, 2,
            "{name}: exit code\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(stdout.is_empty(), "{name}: printed a summary: {stdout}");
        for want in expected.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                stderr.contains(want),
                "{name}: expected\n  {want}\nin\n{stderr}"
            );
        }
    }
}

#[test]
fn missing_config_file_is_a_config_error() {
    let (code, _, stderr) = awning(&["check", "-c", "/nonexistent/awning/proxy.yaml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/awning/proxy.yaml: cannot read file"),
        "{stderr}"
    );
}

#[test]
fn run_with_a_broken_config_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    fs::write(
        dir.path().join("proxy.yaml"),
        format!("listen:\n  http: [\"127.0.0.1:{port}\"]\nupstreams:\n  shop:\n    servers: [\"127.0.0.1:1\"]\nrules: [\"rules.yaml\"]\n"),
    )
    .unwrap();
    fs::write(
        dir.path().join("rules.yaml"),
        "routes:\n  - name: x\n    match: { path: \"/**\" }\n    upstream: nope\n",
    )
    .unwrap();
    let config = dir.path().join("proxy.yaml");
    let mut child = Command::new(binary())
        .args(["run", "-c", &config.to_string_lossy()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually("awning run to give up", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("rules.yaml:4:15: routes[0].upstream: unknown upstream `nope`"),
        "{stderr}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a listener was started"
    );
}

#[test]
fn help_and_version_read_well() {
    let (code, stdout, _) = awning(&["--help"]);
    assert_eq!(code, 0);
    for word in ["run", "check", "demo", "Exit codes"] {
        assert!(stdout.contains(word), "--help lacks {word}:\n{stdout}");
    }
    let (code, stdout, _) = awning(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("awning {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn shipped_rules_parse_into_the_documented_routes() {
    let config = awning::config::load(&repo_root().join("proxy.yaml")).expect("shipped config");
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"next-static"));
    assert_eq!(names.last(), Some(&"pages"));
    assert!(Path::new(&config.rule_files[0]).ends_with("rules/storefront.yaml"));
}
