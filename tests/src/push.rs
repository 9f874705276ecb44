//! Pushing images, raw manifests and blobs to a [`Registry`] over the distribution API (blocking reqwest).
//!
//! Every free function runs its HTTP work on a helper thread, so it also works when called from inside a
//! tokio runtime. [`RegistryClient`] itself must be created, used and dropped outside any async context.

use std::io::Cursor;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use crate::http;
use crate::image::{sha256_digest, Image, Index, ManifestKind};
use crate::registry::Registry;

/// Response header carrying the digest of the content a registry stored or served.
pub const DIGEST_HEADER: &str = "Docker-Content-Digest";

/// Every manifest media type, for `Accept` headers.
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// `127.0.0.1:PORT/<repo>:<tag>`: the reference a pull would use.
pub fn image_ref(reg: &Registry, repo: &str, tag: &str) -> String {
    format!("{}/{repo}:{tag}", reg.host())
}

/// Pushes `image`'s blobs and manifest under `tag`; with `index`, wraps it in [`Index::with_decoy`] (decoy platform
/// first), pushes each manifest by digest, then the index / manifest list under `tag`. Returns the digest tagged.
pub fn push_image(
    reg: &Registry,
    repo: &str,
    tag: &str,
    image: &Image,
    kind: ManifestKind,
    index: bool,
) -> Result<String> {
    if index {
        return push_index(reg, repo, tag, &Index::with_decoy(image.clone())?, kind);
    }
    with_client(reg, |c| c.push_image(repo, tag, image, kind))
}

/// Pushes every image of `index` by digest, then the index / manifest list under `tag`; returns the index digest.
pub fn push_index(
    reg: &Registry,
    repo: &str,
    tag: &str,
    index: &Index,
    kind: ManifestKind,
) -> Result<String> {
    with_client(reg, |c| c.push_index(repo, tag, index, kind))
}

/// Uploads one blob (skipped if already present) and returns its digest.
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> Result<String> {
    let digest = sha256_digest(data);
    let body: Arc<[u8]> = data.into();
    with_client(reg, |c| c.push_blob(repo, &digest, body.clone()))?;
    Ok(digest)
}

/// PUTs arbitrary manifest bytes under `reference` (tag or digest) with `content_type`; returns the digest the
/// registry reports. Fails unless the registry answers 201.
pub fn push_raw_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    content_type: &str,
    bytes: &[u8],
) -> Result<String> {
    with_client(reg, |c| {
        c.put_manifest(repo, reference, content_type, bytes)
    })
}

/// DELETEs blob `digest` from `repo` (the registry must run with `delete_enabled`); expects 202.
pub fn delete_blob(reg: &Registry, repo: &str, digest: &str) -> Result<()> {
    with_client(reg, |c| c.delete(&format!("/v2/{repo}/blobs/{digest}")))
}

/// DELETEs manifest `digest` from `repo` (needs `delete_enabled`); expects 202.
pub fn delete_manifest(reg: &Registry, repo: &str, digest: &str) -> Result<()> {
    with_client(reg, |c| c.delete(&format!("/v2/{repo}/manifests/{digest}")))
}

/// A raw HTTP answer, for asserting what the registry serves.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// `Docker-Content-Digest` header, if any.
    pub digest: Option<String>,
    /// Response body.
    pub body: Vec<u8>,
}

