//! The command line: `run`, `check`, `reload`, `purge`, `health`, `demo`.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::{self, RunOptions, EXIT_CONFIG};
use crate::config::{self, Config};
use crate::demo;

#[derive(Debug, Parser)]
#[command(
    name = "awning",
    version,
    about = "An edge proxy for online shops: caching, rate limiting and hardening in front of your storefront",
    long_about = "awning sits in front of a shop's storefront (for example a Next.js app), routes requests to it \
                  and protects it. Configuration lives in proxy.yaml and the rule files it lists.\n\n\
                  Exit codes: 0 success, 1 runtime failure, 2 configuration error."
)]
pub struct Cli {
    /// Log format of the operational log on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The `-c` option of the commands that read a node's configuration.
#[derive(Debug, Args)]
pub struct ConfigPath {
    /// proxy.yaml to load (rule files are found relative to it).
    #[arg(
        short = 'c',
        long = "config",
        default_value = "proxy.yaml",
        env = "AWNING_CONFIG"
    )]
    pub path: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        #[command(flatten)]
        config: ConfigPath,
        /// Take over the listeners of a running awning (binary upgrade; send it SIGQUIT).
        #[arg(long)]
        upgrade: bool,
    },
    /// Check the configuration and exit: 0 and a summary, or 2 and every error.
    Check {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Purge cached responses through the admin API of a running awning.
    Purge {
        #[command(flatten)]
        config: ConfigPath,
        /// A URL to purge, every variant (repeatable); without a scheme, both http and https.
        #[arg(long = "url", value_name = "URL")]
        urls: Vec<String>,
        /// Purge every URL starting with this (repeatable), e.g. shop.example.com/api/search.
        #[arg(long = "prefix", value_name = "PREFIX")]
        prefixes: Vec<String>,
        /// Purge every response tagged so by the origin (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Mark stale instead of deleting (the next request revalidates).
        #[arg(long)]
        soft: bool,
    },
    /// Ask a running awning to reload its configuration (like SIGHUP, but
    /// prints the outcome: 0 applied or unchanged, 2 rejected with its errors).
    Reload {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Exit 0 when the awning of this config is alive (`--ready`: ready for
    /// traffic), 1 otherwise. For container health checks.
    Health {
        /// The admin listener to ask; without it, admin.listen from the config.
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
        #[command(flatten)]
        config: ConfigPath,
        /// Check /readyz instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
    /// Run a sample storefront on loopback with awning in front of it.
    Demo {
        #[arg(short = 'c', long = "config", default_value = "proxy.yaml")]
        config: PathBuf,
        /// Address for the sample storefront (default: a free loopback port).
        #[arg(long)]
        storefront: Option<std::net::SocketAddr>,
        /// Run only the sample storefront (no proxy), on --storefront.
        #[arg(long, requires = "storefront")]
        storefront_only: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AWNING_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn load_or_report(path: &Path) -> Result<Config, i32> {
    config::load(path).map_err(|errors| {
        let n = errors.0.len();
        eprintln!("{errors}");
        eprintln!(
            "configuration invalid: {n} error{} in {}",
            if n == 1 { "" } else { "s" },
            path.display()
        );
        EXIT_CONFIG
    })
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => match load_or_report(&config.path) {
            Ok(c) => {
                println!("{}", c.summary());
                0
            }
            Err(code) => code,
        },
        Command::Run { config, upgrade } => match load_or_report(&config.path) {
            Ok(c) => {
                tracing::info!("{}", c.summary());
                app::run(
                    c,
                    RunOptions {
                        upgrade,
                        adjust: None,
                    },
                    |_| {},
                )
            }
            Err(code) => code,
        },
        Command::Reload { config } => match load_or_report(&config.path) {
            Ok(c) => crate::admin::client::reload(&c),
            Err(code) => code,
        },
        Command::Health {
            admin,
            config,
            ready,
        } => {
            let admin = match admin {
                Some(a) => a,
                None => match load_or_report(&config.path) {
                    Ok(c) => c.admin.listen,
                    Err(code) => return code,
                },
            };
            crate::admin::client::health(admin, ready)
        }
        Command::Demo {
            config,
            storefront,
            storefront_only,
        } => run_demo(&config, storefront, storefront_only),
        Command::Purge {
            config,
            urls,
            prefixes,
            tags,
            soft,
        } => {
            let request = crate::cache::purge::PurgeRequest {
                urls,
                prefixes,
                tags,
                soft,
            };
            match load_or_report(&config.path) {
                Ok(c) => crate::admin::client::purge(&c, &request),
                Err(code) => code,
            }
        }
    }
}

fn run_demo(path: &Path, storefront: Option<std::net::SocketAddr>, only: bool) -> i32 {
    let addr = match storefront.map_or_else(demo::free_loopback_addr, Ok) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: no free loopback port for the storefront: {e}");
            return 1;
        }
    };
    if only {
        let mut server = pingora::server::Server::new(None).expect("default server");
        server.bootstrap();
        server.add_service(demo::storefront_service(addr));
        println!("awning demo storefront on http://{addr}");
        server.run_forever();
    }
    let mut config = match load_or_report(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    demo::point_upstreams_at(&mut config, addr);
    println!("{}", demo::hints(&config, addr));
    let opts = RunOptions {
        upgrade: false,
        // Reloads read proxy.yaml again: keep sending to the sample storefront.
        adjust: Some(app::ConfigAdjust(std::sync::Arc::new(
            move |c: &mut Config| demo::point_upstreams_at(c, addr),
        ))),
    };
    app::run(config, opts, |server| {
        server.add_service(demo::storefront_service(addr));
    })
}
