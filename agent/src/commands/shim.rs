//! `capstan shim`: the per-sandbox monitor and the exec entry. Blocking, single-threaded,
//! dispatched before logging or the async runtime is set up.

use std::process::ExitCode;

use crate::cli::ShimCommand;

/// Run a `capstan shim` subcommand.
pub fn run(command: ShimCommand) -> ExitCode {
    match command {
        ShimCommand::Start(args) => {
            let code = cri_shim::monitor::shim::start(&args.config);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        ShimCommand::Exec(args) => {
            cri_shim::monitor::shim::exec(args.pid, &args.bundle, &args.process)
        }
    }
}
