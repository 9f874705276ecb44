//! API-backed objects against the API test server. `ObjectFetcher`: what a pod refers to is
//! read, tokens are requested bound to the pod, a change to a watched object wakes the pod,
//! optional missing objects are simply absent, and watches stop when the last pod lets go.
//! The shared informers: unknown until listed, every change counted, and an API server
//! restart (a relist) never empties a store.

use std::time::Duration;

use agent::kubelet::api_objects::{ObjectFetcher, TokenKey};
use agent::kubelet::bootstrap::ApiClient;
use agent::service_stores::ServiceStores;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tests::apiserver::ApiServer;

/// Waits this long for a watch event to reach the fetcher.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn admin_client(server: &ApiServer) -> Result<kube::Client> {
    // Several rustls providers are linked: pick ring, as the agent does (Err: already set).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(server.admin_kubeconfig())?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn seed(server: &ApiServer) -> Result<Pod> {
    server.create("namespaces", "", json!({"metadata": {"name": "shop"}}))?;
    // The namespace's `default` service account is created with it, as the controller does.
    server.create(
        "configmaps",
        "shop",
        json!({
            "metadata": {"name": "cfg", "namespace": "shop"}, "data": {"app.conf": "port=80"}
        }),
    )?;
    server.create(
        "secrets",
        "shop",
        json!({
            "metadata": {"name": "creds", "namespace": "shop"}, "data": {"user": "YWRtaW4="}
        }),
    )?;
    server.create(
        "services",
        "shop",
        json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 5432}]}
        }),
    )?;
    let pod = server.create("pods", "shop", json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "volumes": [
                {"name": "conf", "configMap": {"name": "cfg"}},
                {"name": "maybe", "configMap": {"name": "ghost", "optional": true}},
                {"name": "api", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 600}}
                ]}}
            ],
            "containers": [{"name": "app", "image": "busybox", "env": [
                {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}}
            ]}]
        }
    }))?;
    Ok(serde_json::from_value(pod)?)
}

#[test]
fn fetcher_resolves_watches_and_releases() -> Result<()> {
    let server = ApiServer::start()?;
    let pod = seed(&server)?;
    let uid = pod.metadata.uid.clone().context("created pod has a uid")?;
    runtime()?.block_on(async {
        let fetcher = ObjectFetcher::new(ApiClient::from_client(admin_client(&server).await?));
        let mut changes = fetcher.subscribe(&uid);
        let objects = fetcher.resolve(&pod).await?;

        let cfg = objects
            .config_map("cfg")
            .context("configmap cfg resolved")?;
        assert_eq!(
            cfg.data
                .as_ref()
                .and_then(|d| d.get("app.conf"))
                .map(String::as_str),
            Some("port=80")
        );
        assert!(objects.secret("creds").is_some());
        assert!(
            objects.config_map("ghost").is_none(),
            "a missing object is absent"
        );
        let names: Vec<_> = objects
            .services()
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert!(
            names.contains(&"db".to_string()),
            "services of the namespace: {names:?}"
        );
        let token = objects
            .token(&TokenKey {
                audience: "vault".into(),
                expiration_seconds: 600,
            })
            .context("token issued")?;
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        assert!(fetcher.watch_count() >= 4);

        // A second resolve while nothing changed reuses the cached token.
        let again = fetcher.resolve(&pod).await?;
        assert_eq!(
            again.token(&TokenKey {
                audience: "vault".into(),
                expiration_seconds: 600
            }),
            Some(token)
        );

        changes.borrow_and_update();
        server.kubectl(&[
            "-n",
            "shop",
            "patch",
            "configmap",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"app.conf":"port=8080"}}"#,
        ])?;
        tokio::time::timeout(CHANGE_TIMEOUT, changes.changed())
            .await
            .context("no change notification after the configmap changed")??;
        let updated = fetcher.resolve(&pod).await?;
        assert_eq!(
            updated
                .config_map("cfg")
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get("app.conf"))
                .map(String::as_str),
            Some("port=8080")
        );

        // The optional configmap appearing later also wakes the pod.
        changes.borrow_and_update();
        server.kubectl(&[
            "-n",
            "shop",
            "create",
            "configmap",
            "ghost",
            "--from-literal=k=v",
        ])?;
        tokio::time::timeout(CHANGE_TIMEOUT, changes.changed())
            .await
            .context("no change notification after the optional configmap appeared")??;
        assert!(fetcher.resolve(&pod).await?.config_map("ghost").is_some());

        fetcher.forget(&uid);
        assert_eq!(fetcher.watch_count(), 0, "watches stop with the last pod");
        anyhow::Ok(())
    })
}

/// Waits until `check` holds on the stores, or fails naming `what`.
async fn stores_until(
    stores: &ServiceStores,
    what: &str,
    check: impl Fn(&ServiceStores) -> bool,
) -> Result<()> {
    let mut changes = stores.changes();
    tokio::time::timeout(CHANGE_TIMEOUT, async {
        while !check(stores) {
            let _ = changes.changed().await;
        }
    })
    .await
    .with_context(|| format!("stores never showed {what}"))
}

fn service_names(stores: &ServiceStores) -> Vec<String> {
    let mut names: Vec<String> = stores
        .services_and_slices()
        .map(|snapshot| snapshot.services)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn service_stores_list_watch_and_survive_a_relist() -> Result<()> {
    let mut server = ApiServer::start()?;
    server.create(
        "services",
        "default",
        json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}}),
    )?;
    let rt = runtime()?;
    let stores = rt.block_on(async {
        let client = ApiClient::from_client(admin_client(&server).await?);
        let stores = ServiceStores::start(&client, false);
        stores_until(&stores, "the listed service", |s| {
            service_names(s).contains(&"a".to_string())
        })
        .await?;
        assert!(stores.pods().is_some_and(|p| p.is_empty()));

        let before = *stores.changes().borrow();
        server.create(
            "services",
            "default",
            json!({"metadata": {"name": "b"}, "spec": {"ports": [{"port": 81}]}}),
        )?;
        stores_until(&stores, "the created service", |s| {
            service_names(s).contains(&"b".to_string())
        })
        .await?;
        assert!(
            *stores.changes().borrow() > before,
            "the change was counted"
        );
        anyhow::Ok(stores)
    })?;

    // While the server is away the watch fails, and the store keeps what it knew.
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(service_names(&stores), ["a", "b"]);
    server.restart()?;
    rt.block_on(async {
        server.kubectl(&["delete", "service", "a"])?;
        stores_until(&stores, "the deletion after the restart", |s| {
            service_names(s) == ["b"]
        })
        .await?;
        anyhow::Ok(())
    })
}
