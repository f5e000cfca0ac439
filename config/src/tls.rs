//! `[broker.tls]`: how `amqps://` URIs verify the broker and present a client certificate. The
//! files are read when the config loads, so a missing or wrong file is a config error naming its
//! key, not a connection failure later.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::KeyError;

/// `[broker.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file of the CA(s) that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM PKCS#8 private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// TLS material, read at load time so a missing file is a config error, not a runtime one.
#[derive(Clone, Default)]
pub struct Tls {
    /// PEM CA chain added to the system's roots.
    pub ca_pem: Option<String>,
    /// PEM certificate and key presented to the broker.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tls(ca: {}, client: {})",
            self.ca_pem.is_some(),
            self.client.is_some()
        )
    }
}

impl Tls {
    /// Reads the TLS files named in `[broker.tls]`.
    pub fn load(raw: Option<&RawTls>) -> Result<Tls, KeyError> {
        let Some(raw) = raw else {
            return Ok(Tls::default());
        };
        let read = |key: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|err| {
                KeyError::new(
                    format!("broker.tls.{key}"),
                    format!("cannot read \"{}\": {err}", path.display()),
                )
            })
        };
        let ca_pem = match &raw.ca_file {
            Some(path) => {
                let pem = read("ca_file", path)?;
                let text = String::from_utf8(pem)
                    .ok()
                    .filter(|t| t.contains("-----BEGIN CERTIFICATE-----"))
                    .ok_or_else(|| {
                        KeyError::new(
                            "broker.tls.ca_file",
                            format!("\"{}\" holds no PEM certificate", path.display()),
                        )
                    })?;
                Some(text)
            }
            None => None,
        };
        let client = match (&raw.cert_file, &raw.key_file) {
            (Some(cert), Some(key)) => Some((read("cert_file", cert)?, read("key_file", key)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(KeyError::new(
                    "broker.tls.key_file",
                    "missing key (cert_file needs it)",
                ));
            }
            (None, Some(_)) => {
                return Err(KeyError::new(
                    "broker.tls.cert_file",
                    "missing key (key_file needs it)",
                ));
            }
        };
        Ok(Tls { ca_pem, client })
    }
}
