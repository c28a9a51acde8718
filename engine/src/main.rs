//! `envoy-engine` binary: `serve`, `actors list`, `actors stop`, `sql`.

use clap::Parser;
use envoy_engine::cli::{Cli, Command};
use envoy_engine::Engine;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    envoy_engine::logging::init(match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Actors(_) | Command::Sql(_) => Default::default(),
    });
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Actors(cmd) => envoy_engine::cli::run_actors(cmd).await,
            Command::Sql(args) => envoy_engine::shell::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: envoy_engine::cli::ServeArgs) -> anyhow::Result<()> {
    let engine = Engine::start(args.into_config()?).await?;
    wait_for_signal().await;
    tracing::info!("signal received: draining");
    engine.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the engine");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
