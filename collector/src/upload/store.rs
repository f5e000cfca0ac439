//! The object store, through `object_store`'s S3 client: put an object (at once, or in parts),
//! abort a multipart upload, list a prefix. Every error names the key, the bucket and the
//! endpoint; the client's own retries are off, since the uploader retries (and counts) itself.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use logship_config::upload::Upload;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore as _, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore as _, PutPayload, RetryConfig};

/// A request that takes longer fails (and is retried): a part is at most
/// [`super::PART_BYTES`], which a link of 1 MiB/s sends in well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed request to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Wrong credentials, or a key without the permission: retrying cannot help until an
    /// operator acts.
    #[error(
        "the store at {endpoint} refused access to bucket \"{bucket}\" ({op} \"{key}\"): check upload.access_key_id, its secret and its permissions on the bucket"
    )]
    Denied {
        endpoint: String,
        bucket: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// The bucket does not exist.
    #[error("bucket \"{bucket}\" does not exist at {endpoint} ({op} \"{key}\")")]
    NoBucket {
        endpoint: String,
        bucket: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// Anything else: the store is down, slow, or answered 5xx or 429.
    #[error("cannot {op} \"{key}\" in bucket \"{bucket}\" at {endpoint}")]
    Failed {
        endpoint: String,
        bucket: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    /// The client could not be set up from `[upload]`.
    #[error("cannot set up the client for bucket \"{bucket}\" at {endpoint}")]
    Client {
        endpoint: String,
        bucket: String,
        #[source]
        source: Box<object_store::Error>,
    },
}

impl StoreError {
    /// Whether an operator must act (credentials, permissions, the bucket): said as such.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::Denied { .. } | StoreError::NoBucket { .. }
        )
    }
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// A bucket of an S3-compatible store.
#[derive(Clone)]
pub struct Store {
    client: Arc<AmazonS3>,
    endpoint: String,
    bucket: String,
}

impl Store {
    /// The client `upload` describes (nothing is sent yet).
    pub fn new(upload: &Upload) -> Result<Store, StoreError> {
        let endpoint = upload.endpoint_name();
        let mut builder = AmazonS3Builder::new()
            .with_region(&upload.region)
            .with_bucket_name(&upload.bucket)
            .with_access_key_id(&upload.access_key_id)
            .with_secret_access_key(upload.secret_access_key.expose())
            .with_virtual_hosted_style_request(!upload.path_style)
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT),
            );
        if let Some(custom) = &upload.endpoint {
            builder = builder.with_endpoint(custom);
        }
        let client = builder.build().map_err(|source| StoreError::Client {
            endpoint: endpoint.clone(),
            bucket: upload.bucket.clone(),
            source: Box::new(source),
        })?;
        Ok(Store {
            client: Arc::new(client),
            endpoint,
            bucket: upload.bucket.clone(),
        })
    }

    /// The bucket, for messages.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Puts `bytes` at `key` in one request.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put(&object_path(key), PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|err| self.error("put", key, err))
    }

    /// Begins a multipart upload at `key`; returns its id.
    pub async fn begin_multipart(&self, key: &str) -> Result<String, StoreError> {
        self.client
            .create_multipart(&object_path(key))
            .await
            .map_err(|err| self.error("begin a multipart upload of", key, err))
    }

    /// Sends part `index` (from 0) of the multipart upload `id`.
    pub async fn put_part(
        &self,
        key: &str,
        id: &str,
        index: usize,
        bytes: Vec<u8>,
    ) -> Result<PartId, StoreError> {
        self.client
            .put_part(&object_path(key), &id.to_string(), index, bytes.into())
            .await
            .map_err(|err| self.error("send a part of", key, err))
    }

    /// Completes the multipart upload `id` from its parts, in order.
    pub async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: Vec<PartId>,
    ) -> Result<(), StoreError> {
        self.client
            .complete_multipart(&object_path(key), &id.to_string(), parts)
            .await
            .map(drop)
            .map_err(|err| self.error("complete the multipart upload of", key, err))
    }

    /// Aborts the multipart upload `id`; one the store no longer knows is aborted already.
    pub async fn abort_multipart(&self, key: &str, id: &str) -> Result<(), StoreError> {
        match self
            .client
            .abort_multipart(&object_path(key), &id.to_string())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.error("abort the multipart upload of", key, err)),
        }
    }

    /// Checks that the bucket exists and the key may list it (one request).
    pub async fn check(&self, prefix: &str) -> Result<(), StoreError> {
        self.client
            .list_with_delimiter(Some(&object_path(prefix)))
            .await
            .map(drop)
            .map_err(|err| self.error("list", prefix, err))
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let path = object_path(prefix);
        let prefix_arg = (!prefix.is_empty()).then_some(&path);
        self.client
            .list(prefix_arg)
            .map_ok(|meta| Listed {
                key: meta.location.to_string(),
                size: meta.size,
            })
            .try_collect()
            .await
            .map_err(|err| self.error("list", prefix, err))
    }

    fn error(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        let (endpoint, bucket, key) = (self.endpoint.clone(), self.bucket.clone(), key.to_string());
        let status = status(&source);
        let source = Box::new(source);
        match status {
            Some(401 | 403) => StoreError::Denied {
                endpoint,
                bucket,
                op,
                key,
                source,
            },
            // A put, a list or a part cannot miss anything but the bucket.
            Some(404) => StoreError::NoBucket {
                endpoint,
                bucket,
                op,
                key,
                source,
            },
            _ => StoreError::Failed {
                endpoint,
                bucket,
                op,
                key,
                source,
            },
        }
    }
}

/// The object path of `key`, taken as it is (the key form is a contract), so that the key in
/// the store is the output file's path with its characters as they are; a key with a control
/// character (which `object_store` does not take as it is) is percent-encoded instead.
fn object_path(key: &str) -> ObjectPath {
    ObjectPath::parse(key).unwrap_or_else(|_| ObjectPath::from(key))
}

/// The HTTP status the store answered, when it answered one. `object_store` maps some to
/// variants and leaves others (a list's) in the message only.
fn status(err: &object_store::Error) -> Option<u16> {
    match err {
        object_store::Error::NotFound { .. } => return Some(404),
        object_store::Error::PermissionDenied { .. } => return Some(403),
        object_store::Error::Unauthenticated { .. } => return Some(401),
        _ => {}
    }
    let text = logship_runtime::error_chain(err);
    let (_, after) = text.split_once("status code: ")?;
    after.get(..3)?.parse().ok()
}
