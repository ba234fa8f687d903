//! `meridian-node` binary: parse configuration, run until SIGTERM/SIGINT.

use clap::Parser;
use meridian_node::config::Config;

/// mimalloc is markedly faster than glibc malloc for the many small key and
/// value allocations of a cache, and fragments less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    if config.disable_thp
        && let Err(error) = meridian_node::os::disable_transparent_huge_pages()
    {
        tracing::warn!(%error, "cannot turn transparent huge pages off (--disable-thp)");
    }
    let (open_files, wanted) = meridian_node::net::raise_open_files_limit(
        config.maxclients,
        meridian_node::server::OVER_LIMIT_PENDING as u64,
    );
    if open_files < wanted {
        tracing::warn!(
            open_files,
            wanted,
            maxclients = config.maxclients,
            "the open-file limit is below what maxclients and the node's own connections need; \
             raise it (ulimit -n, or the container runtime's nofile limit)"
        );
    }
    // One I/O thread: a current-thread runtime avoids the work-stealing
    // scheduler's cross-thread wakeups (the Redis-like single-core setup).
    let mut builder = if config.io_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all();
    if config.io_threads > 1 {
        builder.worker_threads(config.io_threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("meridian-node: cannot start runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meridian_node::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meridian-node: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
