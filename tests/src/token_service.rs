//! A registry token service (the Docker/Distribution token protocol) for testing identity
//! tokens: it exchanges one OAuth2 refresh token for short-lived ES256 JWTs that the real
//! `docker-registry`, configured with [`TokenService::registry_auth`], accepts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::json;

use crate::cleanup::TempRoot;
use crate::names::unique_name;
use crate::registry::TokenAuth;

const SERVICE: &str = "capstan-test-registry";
const ISSUER: &str = "capstan-test-token-service";

/// A running token service; stopped on drop.
pub struct TokenService {
    port: u16,
    dir: TempRoot,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

struct Signer256 {
    key: SigningKey,
    cert_der: Vec<u8>,
    refresh_token: String,
}

impl TokenService {
    /// Start a service that accepts `refresh_token` (and nothing else) on a free loopback port.
    pub fn start(refresh_token: &str) -> Result<Self> {
        let dir = TempRoot::new("tokens")?;
        let key_pair = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["capstan-token-signer".to_owned()])?
            .self_signed(&key_pair)?;
        std::fs::write(dir.join("signer.pem"), cert.pem())?;
        let signer = Signer256 {
            key: SigningKey::from_pkcs8_der(&key_pair.serialize_der()).context("signing key")?,
            cert_der: cert.der().to_vec(),
            refresh_token: refresh_token.to_owned(),
        };
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, issued) = (stop.clone(), issued.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = serve(stream, &signer, &issued);
                    }
                }
            })
        };
        Ok(Self {
            port,
            dir,
            stop,
            issued,
            thread: Some(thread),
        })
    }

    /// The registry settings that trust this service.
    pub fn registry_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: format!("http://127.0.0.1:{}/token", self.port),
            service: SERVICE.to_owned(),
            issuer: ISSUER.to_owned(),
            root_cert_bundle: self.dir.join("signer.pem"),
        }
    }

    /// Access tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answer one HTTP request: `POST /token` with a refresh-token grant, 401 for anything else.
fn serve(stream: TcpStream, signer: &Signer256, issued: &AtomicUsize) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 16)];
    reader.read_exact(&mut body)?;
    let form = parse_form(&String::from_utf8_lossy(&body));
    let field = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let granted = request_line.starts_with("POST /token ")
        && field("grant_type") == Some("refresh_token")
        && field("refresh_token") == Some(signer.refresh_token.as_str())
        && field("service") == Some(SERVICE);
    let (status, answer) = match (granted, field("scope").and_then(repository_of_scope)) {
        (true, Some(repository)) => {
            issued.fetch_add(1, Ordering::SeqCst);
            let token = signer.mint(repository)?;
            ("200 OK", json!({"access_token": token, "expires_in": 300}))
        }
        _ => ("401 Unauthorized", json!({"error": "invalid_grant"})),
    };
    let body = answer.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

impl Signer256 {
    /// A JWT granting pull on `repository`, signed ES256 with the certificate in `x5c`.
    fn mint(&self, repository: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header =
            json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let claims = json!({
            "iss": ISSUER,
            "sub": "capstan-test",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": unique_name("jti"),
            "access": [{"type": "repository", "name": repository, "actions": ["pull"]}],
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }
}

/// `repository:NAME:ACTIONS` → NAME.
fn repository_of_scope(scope: &str) -> Option<&str> {
    let rest = scope.strip_prefix("repository:")?;
    rest.rsplit_once(':').map(|(name, _)| name)
}

/// `application/x-www-form-urlencoded` pairs.
fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
