//! `capstan image ...`: a human client of any CRI runtime's image service.

use anyhow::Context;
use cri_shim::admin::image_admin_client::ImageAdminClient;
use cri_shim::admin::ImportImageRequest;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};
use tonic::transport::Channel;

use crate::cli::{ImageCommand, ImportArgs, ListArgs, NamedArgs, PullArgs, RemoveArgs};
use crate::cri_client;

/// Run an image subcommand.
pub async fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pull(args) => pull(args).await,
        ImageCommand::Ls(args) => list(args).await,
        ImageCommand::Inspect(args) => inspect(args).await,
        ImageCommand::Rm(args) => remove(args).await,
        ImageCommand::Import(args) => import(args).await,
    }
}

async fn images(endpoint: &str) -> anyhow::Result<ImageServiceClient<Channel>> {
    Ok(ImageServiceClient::new(
        cri_client::connect(endpoint).await?,
    ))
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    })
}

async fn pull(args: PullArgs) -> anyhow::Result<()> {
    let mut auth = AuthConfig {
        auth: args.auth.unwrap_or_default(),
        registry_token: args.registry_token.unwrap_or_default(),
        identity_token: args.identity_token.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(creds) = args.creds {
        let (user, pass) = creds
            .split_once(':')
            .context("--creds must be USER:PASSWORD")?;
        auth.username = user.to_owned();
        auth.password = pass.to_owned();
    }
    let has_auth = auth != AuthConfig::default();
    let response = images(&args.endpoint.runtime_endpoint)
        .await?
        .pull_image(PullImageRequest {
            image: spec(&args.image),
            auth: has_auth.then_some(auth),
            sandbox_config: None,
        })
        .await
        // The runtime's message already names the image.
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    println!(
        "Image is up to date for {}",
        response.into_inner().image_ref
    );
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let response = images(&args.endpoint.runtime_endpoint)
        .await?
        .list_images(ListImagesRequest {
            filter: args
                .filter
                .as_deref()
                .map(|f| ImageFilter { image: spec(f) }),
        })
        .await
        .map_err(|s| anyhow::anyhow!("listing images: {}", s.message()))?;
    let mut images = response.into_inner().images;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
    print!("{}", render_table(&images, args.digests, args.quiet));
    Ok(())
}

/// `crictl images`-style table: one row per tag, `<none>` for untagged images.
fn render_table(images: &[Image], digests: bool, quiet: bool) -> String {
    if quiet {
        return images.iter().map(|i| format!("{}\n", i.id)).collect();
    }
    let mut rows = vec![header(digests)];
    for image in images {
        let digest = image
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(_, d)| short_digest(d))
            .unwrap_or_else(|| "<none>".into());
        let names: Vec<(String, String)> = if image.repo_tags.is_empty() {
            let repo = image
                .repo_digests
                .first()
                .and_then(|d| d.split_once('@'))
                .map(|(r, _)| r.to_owned())
                .unwrap_or_else(|| "<none>".into());
            vec![(repo, "<none>".into())]
        } else {
            image.repo_tags.iter().map(|t| split_tag(t)).collect()
        };
        for (repo, tag) in names {
            let mut row = vec![repo, tag];
            if digests {
                row.push(digest.clone());
            }
            row.push(short_digest(&image.id));
            row.push(human_size(image.size));
            rows.push(row);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("   ").trim_end())
        })
        .collect()
}

fn header(digests: bool) -> Vec<String> {
    let mut header = vec!["IMAGE", "TAG"];
    if digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "SIZE"]);
    header.into_iter().map(String::from).collect()
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a port colon is not a tag separator.
fn split_tag(name: &str) -> (String, String) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (name.to_owned(), "<none>".to_owned()),
    }
}

fn short_digest(digest: &str) -> String {
    digest
        .trim_start_matches("sha256:")
        .chars()
        .take(13)
        .collect()
}

/// Decimal units with three significant digits, as crictl prints sizes.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    // Three significant digits, trailing zeros dropped (printf's %.3g).
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

async fn inspect(args: NamedArgs) -> anyhow::Result<()> {
    let status = images(&args.endpoint.runtime_endpoint)
        .await?
        .image_status(ImageStatusRequest {
            image: spec(&args.image),
            verbose: true,
        })
        .await
        .map_err(|s| anyhow::anyhow!("inspecting {}: {}", args.image, s.message()))?
        .into_inner();
    let image = status
        .image
        .with_context(|| format!("image {:?} not found", args.image))?;
    let info: serde_json::Value = status
        .info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or(serde_json::Value::Null);
    let out = serde_json::json!({ "status": image, "info": info });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let mut client = images(&args.endpoint.runtime_endpoint).await?;
    for image in &args.images {
        client
            .remove_image(RemoveImageRequest { image: spec(image) })
            .await
            .map_err(|s| anyhow::anyhow!("removing {image}: {}", s.message()))?;
        println!("Deleted: {image}");
    }
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(&args.file)
        .with_context(|| format!("archive {}", args.file.display()))?;
    let channel = cri_client::connect(&args.endpoint.runtime_endpoint).await?;
    let response = ImageAdminClient::new(channel)
        .import_image(ImportImageRequest {
            path: path.display().to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("importing {}: {}", args.file.display(), s.message()))?;
    for image in response.into_inner().images {
        let names = if image.repo_tags.is_empty() {
            "<none>".to_owned()
        } else {
            image.repo_tags.join(", ")
        };
        println!("Imported {} {names} ({})", image.id, human_size(image.size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_crictl() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    #[test]
    fn tags_split_on_the_last_colon_outside_the_host() {
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b:1.0"),
            ("127.0.0.1:5000/a/b".into(), "1.0".into())
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "<none>".into())
        );
    }

    #[test]
    fn table_has_a_row_per_tag_and_none_for_untagged() {
        let image = |tags: &[&str]| Image {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            size: 2_000_000,
            ..Default::default()
        };
        let table = render_table(&[image(&["x/a:1", "x/a:2"]), image(&[])], false, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("IMAGE") && lines[0].contains("IMAGE ID"));
        assert!(
            lines[1].starts_with("x/a")
                && lines[1].contains(" 1 ")
                && lines[1].contains("abababababab")
        );
        assert!(lines[3].contains("<none>") && lines[3].ends_with("2MB"));
    }
}
