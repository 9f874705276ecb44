//! The kube-controller-manager's CSR controllers: csrapproving (auto-approves kubelet client
//! certificates for bootstrap tokens and renewing nodes) and csrsigning (issues certificates
//! for approved requests of the built-in signers from the cluster CA).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jiff::Timestamp;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::bootstrap::BOOTSTRAPPERS;
use super::pki::{pem_certificate, set_validity, Pki};

/// The kubelet client signer, the one whose requests are auto-approved.
pub(super) const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";
const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
const MIN_DURATION: Duration = Duration::from_secs(600);

/// What the request's X.509 says.
struct Request {
    der: Vec<u8>,
    common_name: String,
    organizations: Vec<String>,
    dns_names: usize,
    ip_addresses: usize,
    other_names: usize,
}

/// What to write back after a CSR changed.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    /// Nothing to do (already finished, not approved, or another signer's).
    Nothing,
    /// The CSR with an added Approved or Failed condition.
    Conditioned(Value),
    /// The CSR with status.certificate set.
    Signed(Value),
}

/// One reconcile step: approve if allowed, else fail a bad request, else sign an approved one.
/// Call again with the result of `Conditioned` to continue (approval is its own write, as with
/// the real controllers, so watchers see both).
pub(super) fn reconcile(pki: &Pki, csr: &Value, auto_approve: bool, now: Timestamp) -> Outcome {
    let has = |kind: &str| has_condition(csr, kind);
    let issued = csr
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if issued || has("Denied") || has("Failed") {
        return Outcome::Nothing;
    }
    let request = match parse_request(csr) {
        Ok(r) => r,
        Err(message) => {
            return Outcome::Conditioned(with_condition(
                csr,
                "Failed",
                "InvalidRequest",
                &message,
                now,
            ))
        }
    };
    let signer = text(csr, "/spec/signerName");
    let usages = usages(csr);
    if !has("Approved") {
        if auto_approve && approvable(csr, &signer, &usages, &request) {
            return Outcome::Conditioned(with_condition(
                csr,
                "Approved",
                "AutoApproved",
                "Auto approving kubelet client certificate after SubjectAccessReview.",
                now,
            ));
        }
        return Outcome::Nothing;
    }
    match validate_for_signer(&signer, &usages, &request) {
        None => Outcome::Nothing,
        Some(Err(message)) => Outcome::Conditioned(with_condition(
            csr,
            "Failed",
            "SignerValidationFailure",
            &message,
            now,
        )),
        Some(Ok(())) => match issue(pki, csr, &usages, &request) {
            Ok(pem) => {
                let mut signed = csr.clone();
                signed["status"]["certificate"] = json!(STANDARD.encode(pem));
                Outcome::Signed(signed)
            }
            Err(message) => Outcome::Conditioned(with_condition(
                csr,
                "Failed",
                "SignerValidationFailure",
                &message,
                now,
            )),
        },
    }
}

fn text(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str).unwrap_or("True") == "True"
            })
        })
}

fn with_condition(csr: &Value, kind: &str, reason: &str, message: &str, now: Timestamp) -> Value {
    let mut out = csr.clone();
    let now = Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    let condition = json!({
        "type": kind, "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    });
    if !out.get("status").is_some_and(Value::is_object) {
        out["status"] = json!({});
    }
    match out["status"]
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
    {
        Some(conditions) => conditions.push(condition),
        None => out["status"]["conditions"] = json!([condition]),
    }
    out
}

fn usages(csr: &Value) -> Vec<String> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| {
            u.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes spec.request (base64 of a PEM CERTIFICATE REQUEST) and checks its self-signature.
fn parse_request(csr: &Value) -> Result<Request, String> {
    let encoded = csr
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .ok_or("spec.request is missing")?;
    let pem = STANDARD
        .decode(encoded)
        .map_err(|e| format!("spec.request is not base64: {e}"))?;
    let pem = String::from_utf8(pem).map_err(|_| "spec.request is not PEM".to_owned())?;
    let mut lines = pem.lines().map(str::trim).skip_while(|l| l.is_empty());
    if lines.next() != Some("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err("spec.request: PEM block type must be CERTIFICATE REQUEST".to_owned());
    }
    let body: String = lines.take_while(|l| !l.starts_with("-----END")).collect();
    let der = STANDARD
        .decode(body)
        .map_err(|e| format!("spec.request: PEM body is not base64: {e}"))?;
    let (_, parsed) = X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("spec.request: not an X.509 certificate request: {e}"))?;
    parsed
        .verify_signature()
        .map_err(|e| format!("spec.request: signature does not verify: {e}"))?;
    let subject = &parsed.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    let (mut dns_names, mut ip_addresses, mut other_names) = (0, 0, 0);
    for ext in parsed.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(_) => dns_names += 1,
                    GeneralName::IPAddress(_) => ip_addresses += 1,
                    _ => other_names += 1,
                }
            }
        }
    }
    Ok(Request {
        der,
        common_name,
        organizations,
        dns_names,
        ip_addresses,
        other_names,
    })
}

