//! The collector's `[upload]` table: its archive uploaded to an S3-compatible object store
//! (AWS S3, Garage, MinIO, Ceph).
//!
//! The keys are a contract: `endpoint`, `region`, `bucket`, `prefix`, `path_style`,
//! `access_key_id`, `secret_access_key_file` (or the variables `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`), `interval`, `object_bytes`, `keep_local`, `max_backlog`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::broker::{duration_or, read_secret};
use crate::error::KeyError;
use crate::units::parse_size;

/// Default `upload.interval`: how long committed bytes may wait before they go up.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default `upload.object_bytes`: an object is cut at this size.
pub const DEFAULT_OBJECT_BYTES: u64 = 64 << 20;
/// Default `upload.keep_local`: how long uploaded bytes stay on the local disk.
pub const DEFAULT_KEEP_LOCAL: Duration = Duration::from_secs(86400);
/// Default `upload.max_backlog`: committed bytes not yet uploaded past which deliveries pause.
pub const DEFAULT_MAX_BACKLOG: u64 = 10 << 30;
/// The region when none is set (AWS's default; Garage's own default region is `garage`).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The variables read when `upload.access_key_id` is not set.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";

/// `[upload]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpload {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub interval: Option<String>,
    pub object_bytes: Option<String>,
    pub keep_local: Option<String>,
    pub max_backlog: Option<String>,
}

/// A secret key: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the store's client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A validated `[upload]`.
#[derive(Debug, Clone)]
pub struct Upload {
    /// `upload.endpoint`: `None` is AWS (the region's endpoint).
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Put before every key; `""` by default.
    pub prefix: String,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`): the default for a custom endpoint.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// How long committed bytes may wait before they are uploaded (a quiet file's last bytes
    /// too).
    pub interval: Duration,
    /// An object is cut at this size (at a frame's or a line's end at or below it).
    pub object_bytes: u64,
    /// How long uploaded bytes stay on the local disk; bytes not uploaded are never deleted.
    pub keep_local: Duration,
    /// Committed bytes not uploaded past which the collector stops taking deliveries.
    pub max_backlog: u64,
}

impl Upload {
    /// The endpoint as said in messages: the configured one, or AWS's for the region.
    pub fn endpoint_name(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{}.amazonaws.com", self.region),
        }
    }
}

impl RawUpload {
    /// Validates the table; errors name the key (`upload.<key>`).
    pub fn validate(&self) -> Result<Upload, KeyError> {
        let bucket = match self.bucket.as_deref() {
            None => return Err(KeyError::new("upload.bucket", "missing key")),
            Some(bucket) => check_bucket(bucket)?,
        };
        let endpoint = match self.endpoint.as_deref() {
            None => None,
            Some(endpoint)
                if endpoint.starts_with("http://") || endpoint.starts_with("https://") =>
            {
                Some(endpoint.trim_end_matches('/').to_string())
            }
            Some(other) => {
                return Err(KeyError::new(
                    "upload.endpoint",
                    format!("\"{other}\" is not an http:// or https:// URL"),
                ));
            }
        };
        let prefix = self.prefix.clone().unwrap_or_default();
        let bad_prefix = prefix.starts_with('/')
            || prefix.contains("//")
            || prefix.split('/').any(|part| part == "..")
            || !(prefix.is_empty() || prefix.ends_with('/'));
        if bad_prefix {
            return Err(KeyError::new(
                "upload.prefix",
                format!("\"{prefix}\" must be empty or folders ending in / (no .., no leading /)"),
            ));
        }
        let object_bytes = size_or(
            "upload.object_bytes",
            &self.object_bytes,
            DEFAULT_OBJECT_BYTES,
        )?;
        if object_bytes < 1024 {
            return Err(KeyError::new(
                "upload.object_bytes",
                format!("{object_bytes} bytes is below 1 KiB"),
            ));
        }
        let max_backlog = size_or("upload.max_backlog", &self.max_backlog, DEFAULT_MAX_BACKLOG)?;
        if max_backlog < object_bytes {
            return Err(KeyError::new(
                "upload.max_backlog",
                format!("{max_backlog} bytes is below upload.object_bytes ({object_bytes})"),
            ));
        }
        let interval = duration_or("upload.interval", &self.interval, DEFAULT_INTERVAL)?;
        if interval < Duration::from_secs(1) {
            return Err(KeyError::new(
                "upload.interval",
                "must be at least one second",
            ));
        }
        let keep_local = duration_or("upload.keep_local", &self.keep_local, DEFAULT_KEEP_LOCAL)?;
        let (access_key_id, secret_access_key) = self.credentials()?;
        Ok(Upload {
            path_style: self.path_style.unwrap_or(endpoint.is_some()),
            endpoint,
            region: self
                .region
                .clone()
                .unwrap_or_else(|| DEFAULT_REGION.to_string()),
            bucket,
            prefix,
            access_key_id,
            secret_access_key,
            interval,
            object_bytes,
            keep_local,
            max_backlog,
        })
    }

    /// The key pair: `access_key_id` with `secret_access_key_file`, else the AWS variables.
    fn credentials(&self) -> Result<(String, Secret), KeyError> {
        match (&self.access_key_id, &self.secret_access_key_file) {
            (Some(id), Some(path)) => Ok((
                id.clone(),
                Secret(read_secret("upload.secret_access_key_file", path)?),
            )),
            (Some(_), None) => Err(KeyError::new(
                "upload.secret_access_key_file",
                "missing key (upload.access_key_id is set)",
            )),
            (None, Some(_)) => Err(KeyError::new(
                "upload.access_key_id",
                "missing key (upload.secret_access_key_file is set)",
            )),
            (None, None) => {
                let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
                match (var(ACCESS_KEY_ENV), var(SECRET_KEY_ENV)) {
                    (Some(id), Some(secret)) => Ok((id, Secret(secret))),
                    _ => Err(KeyError::new(
                        "upload.access_key_id",
                        format!("missing key (or set {ACCESS_KEY_ENV} and {SECRET_KEY_ENV})"),
                    )),
                }
            }
        }
    }
}

/// A bucket name as S3 allows it: 3 to 63 of `a-z 0-9 . -`.
fn check_bucket(bucket: &str) -> Result<String, KeyError> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if valid {
        Ok(bucket.to_string())
    } else {
        Err(KeyError::new(
            "upload.bucket",
            format!("\"{bucket}\" is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"),
        ))
    }
}

fn size_or(key: &str, value: &Option<String>, default: u64) -> Result<u64, KeyError> {
    match value {
        None => Ok(default),
        Some(text) => parse_size(text).map_err(|problem| KeyError::new(key, problem)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[upload]` with a bucket and a key id (whose secret file does not exist) and `extra`.
    fn raw(extra: &str) -> RawUpload {
        let bucket = if extra.contains("bucket") {
            ""
        } else {
            "bucket = \"logs\"\n"
        };
        let text = format!(
            "{bucket}access_key_id = \"GK1\"\nsecret_access_key_file = \"/nonexistent/secret\"\n{extra}"
        );
        toml::from_str(&text).unwrap()
    }

