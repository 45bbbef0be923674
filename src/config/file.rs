//! The serde mirror of the files operators write. Every struct denies unknown
//! keys so a typo is an error, not a silently ignored setting. Nothing here is
//! validated beyond types; `validate.rs` turns these into a typed `Config`.

use std::path::PathBuf;

use serde::Deserialize;

use super::units::{HumanDuration, HumanSize};

/// Top-level keys of `proxy.yaml`, each deserialised on its own so that one
/// broken section does not hide the errors in the others.
pub const PROXY_KEYS: &[&str] = &[
    "threads",
    "listen",
    "upstreams",
    "admin",
    "metrics",
    "cache",
    "redis",
    "rules",
    "shutdown_grace",
];

/// Top-level keys of a rule file.
pub const RULE_KEYS: &[&str] = &["routes"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListen {
    #[serde(default)]
    pub http: Vec<String>,
    #[serde(default)]
    pub tls: Vec<FileTlsListener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTlsListener {
    pub addr: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub servers: Vec<String>,
    pub connect_timeout: Option<HumanDuration>,
    pub read_timeout: Option<HumanDuration>,
    pub write_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub fail_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub tls: bool,
    pub sni: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Option<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    pub memory: Option<HumanSize>,
    pub max_object: Option<HumanSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: FileMatch,
    pub upstream: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}
