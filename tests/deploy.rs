//! The deployment files: the systemd unit passes `systemd-analyze verify` and
//! rates "OK" or better in `systemd-analyze security`; the Dockerfile builds
//! with the README's command, runs unprivileged, health-checks without a
//! shell, and its container config is valid.

mod common;

use std::fs;
use std::process::Command;

use common::proxy::{binary, repo_root};

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "systemd-analyze is needed to check systemd/awning.service ({e}); \
                 install it with `sudo apt-get install -y systemd` (or run `make deps`)"
            )
        })
}

/// The shipped unit, pointing at the binary under test (verify checks that
/// the executables exist).
fn unit_under_test() -> (tempfile::TempDir, std::path::PathBuf) {
    let text = fs::read_to_string(repo_root().join("systemd/awning.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("awning.service");
    fs::write(&path, text.replace("/usr/local/bin/awning", binary())).unwrap();
    (dir, path)
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    let (_dir, unit) = unit_under_test();
    let out = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        !said.contains("awning.service"),
        "systemd-analyze verify warned about the unit:\n{said}"
    );
}

#[test]
fn the_systemd_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let (_dir, unit) = unit_under_test();
    let out = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let line = said
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    eprintln!("{line}");
    assert!(score <= 2.0, "{line}\n{said}");
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_binds_low_ports_unprivileged() {
    let text = fs::read_to_string(repo_root().join("systemd/awning.service")).unwrap();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for wanted in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=awning",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "Type=notify",
    ] {
        assert!(settings.contains(&wanted), "{wanted} missing from the unit");
    }
    // Every directive says why it is there.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let directive = l.contains('=') && !l.starts_with('#') && !l.trim().is_empty();
        if directive && i > 0 {
            let commented = lines[..i]
                .iter()
                .rev()
                .take_while(|p| !p.trim().is_empty())
                .any(|p| p.starts_with('#'));
            assert!(commented, "line {}: `{l}` has no comment above it", i + 1);
        }
    }
}

#[test]
fn the_dockerfile_builds_with_the_readmes_command_and_runs_unprivileged() {
    let docker = fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let from = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(from >= 2, "multi-stage: a build stage and a runtime stage");

    // The build command is the README's.
    let builds: Vec<&str> = docker
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches("&&").trim();
            let l = l.strip_prefix("RUN ").unwrap_or(l);
            l.starts_with("cargo build")
                .then(|| l.trim_end_matches('\\').trim())
        })
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "a dependency build and the final build: {builds:?}"
    );
    for b in &builds {
        assert!(readme.contains(b), "the README does not give `{b}`");
    }
    // Dependencies are built from the manifests before the sources arrive.
    let pos = |needle: &str| {
        docker
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in the Dockerfile"))
    };
    assert!(pos("COPY Cargo.toml Cargo.lock") < pos(builds[0]));
    assert!(pos(builds[0]) < pos("COPY src"));

    let user = docker
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    assert!(
        docker.contains("HEALTHCHECK") && docker.contains(r#""/usr/local/bin/awning", "health""#),
        "a health check that needs no shell tools"
    );
    let expose = docker
        .lines()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("EXPOSE");
    for port in ["8080", "9090", "9091"] {
        assert!(expose.contains(port), "{expose}");
    }
    assert!(docker.contains("/etc/awning/proxy.yaml") && docker.contains("/etc/awning/rules"));

    let ignore = fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "target/ stays out of the context"
    );
}

/// The image's config is proxy.yaml and rules/ with the Dockerfile's `sed`
/// applied; it must pass `awning check` (the image build runs it too).
#[test]
fn the_container_config_is_valid() {
    let docker = fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let sed = docker
        .lines()
        .find_map(|l| l.strip_prefix("RUN sed -i "))
        .expect("the Dockerfile edits the listeners with sed");
    let sed = sed
        .split(" /etc/awning/proxy.yaml")
        .next()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        repo_root().join("proxy.yaml"),
        dir.path().join("proxy.yaml"),
    )
    .unwrap();
    fs::create_dir(dir.path().join("rules")).unwrap();
    for f in fs::read_dir(repo_root().join("rules")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), dir.path().join("rules").join(f.file_name())).unwrap();
    }
    let config = dir.path().join("proxy.yaml");
    let status = Command::new("sed")
        .arg("-i")
        .args(shell_words(&sed))
        .arg(&config)
        .status()
        .unwrap();
    assert!(status.success());
    let text = fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("\"0.0.0.0:8080\"") && text.contains("\"0.0.0.0:9091\""),
        "{text}"
    );
    assert!(
        text.contains("\"127.0.0.1:9090\""),
        "the admin API stays on loopback"
    );
    let out = Command::new(binary())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `-e 's/a/b/' -e 's/c/d/'` -> its words, single quotes removed.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
