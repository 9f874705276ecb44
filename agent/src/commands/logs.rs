//! `capstan logs`: a container's log through the agent's local API.

use std::io::Write;

use futures::StreamExt;

use agent::kubelet::local_api::{Client, LogQuery};

use crate::cli::LogsArgs;

/// Copy the log to stdout as it arrives.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.agent.agent_socket);
    let query = LogQuery {
        container: args.container,
        follow: args.follow,
        tail_lines: u64::try_from(args.tail).ok(),
        previous: args.previous,
        timestamps: args.timestamps,
        stream: None,
    };
    let mut chunks = Box::pin(client.logs(&args.namespace, &args.pod, &query).await?);
    let mut out = std::io::stdout();
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}
