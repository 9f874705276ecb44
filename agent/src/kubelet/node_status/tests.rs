use std::collections::BTreeMap;

use super::*;

/// Settings for node `n1` with the defaults.
pub(super) fn settings() -> NodeStatusSettings {
    NodeStatusSettings::from_config(&KubeletConfig::default(), "n1").unwrap()
}

#[test]
fn defaults_are_the_kubelets() {
    let s = settings();
    assert!(s.register_node);
    assert_eq!(s.max_pods, 110);
    assert_eq!(s.update_frequency, Duration::from_secs(10));
    assert_eq!(s.report_frequency, Duration::from_secs(300));
    assert_eq!(s.lease_duration_seconds, 40);
    assert_eq!(s.kubelet_port, 10250);
    assert_eq!(s.reservations.eviction_hard, default_thresholds());
    assert!(s.reservations.kube.is_empty() && s.reservations.system.is_empty());
}

fn refused(change: impl FnOnce(&mut KubeletConfig)) -> String {
    let mut config = KubeletConfig::default();
    change(&mut config);
    config.validate().unwrap_err()
}

#[test]
fn invalid_node_status_settings_are_refused_naming_the_field() {
    assert!(refused(|c| c.max_pods = 0).contains("kubelet.maxPods"));
    assert!(refused(|c| c.node_lease_duration_seconds = 0).contains("nodeLeaseDurationSeconds"));
    assert!(
        refused(|c| c.node_status_update_frequency = "soon".to_owned())
            .contains("nodeStatusUpdateFrequency")
    );
    assert!(
        refused(|c| c.node_status_report_frequency = "0s".to_owned()).contains("greater than 0")
    );
    assert!(refused(
        |c| c.kube_reserved = BTreeMap::from([("memory".to_owned(), "lots".to_owned())])
    )
    .contains("kubeReserved.memory"));
    assert!(
        refused(|c| c.system_reserved = BTreeMap::from([("cpu".to_owned(), "-1".to_owned())]))
            .contains("systemReserved.cpu")
    );
    assert!(refused(|c| c.eviction_hard = Some(BTreeMap::from([(
        "memory.available".to_owned(),
        "200%".to_owned()
    )])))
    .contains("evictionHard.memory.available"));
    assert!(refused(|c| c.register_with_taints = vec![Taint {
        key: "k".to_owned(),
        effect: "Sometimes".to_owned(),
        ..Taint::default()
    }])
    .contains("registerWithTaints"));
    assert!(refused(|c| c.node_labels =
        BTreeMap::from([("node-role.kubernetes.io/master".to_owned(), String::new())]))
    .contains("nodeLabels"));
    assert!(
        refused(|c| c.node_labels = BTreeMap::from([("team".to_owned(), "a b".to_owned())]))
            .contains("not a valid label")
    );
}

#[test]
fn configured_values_are_used() {
    let config = KubeletConfig {
        max_pods: 20,
        eviction_hard: Some(BTreeMap::from([(
            "memory.available".to_owned(),
            "1Gi".to_owned(),
        )])),
        node_labels: BTreeMap::from([
            ("node.kubernetes.io/pool".to_owned(), "edge".to_owned()),
            ("topology.kubernetes.io/zone".to_owned(), "z1".to_owned()),
            ("example.com/team".to_owned(), "a".to_owned()),
        ]),
        node_status_update_frequency: "2s".to_owned(),
        ..KubeletConfig::default()
    };
    let s = NodeStatusSettings::from_config(&config, "n2").unwrap();
    assert_eq!(s.max_pods, 20);
    assert_eq!(s.update_frequency, Duration::from_secs(2));
    // A configured evictionHard replaces the defaults.
    assert_eq!(s.reservations.eviction_hard.len(), 1);
    assert_eq!(s.node_labels.len(), 3);
}

#[test]
fn the_shipped_config_parses_the_node_status_fields() {
    #[derive(serde::Deserialize)]
    struct File {
        kubelet: KubeletConfig,
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/config.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let file: File = serde_yaml::from_str(&text).unwrap();
    file.kubelet.validate().unwrap();
    assert_eq!(file.kubelet.max_pods, 110);
    assert_eq!(file.kubelet.node_status_update_frequency, "10s");
}
