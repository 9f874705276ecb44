//! `capstan version`.

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::VersionRequest;

use crate::cli::VersionArgs;
use crate::cri_client;

/// Print this binary's version and, if asked, the runtime's.
pub async fn run(args: VersionArgs) -> anyhow::Result<()> {
    println!("capstan {}", env!("CARGO_PKG_VERSION"));
    if let Some(endpoint) = args.runtime_endpoint {
        let mut client = RuntimeServiceClient::new(cri_client::connect(&endpoint).await?);
        let version = client
            .version(VersionRequest::default())
            .await?
            .into_inner();
        println!("RuntimeName:       {}", version.runtime_name);
        println!("RuntimeVersion:    {}", version.runtime_version);
        println!("RuntimeApiVersion: {}", version.runtime_api_version);
    }
    Ok(())
}
