//! `capstan`: the Capstan node agent and its command-line clients.

mod cli;
mod commands;
mod config;
mod cri_client;
mod logging;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The monitor forks and unshares: it must run before any thread (tokio, logging) exists.
    let command = match cli.command {
        cli::Command::Shim(shim) => return commands::shim::run(shim),
        command => command,
    };
    logging::init(cli.log_format, &cli.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
