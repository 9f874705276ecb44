//! Authenticated and TLS pulls, credentials from a docker config file, and mirrors.

use anyhow::Result;
use base64::Engine as _;
use tests::capstan::{CapstanCri, CriConfig};
use tests::image::{catalog, ManifestKind};
use tests::push::{image_ref, push_image};
use tests::registry::{Registry, RegistryOptions};

const USER: &str = "capstan";
const PASS: &str = "s3cret-pass";

fn secure_registry() -> Result<Registry> {
    Registry::start(RegistryOptions::plain().tls(true).basic_auth(USER, PASS))
}

#[test]
fn tls_registry_with_htpasswd_needs_the_right_credentials() -> Result<()> {
    let registry = secure_registry()?;
    push_image(
        &registry,
        "private/busybox",
        "latest",
        &catalog::busybox()?,
        ManifestKind::Oci,
        true,
    )?;
    let reference = image_ref(&registry, "private/busybox", "latest");
    let cri = CapstanCri::start(&CriConfig::default().registry(&registry))?;

    let err = cri.cli_err(&["image", "pull", &reference])?;
    assert!(err.to_lowercase().contains("not authorized"), "{err}");
    let err = cri.cli_err(&[
        "image",
        "pull",
        &reference,
        "--creds",
        &format!("{USER}:wrong"),
    ])?;
    assert!(err.to_lowercase().contains("not authorized"), "{err}");
    assert!(cri.cli_ok(&["image", "ls", "-q"])?.trim().is_empty());

    cri.cli_ok(&[
        "image",
        "pull",
        &reference,
        "--creds",
        &format!("{USER}:{PASS}"),
    ])?;
    assert_eq!(cri.cli_ok(&["image", "ls", "-q"])?.lines().count(), 1);

    // The CRI `auth` field (base64 user:password) works too.
    cri.cli_ok(&["image", "rm", &reference])?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    cri.cli_ok(&["image", "pull", &reference, "--auth", &auth])?;
    Ok(())
}

#[test]
fn an_untrusted_certificate_is_refused() -> Result<()> {
    let registry = Registry::start(RegistryOptions::plain().tls(true))?;
    push_image(
        &registry,
        "tls/busybox",
        "latest",
        &catalog::busybox()?,
        ManifestKind::Oci,
        false,
    )?;
    // No CA configured for this registry: the pull must fail on verification, not silently proceed.
    let cri = CapstanCri::start(&CriConfig::default())?;
    let err = cri.cli_err(&[
        "image",
        "pull",
        &image_ref(&registry, "tls/busybox", "latest"),
    ])?;
    assert!(err.contains(&registry.host()), "{err}");
    assert!(cri.cli_ok(&["image", "ls", "-q"])?.trim().is_empty());
    Ok(())
}

#[test]
fn docker_config_json_supplies_credentials() -> Result<()> {
    let registry = secure_registry()?;
    push_image(
        &registry,
        "private/busybox",
        "latest",
        &catalog::busybox()?,
        ManifestKind::Oci,
        false,
    )?;
    let scratch = tests::cleanup::TempRoot::new("auth")?;
    let auth_file = scratch.join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"https://{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )?;
    let cri = CapstanCri::start(
        &CriConfig::default()
            .registry(&registry)
            .line(&format!("authFile: {}", auth_file.display())),
    )?;
    cri.cli_ok(&[
        "image",
        "pull",
        &image_ref(&registry, "private/busybox", "latest"),
    ])?;
    Ok(())
}

#[test]
fn mirrors_are_tried_first_and_fall_back_to_the_registry() -> Result<()> {
    let upstream = Registry::start(RegistryOptions::plain())?;
    let mirror = Registry::start(RegistryOptions::plain())?;
    let image = catalog::busybox()?;
    push_image(
        &mirror,
        "only/mirrored",
        "latest",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    push_image(
        &upstream,
        "only/upstream",
        "latest",
        &image,
        ManifestKind::Oci,
        false,
    )?;
    let cri = CapstanCri::start(
        &CriConfig::default()
            .registry(&upstream)
            .registry(&mirror)
            .mirror(&upstream.host(), &mirror),
    )?;

    // Upstream lacks this repository; the mirror serves it.
    cri.cli_ok(&[
        "image",
        "pull",
        &image_ref(&upstream, "only/mirrored", "latest"),
    ])?;
    assert_eq!(mirror.blob_get_count(&image.layers[0].digest)?, 1);
    assert_eq!(upstream.blob_get_count(&image.layers[0].digest)?, 0);

    // The mirror lacks this one; the registry itself answers.
    cri.cli_ok(&[
        "image",
        "rm",
        &image_ref(&upstream, "only/mirrored", "latest"),
    ])?;
    cri.cli_ok(&[
        "image",
        "pull",
        &image_ref(&upstream, "only/upstream", "latest"),
    ])?;
    assert_eq!(upstream.blob_get_count(&image.layers[0].digest)?, 1);
    Ok(())
}

#[test]
fn identity_tokens_are_exchanged_at_the_registry_token_service() -> Result<()> {
    let tokens = tests::token_service::TokenService::start("refresh-me")?;
    // Images go in through an open twin; the token-protected registry serves the same storage.
    let open = Registry::start(RegistryOptions::plain())?;
    push_image(
        &open,
        "secure/busybox",
        "latest",
        &catalog::busybox()?,
        ManifestKind::Oci,
        false,
    )?;
    let registry = Registry::start(
        RegistryOptions::plain()
            .token_auth(tokens.registry_auth())
            .storage(open.storage_dir()),
    )?;
    let reference = image_ref(&registry, "secure/busybox", "latest");
    let cri = CapstanCri::start(&CriConfig::default().registry(&registry))?;

    let err = cri.cli_err(&["image", "pull", &reference])?;
    assert!(err.to_lowercase().contains("not authorized"), "{err}");
    let err = cri.cli_err(&["image", "pull", &reference, "--identity-token", "stale"])?;
    assert!(
        err.contains("identity token") && err.contains("401"),
        "{err}"
    );
    assert_eq!(tokens.issued(), 0);

    cri.cli_ok(&[
        "image",
        "pull",
        &reference,
        "--identity-token",
        "refresh-me",
    ])?;
    assert_eq!(tokens.issued(), 1);
    assert_eq!(cri.cli_ok(&["image", "ls", "-q"])?.lines().count(), 1);

    // Access tokens are scoped to one repository: a pull of another gets its own.
    push_image(
        &open,
        "secure/multi",
        "latest",
        &catalog::multi_layer()?,
        ManifestKind::Oci,
        false,
    )?;
    let other = image_ref(&registry, "secure/multi", "latest");
    cri.cli_ok(&["image", "pull", &other, "--identity-token", "refresh-me"])?;
    assert_eq!(tokens.issued(), 2);
    assert_eq!(cri.cli_ok(&["image", "ls", "-q"])?.lines().count(), 2);
    Ok(())
}