/// GETs `/v2/<repo>/manifests/<reference>` accepting every manifest type (with credentials if any).
pub fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> Result<Fetched> {
    with_client(reg, |c| {
        c.fetch(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
    })
}

/// GETs `/v2/<repo>/blobs/<digest>` (with credentials if any).
pub fn get_blob(reg: &Registry, repo: &str, digest: &str) -> Result<Fetched> {
    with_client(reg, |c| {
        c.fetch(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
    })
}

/// Runs `f` with a fresh client for `reg` on a helper thread (safe inside tokio).
fn with_client<T: Send>(
    reg: &Registry,
    f: impl FnOnce(&RegistryClient) -> Result<T> + Send,
) -> Result<T> {
    let base = reg.url();
    let ca = reg.ca_cert_pem().map(<[u8]>::to_vec);
    let auth = reg
        .credentials()
        .map(|(u, p)| (u.to_string(), p.to_string()));
    http::off_runtime(move || {
        let client = RegistryClient::new(base, ca.as_deref(), auth)?;
        f(&client)
    })
}

/// A distribution-API client bound to one registry (blocking; not for use inside an async runtime).
pub struct RegistryClient {
    http: Client,
    base: Url,
    auth: Option<(String, String)>,
}

impl RegistryClient {
    /// A client for `base` (`http(s)://host:port`), trusting `ca_pem` if given, sending basic auth if given.
    pub fn new(
        base: String,
        ca_pem: Option<&[u8]>,
        auth: Option<(String, String)>,
    ) -> Result<RegistryClient> {
        Ok(RegistryClient {
            http: http::client(ca_pem)?,
            base: Url::parse(&base)?,
            auth,
        })
    }

    /// A client for `reg` with its CA and credentials.
    pub fn for_registry(reg: &Registry) -> Result<RegistryClient> {
        let auth = reg
            .credentials()
            .map(|(u, p)| (u.to_string(), p.to_string()));
        RegistryClient::new(reg.url(), reg.ca_cert_pem(), auth)
    }

    /// A request to `path_or_url` (relative to the registry, or absolute) with credentials attached.
    pub fn request(&self, method: Method, path_or_url: &str) -> Result<RequestBuilder> {
        let url = self
            .base
            .join(path_or_url)
            .with_context(|| format!("bad URL {path_or_url}"))?;
        let mut req = self.http.request(method, url);
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, Some(pass));
        }
        Ok(req)
    }

    /// Sends a request and returns status, content type, digest header and body.
    pub fn fetch(&self, method: Method, path: &str) -> Result<Fetched> {
        let resp = self
            .request(method, path)?
            .header(ACCEPT, ACCEPT_ALL_MANIFESTS)
            .send()?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE.as_str());
        let digest = header(DIGEST_HEADER);
        let status = resp.status().as_u16();
        Ok(Fetched {
            status,
            content_type,
            digest,
            body: resp.bytes()?.to_vec(),
        })
    }

    /// True if `repo` already has blob `digest` (HEAD answers 200).
    pub fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let resp = self
            .request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"))?
            .send()?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("HEAD blob {digest} in {repo}: unexpected {s}"),
        }
    }

    /// Uploads `data` as blob `digest` (POST to start, monolithic PUT `?digest=`), unless HEAD says it exists.
    pub fn push_blob(&self, repo: &str, digest: &str, data: Arc<[u8]>) -> Result<()> {
        if self.blob_exists(repo, digest)? {
            return Ok(());
        }
        let resp = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))?
            .send()?;
        let resp = expect(resp, StatusCode::ACCEPTED, "starting blob upload")?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("blob upload answer has no Location")?
            .to_string();
        let mut url = self.base.join(&location)?;
        url.query_pairs_mut().append_pair("digest", digest);
        let len = data.len() as u64;
        let resp = self
            .request(Method::PUT, url.as_str())?
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Body::sized(Cursor::new(SharedBytes(data)), len))
            .send()?;
        let resp = expect(
            resp,
            StatusCode::CREATED,
            &format!("uploading blob {digest}"),
        )?;
        check_digest(&resp, digest)
    }

    /// PUTs a manifest and returns the digest the registry reports (checked against the local digest).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let resp = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))?
            .header(CONTENT_TYPE, content_type)
            .body(bytes.to_vec())
            .send()?;
        let resp = expect(
            resp,
            StatusCode::CREATED,
            &format!("PUT manifest {repo}:{reference}"),
        )?;
        let local = sha256_digest(bytes);
        check_digest(&resp, &local)?;
        Ok(local)
    }

    /// Pushes config, layers and the manifest under `tag`; returns the manifest digest.
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        image: &Image,
        kind: ManifestKind,
    ) -> Result<String> {
        self.push_blob(
            repo,
            &sha256_digest(&image.config_json),
            image.config_json.clone().into(),
        )?;
        for layer in &image.layers {
            self.push_blob(repo, &layer.digest, layer.data.clone())?;
        }
        self.put_manifest(
            repo,
            tag,
            kind.manifest_media_type(),
            &image.manifest_json(kind),
        )
    }

    /// Pushes each image's manifest by digest, then the index under `tag`; returns the index digest.
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        index: &Index,
        kind: ManifestKind,
    ) -> Result<String> {
        for image in &index.images {
            let digest = image.manifest_digest(kind);
            self.push_image(repo, &digest, image, kind)?;
        }
        self.put_manifest(
            repo,
            tag,
            kind.index_media_type(),
            &index.manifest_json(kind),
        )
    }

    /// DELETEs `path`, expecting 202 Accepted.
    pub fn delete(&self, path: &str) -> Result<()> {
        let resp = self.request(Method::DELETE, path)?.send()?;
        expect(resp, StatusCode::ACCEPTED, &format!("DELETE {path}")).map(drop)
    }
}

/// Fails with status and body unless `resp` has status `want`.
fn expect(resp: Response, want: StatusCode, what: &str) -> Result<Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    bail!(
        "{what}: registry answered {status} (expected {want}): {}",
        body.trim()
    )
}

/// Fails if the registry's `Docker-Content-Digest` differs from `digest`.
fn check_digest(resp: &Response, digest: &str) -> Result<()> {
    match resp
        .headers()
        .get(DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(d) if d != digest => bail!("registry stored digest {d}, expected {digest}"),
        _ => Ok(()),
    }
}

/// `Arc<[u8]>` as `AsRef<[u8]>`, so a shared blob can be streamed without copying.
struct SharedBytes(Arc<[u8]>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
