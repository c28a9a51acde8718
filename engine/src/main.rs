//! `envoy-engine` binary: `serve`, `actors list`, `actors stop`, `sql`, `config print`, `cluster status`.

use clap::{CommandFactory, FromArgMatches};
use envoy_engine::cli::{Cli, Command, ConfigCommand};
use envoy_engine::config_file;
use envoy_engine::Engine;

fn main() -> std::process::ExitCode {
    // `serve` and `config print` show each setting's default and variable in --help.
    let command = Cli::command()
        .mut_subcommand("serve", config_file::annotate_help)
        .mut_subcommand("config", |c| c.mut_subcommand("print", config_file::annotate_help));
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The log format of `serve` may come from a flag, the environment or the config file.
    let log_format = match &cli.command {
        Command::Serve(args) => config_file::merge(args.clone(), &config_file::process_env())
            .ok()
            .and_then(|a| a.log_format)
            .unwrap_or_default(),
        Command::Actors(_) | Command::Sql(_) | Command::Config(_) | Command::Backup { .. } | Command::Cluster(_) => {
            Default::default()
        }
    };
    envoy_engine::logging::init(log_format);
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
            Command::Cluster(cmd) => envoy_engine::cli::run_cluster(cmd).await,
            Command::Sql(args) => envoy_engine::shell::run(args).await,
            Command::Backup { all, admin } => envoy_engine::cli::backup_all(admin, all).await,
            Command::Config(ConfigCommand::Print(args)) => {
                print!("{}", config_file::print(args, &config_file::process_env())?);
                Ok(())
            }
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
    let engine = Engine::start(config_file::load(args, &config_file::process_env())?).await?;
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