    fn key(extra: &str) -> String {
        raw(extra).validate().unwrap_err().key
    }

    #[test]
    fn defaults_and_a_secret_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t\n").unwrap();
        let mut upload = raw("endpoint = \"http://127.0.0.1:3900/\"\n");
        upload.secret_access_key_file = Some(secret);
        let upload = upload.validate().unwrap();
        assert_eq!(upload.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(upload.path_style, "path style for a custom endpoint");
        assert_eq!(upload.secret_access_key.expose(), "s3cr3t");
        assert!(!format!("{upload:?}").contains("s3cr3t"));
        assert_eq!(upload.interval, DEFAULT_INTERVAL);
        assert_eq!(upload.object_bytes, 64 << 20);
        assert_eq!(upload.keep_local, Duration::from_secs(86400));
        assert_eq!(upload.max_backlog, 10 << 30);
        assert_eq!(upload.prefix, "");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(key(""), "upload.secret_access_key_file");
        assert_eq!(key("bucket = \"No_Such\""), "upload.bucket");
        assert_eq!(key("endpoint = \"127.0.0.1:3900\""), "upload.endpoint");
        assert_eq!(key("prefix = \"/abs/\""), "upload.prefix");
        assert_eq!(key("prefix = \"logs-\""), "upload.prefix");
        assert_eq!(key("object_bytes = \"1GB\""), "upload.object_bytes");
        assert_eq!(key("object_bytes = \"10\""), "upload.object_bytes");
        assert_eq!(key("interval = \"soon\""), "upload.interval");
        assert_eq!(key("keep_local = \"x\""), "upload.keep_local");
        assert_eq!(
            key("object_bytes = \"2 MiB\"\nmax_backlog = \"1 MiB\""),
            "upload.max_backlog"
        );
        let no_secret: RawUpload =
            toml::from_str("bucket = \"logs\"\naccess_key_id = \"GK1\"").unwrap();
        assert_eq!(
            no_secret.validate().unwrap_err().key,
            "upload.secret_access_key_file"
        );
    }
}
