//! Checks on a client certificate: that the signer issued it for our key and node, and
//! when it expires (what rotation schedules by).

use std::time::{Duration, SystemTime};

use x509_parser::prelude::X509Certificate;

use super::BootstrapError;

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

/// The certificates of a PEM bundle, DER, in order.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| block.contents)
        .collect()
}

fn first_certificate(pem: &str) -> Option<Vec<u8>> {
    pem_certificates(pem).into_iter().next()
}

fn unusable(what: impl Into<String>) -> BootstrapError {
    BootstrapError::IssuedCertificate(what.into())
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, BootstrapError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| unusable(format!("it does not parse: {e}")))
}

fn validity(cert: &X509Certificate<'_>) -> Validity {
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        match u64::try_from(secs) {
            Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    };
    Validity {
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    }
}

/// Check that `cert_pem` certifies `public_key_der` (SubjectPublicKeyInfo) as `common_name`,
/// and return its validity.
pub fn check_issued(
    cert_pem: &str,
    public_key_der: &[u8],
    common_name: &str,
) -> Result<Validity, BootstrapError> {
    let der = first_certificate(cert_pem).ok_or_else(|| unusable("it is not a PEM certificate"))?;
    let cert = parse(&der)?;
    if cert.tbs_certificate.subject_pki.raw != public_key_der {
        return Err(unusable(
            "it certifies another public key than the one in the request",
        ));
    }
    let cn = common_name_of(&cert);
    if cn.as_deref() != Some(common_name) {
        return Err(unusable(format!("it is for {cn:?}, not {common_name:?}")));
    }
    Ok(validity(&cert))
}

fn common_name_of(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// The common name and validity of the first certificate in a PEM file's contents.
pub fn describe(pem: &str) -> Result<(String, Validity), BootstrapError> {
    let der = first_certificate(pem).ok_or_else(|| unusable("no PEM certificate"))?;
    let cert = parse(&der)?;
    let cn = common_name_of(&cert).ok_or_else(|| unusable("the certificate has no common name"))?;
    Ok((cn, validity(&cert)))
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData;

    use super::*;

    fn issue(cn: &str, key: &rcgen::KeyPair) -> String {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        params.signed_by(key, &issuer).unwrap().pem()
    }

    #[test]
    fn issued_certificate_must_match_key_and_node() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = issue("system:node:a", &key);
        let validity = check_issued(&pem, &key.subject_public_key_info(), "system:node:a").unwrap();
        assert_eq!(
            validity
                .not_after
                .duration_since(validity.not_before)
                .unwrap(),
            Duration::from_secs(86_400)
        );
        let err =
            check_issued(&pem, &other.subject_public_key_info(), "system:node:a").unwrap_err();
        assert!(err.to_string().contains("another public key"), "{err}");
        let err = check_issued(&pem, &key.subject_public_key_info(), "system:node:b").unwrap_err();
        assert!(err.to_string().contains("system:node:b"), "{err}");
        assert_eq!(describe(&pem).unwrap(), ("system:node:a".into(), validity));
    }
}