/// A node client certificate as `ValidateKubeletClientCSR` defines it.
fn kubelet_client_shape(usages: &[String], request: &Request) -> Result<(), String> {
    if request.organizations != ["system:nodes"] {
        return Err("subject organization is not system:nodes".to_owned());
    }
    if !request.common_name.starts_with("system:node:") {
        return Err("subject common name does not begin with system:node:".to_owned());
    }
    if request.dns_names + request.ip_addresses + request.other_names > 0 {
        return Err("subjectAltNames are not allowed".to_owned());
    }
    usages_within(usages, "client auth")
}

/// `required` is present and every usage is one of it, digital signature, key encipherment.
fn usages_within(usages: &[String], required: &str) -> Result<(), String> {
    let allowed = [required, "digital signature", "key encipherment"];
    if !usages.iter().any(|u| u == required)
        || usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return Err(format!("usages did not match [{}]", allowed.join(" ")));
    }
    Ok(())
}

/// csrapproving's rule: a kubelet client CSR from a bootstrap token (nodeclient) or from the
/// node itself renewing (selfnodeclient).
fn approvable(csr: &Value, signer: &str, usages: &[String], request: &Request) -> bool {
    if signer != KUBELET_CLIENT || kubelet_client_shape(usages, request).is_err() {
        return false;
    }
    let username = text(csr, "/spec/username");
    let bootstrapper = csr
        .pointer("/spec/groups")
        .and_then(Value::as_array)
        .is_some_and(|g| g.iter().any(|g| g.as_str() == Some(BOOTSTRAPPERS)));
    bootstrapper || username == request.common_name
}

/// The built-in signers' checks; None for a signer this server does not run.
fn validate_for_signer(
    signer: &str,
    usages: &[String],
    request: &Request,
) -> Option<Result<(), String>> {
    Some(match signer {
        KUBELET_CLIENT => kubelet_client_shape(usages, request),
        KUBELET_SERVING => {
            if request.organizations != ["system:nodes"] {
                Err("subject organization is not system:nodes".to_owned())
            } else if !request.common_name.starts_with("system:node:") {
                Err("subject common name does not begin with system:node:".to_owned())
            } else if request.dns_names + request.ip_addresses == 0 {
                Err("DNS or IP subjectAltName is required".to_owned())
            } else if request.other_names > 0 {
                Err("email and URI subjectAltNames are not allowed".to_owned())
            } else {
                usages_within(usages, "server auth")
            }
        }
        APISERVER_CLIENT => usages_within(usages, "client auth"),
        LEGACY_UNKNOWN => Ok(()),
        _ => return None,
    })
}

