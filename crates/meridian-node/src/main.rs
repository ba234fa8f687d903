//! `meridian-node` binary: parse configuration, run until SIGTERM/SIGINT.

use clap::Parser;
use meridian_node::config::Config;
use meridian_node::io_threads::IoThreads;

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
    // one single-threaded runtime per I/O thread (see meridian_node::io_threads)
    let threads = match config.io_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    let started = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .and_then(|runtime| Ok((runtime, IoThreads::start(threads - 1)?)));
    let (runtime, io_threads) = match started {
        Ok(started) => started,
        Err(error) => {
            eprintln!("meridian-node: cannot start runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let io_threads = std::sync::Arc::new(io_threads);
    match runtime.block_on(meridian_node::run(config, io_threads, shutdown_signal())) {
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
