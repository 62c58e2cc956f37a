//! The `ringway` command: run the proxy, check a config, print the version.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: ringway::alloc::Allocator = ringway::alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "ringway",
    version,
    about = "Thread-per-core edge proxy on io_uring: load balancer, API gateway, reverse proxy"
)]
struct Cli {
    /// Config file (TOML). Without it Ringway serves its built-in welcome page on 127.0.0.1:8080.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and exit (0 when valid, 1 with FILE: key: reason when not).
    Check { file: PathBuf },
    /// Print the version.
    Version,
    /// Read a password from standard input and print its bcrypt hash, for `[auth.NAME]` basic
    /// users (`password_hash`). Passwords never appear in a config.
    HashPassword {
        /// bcrypt cost (4..=31); each step doubles the work. A check runs on the worker thread,
        /// so keep it moderate: at 10 it takes tens of milliseconds, paid once a minute per
        /// credential thanks to the per-core cache of verified credentials.
        #[arg(long, default_value_t = 10)]
        cost: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("ringway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(Command::HashPassword { cost }) => {
            let mut password = String::new();
            if std::io::stdin().read_line(&mut password).is_err() {
                eprintln!("ringway: cannot read a password from standard input");
                return ExitCode::FAILURE;
            }
            let password = password.trim_end_matches(['\r', '\n']);
            match bcrypt::hash(password, cost) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Check { file }) => match ringway::config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok: {} listener(s), {} upstream(s), {} route(s), {} cache(s), {} worker(s)",
                    file.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len(),
                    c.caches.len(),
                    c.runtime.workers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        None => {
            let config = match &cli.config {
                Some(path) => match ringway::config::load(path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("ringway: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => ringway::config::builtin(),
            };
            match ringway::server::run(config, cli.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
