//! `capstan pods` and `capstan pods describe`: the agent's pods through its local API.

use std::io::Write;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;

use agent::kubelet::local_api::present::{self, Columns};
use agent::kubelet::local_api::{Client, SourceError};

use crate::cli::{PodsArgs, PodsCommand, PodsDescribeArgs, PodsListArgs, PodsOutput};

/// List (or watch, or describe) pods.
pub async fn run(args: PodsArgs) -> anyhow::Result<()> {
    match args.command {
        Some(PodsCommand::Describe(describe)) => run_describe(describe).await,
        None if args.list.watch => watch(args.list).await,
        None => list(args.list).await,
    }
}

async fn list(args: PodsListArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.agent.agent_socket);
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let list = client.pods(namespace).await?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Some(PodsOutput::Json) => {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v1_list(&list.items))?
            )?;
            print_errors(&mut std::io::stderr().lock(), &list.errors)?;
        }
        Some(PodsOutput::Yaml) => {
            write!(out, "{}", serde_yaml::to_string(&v1_list(&list.items))?)?;
            print_errors(&mut std::io::stderr().lock(), &list.errors)?;
        }
        None | Some(PodsOutput::Wide) => {
            let columns = Columns {
                namespace: args.all_namespaces,
                wide: args.output == Some(PodsOutput::Wide),
            };
            if list.items.is_empty() {
                match namespace {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
            } else {
                let now = jiff::Timestamp::now();
                let rows = list
                    .items
                    .iter()
                    .map(|pod| columns.cells(&present::pod_row(pod, now)))
                    .collect();
                write!(out, "{}", present::table(columns.header(), rows))?;
            }
            if !list.errors.is_empty() {
                writeln!(out)?;
                print_errors(&mut out, &list.errors)?;
            }
        }
    }
    Ok(())
}

async fn watch(args: PodsListArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.agent.agent_socket);
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    let mut events = Box::pin(client.watch(namespace).await?);
    let columns = Columns {
        namespace: args.all_namespaces,
        wide: args.output == Some(PodsOutput::Wide),
    };
    let widths = columns.watch_widths();
    let mut out = std::io::stdout();
    if matches!(args.output, None | Some(PodsOutput::Wide)) {
        writeln!(out, "{}", present::format_row(&columns.header(), &widths))?;
    }
    while let Some(event) = events.next().await {
        let pod = event?.object;
        match args.output {
            Some(PodsOutput::Json) => writeln!(out, "{}", serde_json::to_string_pretty(&pod)?)?,
            Some(PodsOutput::Yaml) => write!(out, "---\n{}", serde_yaml::to_string(&pod)?)?,
            None | Some(PodsOutput::Wide) => {
                let row = present::pod_row(&pod, jiff::Timestamp::now());
                writeln!(
                    out,
                    "{}",
                    present::format_row(&columns.cells(&row), &widths)
                )?;
            }
        }
        out.flush()?;
    }
    anyhow::bail!("the agent ended the watch (is it shutting down?)")
}

async fn run_describe(args: PodsDescribeArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.agent.agent_socket);
    let detail = client
        .pod(&args.namespace, &args.name)
        .await
        .with_context(|| format!("describing pod {}/{}", args.namespace, args.name))?;
    print!("{}", present::describe(&detail, jiff::Timestamp::now()));
    Ok(())
}

/// Pods as kubectl prints them with `-o json|yaml`: a v1 List.
fn v1_list(items: &[Pod]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": "" },
        "items": items,
    })
}

fn print_errors(out: &mut impl Write, errors: &[SourceError]) -> std::io::Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    writeln!(out, "Manifest errors:")?;
    for error in errors {
        writeln!(out, "  {}: {}", error.path.display(), error.message)?;
    }
    Ok(())
}
