//! The `capstan` binary's own surface: version, logs, config errors, endpoints.

use anyhow::Result;
use tests::capstan::{CapstanCri, CriConfig};

#[test]
fn version_reports_the_binary_and_the_runtime() -> Result<()> {
    let cri = CapstanCri::start(&CriConfig::default())?;
    let out = cri.cli_ok(&["version", "--runtime-endpoint", &cri.endpoint()])?;
    assert!(out.starts_with("capstan "), "{out}");
    assert!(
        out.contains("RuntimeName:       capstan") && out.contains("RuntimeApiVersion: v1"),
        "{out}"
    );
    Ok(())
}

#[test]
fn logs_are_plain_text_in_files_and_json_on_request() -> Result<()> {
    let mut cri = CapstanCri::start(&CriConfig::default())?;
    let text = cri.log();
    assert!(text.contains("CRI server listening"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file: {text:?}"
    );
    cri.restart_with(&["--log-format", "json"])?;
    cri.stop();
    let log = cri.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)?;
        assert!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("CRI server listening"));
    Ok(())
}

#[test]
fn a_bad_config_or_endpoint_is_a_clear_error() -> Result<()> {
    let cri = CapstanCri::start(&CriConfig::default())?;
    let config = cri.scratch().join("typo.yaml");
    std::fs::write(&config, "runtime:\n  sockett: /tmp/x.sock\n")?;
    let err = cri.cli_err(&["cri", "--config", &config.display().to_string()])?;
    assert!(
        err.contains("sockett") && err.contains("typo.yaml"),
        "{err}"
    );

    let err = cri.cli_err(&[
        "image",
        "ls",
        "--runtime-endpoint",
        "unix:///nonexistent/cri.sock",
    ])?;
    assert!(err.contains("/nonexistent/cri.sock"), "{err}");
    let err = cri.cli_err(&["image", "ls", "--runtime-endpoint", "tcp://1.2.3.4:5"])?;
    assert!(err.contains("unix://"), "{err}");
    Ok(())
}

#[test]
fn a_second_runtime_on_a_live_socket_refuses_to_start() -> Result<()> {
    let cri = CapstanCri::start(&CriConfig::default())?;
    let err = cri.cli_err(&["cri", "--config", &cri.config_path().display().to_string()])?;
    assert!(err.contains("another runtime"), "{err}");
    // The first one still answers.
    cri.cli_ok(&["image", "ls"])?;
    Ok(())
}
