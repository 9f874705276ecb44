//! `capstan exec`: ExecSync in a container through the agent's local API.

use std::io::Write;

use agent::kubelet::local_api::{Client, ExecRequest};

use crate::cli::ExecArgs;

/// Run the command, copy its output to ours and exit with its exit code.
pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.agent.agent_socket);
    let request = ExecRequest {
        container: args.container,
        command: args.command,
        timeout_seconds: args.timeout,
    };
    let output = client.exec(&args.namespace, &args.pod, &request).await?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&output.stdout)?;
    stdout.flush()?;
    let mut stderr = std::io::stderr();
    stderr.write_all(&output.stderr)?;
    stderr.flush()?;
    if output.exit_code != 0 {
        // The command's status is the result, not an error of ours.
        std::process::exit(output.exit_code);
    }
    Ok(())
}
