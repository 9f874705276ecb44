//! `capstan-apiserver`: runs the in-memory API test server by hand and prints its URL, admin kubeconfig and a
//! bootstrap token; runs until stdin closes.

use std::io::Read;

use anyhow::Result;

fn main() -> Result<()> {
    let server = tests::apiserver::ApiServer::start()?;
    let token = server.create_bootstrap_token(None)?;
    println!("URL {}", server.url());
    println!("KUBECONFIG {}", server.admin_kubeconfig().display());
    println!("TOKEN {token}");
    println!("CA_HASH {}", server.ca_cert_hash());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