/// Signs the request: its subject, SANs and public key; key usages from spec.usages; lifetime
/// from spec.expirationSeconds (default one year, at least ten minutes).
fn issue(pki: &Pki, csr: &Value, usages: &[String], request: &Request) -> Result<String, String> {
    let parsed = CertificateSigningRequestParams::from_der(&request.der.as_slice().into())
        .map_err(|e| format!("spec.request: {e}"))?;
    let mut params = CertificateParams::default();
    if !request.common_name.is_empty() {
        params
            .distinguished_name
            .push(DnType::CommonName, request.common_name.as_str());
    }
    match request.organizations.as_slice() {
        [] => {}
        [org] => params
            .distinguished_name
            .push(DnType::OrganizationName, org.as_str()),
        _ => return Err("the test signer supports one subject organization".to_owned()),
    }
    params.subject_alt_names = parsed
        .params
        .subject_alt_names
        .iter()
        .filter(|s| matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)))
        .cloned()
        .collect();
    for usage in usages {
        match usage.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "content commitment" => params.key_usages.push(KeyUsagePurpose::ContentCommitment),
            "data encipherment" => params.key_usages.push(KeyUsagePurpose::DataEncipherment),
            "key agreement" => params.key_usages.push(KeyUsagePurpose::KeyAgreement),
            "client auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            "code signing" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::EmailProtection),
            other => return Err(format!("unsupported key usage {other:?}")),
        }
    }
    let lifetime = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_DURATION, |s| {
            Duration::from_secs(s).clamp(MIN_DURATION, DEFAULT_DURATION)
        });
    set_validity(&mut params, lifetime).map_err(|e| e.to_string())?;
    let der = pki
        .sign(params, &parsed.public_key)
        .map_err(|e| format!("{e:#}"))?;
    Ok(pem_certificate(&der))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rcgen::KeyPair;

    /// A CSR object as a kubelet submits it, for `cn`/`org` signed by `key`.
    pub(crate) fn node_csr(
        key: &KeyPair,
        cn: &str,
        org: &str,
        username: &str,
        groups: &[&str],
    ) -> Value {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        let pem = params.serialize_request(key).unwrap().pem().unwrap();
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "csr-1"},
            "spec": {
                "request": STANDARD.encode(pem),
                "signerName": KUBELET_CLIENT,
                "usages": ["digital signature", "client auth"],
                "expirationSeconds": 1800,
                "username": username,
                "groups": groups,
            },
        })
    }

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn conditions(csr: &Value) -> Vec<(String, String)> {
        csr["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (text(c, "/type"), text(c, "/reason")))
            .collect()
    }

    /// Runs the controllers to quiescence, returning the final object.
    pub(crate) fn settle(pki: &Pki, mut csr: Value, auto: bool) -> Value {
        for _ in 0..4 {
            match reconcile(pki, &csr, auto, now()) {
                Outcome::Nothing => return csr,
                Outcome::Conditioned(next) => csr = next,
                Outcome::Signed(next) => return next,
            }
        }
        csr
    }

    #[test]
    fn bootstrap_node_csr_is_approved_then_signed() {
        let pki = Pki::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = node_csr(
            &key,
            "system:node:n1",
            "system:nodes",
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS],
        );
        let Outcome::Conditioned(approved) = reconcile(&pki, &csr, true, now()) else {
            panic!("not approved")
        };
        assert_eq!(
            conditions(&approved),
            [("Approved".to_owned(), "AutoApproved".to_owned())]
        );
        let Outcome::Signed(signed) = reconcile(&pki, &approved, true, now()) else {
            panic!("not signed")
        };
        let pem = String::from_utf8(
            STANDARD
                .decode(text(&signed, "/status/certificate"))
                .unwrap(),
        )
        .unwrap();
        let der = super::super::testing::pem_der(&pem);
        let user = pki.client_user(&der).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let v = cert.validity();
        assert_eq!(
            v.not_after.timestamp() - v.not_before.timestamp(),
            1800 + 300
        );
        assert_eq!(reconcile(&pki, &signed, true, now()), Outcome::Nothing);
    }

    #[test]
    fn node_renewing_itself_is_approved_but_not_for_another_node() {
        let pki = Pki::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let own = node_csr(
            &key,
            "system:node:n1",
            "system:nodes",
            "system:node:n1",
            &["system:nodes"],
        );
        assert!(settle(&pki, own, true)
            .pointer("/status/certificate")
            .is_some());
        let other = node_csr(
            &key,
            "system:node:n2",
            "system:nodes",
            "system:node:n1",
            &["system:nodes"],
        );
        assert_eq!(reconcile(&pki, &other, true, now()), Outcome::Nothing);
    }

    #[test]
    fn wrong_shapes_and_disabled_approval_stay_pending() {
        let pki = Pki::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let b = [BOOTSTRAPPERS];
        let csr = node_csr(
            &key,
            "system:node:n1",
            "system:nodes",
            "system:bootstrap:abcdef",
            &b,
        );
        assert_eq!(reconcile(&pki, &csr, false, now()), Outcome::Nothing);
        let admin = node_csr(
            &key,
            "admin",
            "system:masters",
            "system:bootstrap:abcdef",
            &b,
        );
        assert_eq!(reconcile(&pki, &admin, true, now()), Outcome::Nothing);
        let mut serving = csr.clone();
        serving["spec"]["usages"] = json!(["digital signature", "server auth"]);
        assert_eq!(reconcile(&pki, &serving, true, now()), Outcome::Nothing);
        let mut stranger = csr.clone();
        stranger["spec"]["groups"] = json!(["system:authenticated"]);
        assert_eq!(reconcile(&pki, &stranger, true, now()), Outcome::Nothing);
    }

    #[test]
    fn denied_is_never_signed_and_bad_approved_ones_fail() {
        let pki = Pki::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = node_csr(&key, "system:node:n1", "system:nodes", "alice", &[]);
        let denied = with_condition(&csr, "Denied", "NoWay", "no", now());
        assert_eq!(reconcile(&pki, &denied, true, now()), Outcome::Nothing);
        // Approved by an admin but with a usage the kubelet signer refuses.
        let mut bad = with_condition(&csr, "Approved", "ByAdmin", "ok", now());
        bad["spec"]["usages"] = json!(["client auth", "server auth"]);
        let Outcome::Conditioned(failed) = reconcile(&pki, &bad, true, now()) else {
            panic!()
        };
        assert_eq!(
            conditions(&failed)[1],
            ("Failed".to_owned(), "SignerValidationFailure".to_owned())
        );
        assert_eq!(reconcile(&pki, &failed, true, now()), Outcome::Nothing);
        // Another signer's request stays approved and unsigned.
        let mut foreign = with_condition(&csr, "Approved", "ByAdmin", "ok", now());
        foreign["spec"]["signerName"] = json!("example.com/custom");
        assert_eq!(reconcile(&pki, &foreign, true, now()), Outcome::Nothing);
    }

    #[test]
    fn malformed_or_forged_requests_fail() {
        let pki = Pki::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut garbage = node_csr(
            &key,
            "system:node:n1",
            "system:nodes",
            "u",
            &[BOOTSTRAPPERS],
        );
        garbage["spec"]["request"] = json!(STANDARD.encode("not a pem"));
        let Outcome::Conditioned(failed) = reconcile(&pki, &garbage, true, now()) else {
            panic!()
        };
        assert_eq!(
            conditions(&failed),
            [("Failed".to_owned(), "InvalidRequest".to_owned())]
        );
        // Flip one byte of the signature: the self-signature check catches it.
        let good = node_csr(
            &key,
            "system:node:n1",
            "system:nodes",
            "u",
            &[BOOTSTRAPPERS],
        );
        let pem =
            String::from_utf8(STANDARD.decode(text(&good, "/spec/request")).unwrap()).unwrap();
        let mut der =
            super::super::testing::pem_der(&pem.replace("CERTIFICATE REQUEST", "CERTIFICATE"));
        let last = der.len() - 1;
        der[last] ^= 1;
        let forged_pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            STANDARD.encode(&der)
        );
        let mut forged = good.clone();
        forged["spec"]["request"] = json!(STANDARD.encode(forged_pem));
        let Outcome::Conditioned(failed) = reconcile(&pki, &forged, true, now()) else {
            panic!()
        };
        assert!(text(&failed["status"]["conditions"][0], "/message").contains("signature"));
    }

    #[test]
    fn expiration_is_clamped_to_ten_minutes() {
        let pki = Pki::new().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut csr = node_csr(
            &key,
            "system:node:n1",
            "system:nodes",
            "u",
            &[BOOTSTRAPPERS],
        );
        csr["spec"]["expirationSeconds"] = json!(60);
        let signed = settle(&pki, csr, true);
        let pem = String::from_utf8(
            STANDARD
                .decode(text(&signed, "/status/certificate"))
                .unwrap(),
        )
        .unwrap();
        let der = super::super::testing::pem_der(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let v = cert.validity();
        assert_eq!(
            v.not_after.timestamp() - v.not_before.timestamp(),
            600 + 300
        );
    }
}
