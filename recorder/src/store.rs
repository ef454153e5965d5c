//! The object store recordings go to: a local directory or S3, behind one interface
//! (`object_store`). Large files go up in parts; a put is confirmed by reading the
//! object's size back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tokio::io::AsyncReadExt;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("reading {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store holds {got} bytes of {key}, {want} were sent")]
    SizeMismatch { key: String, want: u64, got: u64 },
    #[error("object store settings: {0}")]
    Config(String),
}

/// Where recordings are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A directory on this machine (the default).
    Local { dir: PathBuf },
    /// An S3-compatible service.
    S3 {
        bucket: String,
        /// e.g. `http://127.0.0.1:9000`; empty for AWS itself.
        endpoint: String,
        region: String,
        access_key_id: String,
        secret_access_key: String,
    },
}

/// What a file's extension says it is: S3 keeps it with the object, so a presigned
/// download is answered with the right `Content-Type`.
const CONTENT_TYPES: &[(&str, &str)] = &[
    ("opus", "audio/ogg"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("webm", "video/webm"),
    ("mkv", "video/x-matroska"),
    ("json", "application/json"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
];

fn content_types(mut options: ClientOptions) -> ClientOptions {
    for (ext, mime) in CONTENT_TYPES {
        options = options.with_content_type_for_suffix(*ext, *mime);
    }
    options
}

#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// S3's request signer: downloads go to the store itself on a presigned URL.
    signer: Option<Arc<dyn object_store::signer::Signer>>,
    /// Files larger than this go up as multipart uploads of this part size.
    part_size: usize,
    description: String,
}

impl Store {
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        match config {
            StoreConfig::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Local {
                    path: dir.clone(),
                    source: e,
                })?;
                // Deleting a "directory"'s last object removes the emptied directories.
                let fs = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
                Ok(Store {
                    inner: Arc::new(fs),
                    signer: None,
                    part_size: 8 * 1024 * 1024,
                    description: format!("local directory {}", dir.display()),
                })
            }
            StoreConfig::S3 {
                bucket,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
            } => {
                if bucket.is_empty() {
                    return Err(StoreError::Config("the S3 bucket is not set".into()));
                }
                // Idempotent; the first provider installed in the process stays.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key)
                    // The recorder retries with its own backoff; a failed attempt
                    // should come back quickly.
                    .with_retry(RetryConfig {
                        max_retries: 1,
                        retry_timeout: Duration::from_secs(10),
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        content_types(ClientOptions::new())
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(120)),
                    );
                if !endpoint.is_empty() {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let s3 = Arc::new(b.build()?);
                Ok(Store {
                    inner: s3.clone(),
                    signer: Some(s3),
                    // S3's smallest part (but the last) is 5 MiB.
                    part_size: 8 * 1024 * 1024,
                    description: format!("s3 bucket {bucket} at {endpoint}"),
                })
            }
        }
    }

    /// Presigned URLs made for `endpoint` (the address clients reach the S3 service
    /// at, when the servers reach it at another, e.g. `http://minio:9000` inside a
    /// compose network); a local store makes none.
    pub fn with_public_endpoint(
        mut self,
        config: &StoreConfig,
        endpoint: &str,
    ) -> Result<Store, StoreError> {
        if let StoreConfig::S3 {
            bucket,
            region,
            access_key_id,
            secret_access_key,
            ..
        } = config
        {
            let signer = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret_access_key)
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .build()?;
            self.signer = Some(Arc::new(signer));
        }
        Ok(self)
    }

    /// The same store with another part size (tests use small parts).
    pub fn with_part_size(mut self, bytes: usize) -> Store {
        self.part_size = bytes.max(5 * 1024 * 1024);
        self
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// Uploads a local file to `key` and confirms its size. Returns the size.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let local = |e| StoreError::Local {
            path: path.to_owned(),
            source: e,
        };
        let size = tokio::fs::metadata(path).await.map_err(local)?.len();
        let location = ObjectPath::from(key);
        if size as usize <= self.part_size {
            let data = tokio::fs::read(path).await.map_err(local)?;
            self.inner
                .put(&location, PutPayload::from(Bytes::from(data)))
                .await?;
        } else {
            let mut upload = self.inner.put_multipart(&location).await?;
            let mut file = tokio::fs::File::open(path).await.map_err(local)?;
            let result: Result<(), StoreError> = async {
                loop {
                    let mut part = Vec::with_capacity(self.part_size);
                    let n = (&mut file)
                        .take(self.part_size as u64)
                        .read_to_end(&mut part)
                        .await
                        .map_err(local)?;
                    if n == 0 {
                        break;
                    }
                    upload.put_part(PutPayload::from(Bytes::from(part))).await?;
                }
                upload.complete().await?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        self.confirm(key, size).await?;
        Ok(size)
    }

    /// Uploads bytes to `key` and confirms their size.
    pub async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let size = data.len() as u64;
        self.inner
            .put(&ObjectPath::from(key), PutPayload::from(Bytes::from(data)))
            .await?;
        self.confirm(key, size).await
    }

    async fn confirm(&self, key: &str, want: u64) -> Result<(), StoreError> {
        let meta = self.inner.head(&ObjectPath::from(key)).await?;
        if meta.size != want {
            return Err(StoreError::SizeMismatch {
                key: key.to_owned(),
                want,
                got: meta.size,
            });
        }
        Ok(())
    }

    /// An object's bytes (tests and tools).
    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        Ok(self
            .inner
            .get(&ObjectPath::from(key))
            .await?
            .bytes()
            .await?)
    }

    /// An object's size, in bytes.
    pub async fn size(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.inner.head(&ObjectPath::from(key)).await?.size)
    }

    /// Deletes every object under `prefix` (a "directory", `a/b/`); how many there
    /// were. Objects already gone count as deleted, so a retry finishes the job.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        use futures_util::TryStreamExt;
        let dir = ObjectPath::from(prefix.trim_end_matches('/'));
        let found: Vec<_> = self.inner.list(Some(&dir)).try_collect().await?;
        for m in &found {
            match self.inner.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(found.len() as u64)
    }

    /// An object's size and version: the store's own `ETag` (S3's, or the local
    /// store's inode, time and size), else its size and time. `None`: there is no
    /// such object.
    pub async fn head(&self, key: &str) -> Result<Option<(u64, String)>, StoreError> {
        let m = match self.inner.head(&ObjectPath::from(key)).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let version = m
            .e_tag
            .unwrap_or_else(|| format!("{:x}-{:x}", m.size, m.last_modified.timestamp_millis()));
        Ok(Some((m.size, version)))
    }

    /// A byte range of an object.
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        Ok(self.inner.get_range(&ObjectPath::from(key), range).await?)
    }

    /// An object as it streams from the store, with its size (served to clients
    /// without holding it in memory).
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<
        (
            u64,
            futures_util::stream::BoxStream<'static, Result<Bytes, StoreError>>,
        ),
        StoreError,
    > {
        use futures_util::TryStreamExt;
        let r = self.inner.get(&ObjectPath::from(key)).await?;
        let size = r.meta.size;
        Ok((size, Box::pin(r.into_stream().map_err(StoreError::from))))
    }

    /// Deletes one object; one already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies an object within the store (S3: server-side); the copy's size.
    pub async fn copy(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.inner
            .copy(&ObjectPath::from(from), &ObjectPath::from(to))
            .await?;
        self.size(to).await
    }

    /// A URL that reads `key` straight from the store for `ttl`, when the store can
    /// make one (S3); `None` for a local directory.
    pub async fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let url = signer
            .signed_url(http::Method::GET, &ObjectPath::from(key), ttl)
            .await?;
        Ok(Some(url.to_string()))
    }

    /// The keys under a prefix, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        use futures_util::TryStreamExt;
        let p = ObjectPath::from(prefix);
        let mut keys: Vec<String> = self
            .inner
            .list(Some(&p))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }
}
