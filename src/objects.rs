//! Object-store locations: `s3://bucket/prefix/` or `file:///dir/`.
//!
//! A [`Location`] is a store and a key prefix in it. Keys are built once
//! ([`Location::key`]) and used as written (`Path::parse`, never the
//! encoding `Path::from`, which would name another object for keys holding
//! `%`, `[` or spaces), so a URL printed, an UNLOAD's `TO` and a listing
//! all name the same objects. Staged parts are read from one
//! ([`crate::source`]) and exports written to one ([`crate::sink`]).

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

const SYSTEM: &str = "object store";

/// A location: a store and a prefix in it.
#[derive(Clone)]
pub struct Location {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `s3://bucket/` or `file:///`: an object's URL is this and its key.
    pub(crate) base: String,
    pub(crate) prefix: String,
    /// The job's key naming the location, for errors.
    pub(crate) config_key: &'static str,
}

/// An error of the store, with secrets masked.
pub fn store_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        system: SYSTEM,
        message: crate::redact::scrub(&format!("{what}: {e}")),
    }
}

impl Location {
    /// Open `url` (`s3://bucket/prefix/` with credentials from the
    /// environment, or `file:///absolute/dir/`); `config_key` names the
    /// job's setting in errors.
    pub fn open(
        url: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
        config_key: &'static str,
    ) -> Result<Self> {
        if let Some(dir) = url.strip_prefix("file://") {
            if !dir.starts_with('/') {
                return Err(Error::config(
                    config_key,
                    format!("{url:?}: a file:// location takes an absolute path, file:///dir/"),
                ));
            }
            return Ok(Location {
                store: Arc::new(LocalFileSystem::new()),
                base: "file:///".into(),
                prefix: dir.trim_matches('/').to_string(),
                config_key,
            });
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(Error::config(
                config_key,
                format!("{url:?} must be an s3://bucket/prefix/ or file:///dir/ URL"),
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::config(
                config_key,
                format!("{url:?} names no bucket"),
            ));
        }
        let region = region
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_region(region);
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| Error::config(config_key, crate::redact::scrub(&e.to_string())))?;
        Ok(Location {
            store: Arc::new(store),
            base: format!("s3://{bucket}/"),
            prefix: prefix.trim_matches('/').to_string(),
            config_key,
        })
    }

    /// The object store behind the location.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// `<prefix>/<sub>`: the key prefix of `sub` under the location, as
    /// written, with no encoding.
    pub fn key(&self, sub: &str) -> String {
        [self.prefix.as_str(), sub]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    }

    /// `s3://bucket/<prefix>/<sub>/`.
    pub fn url(&self, sub: &str) -> String {
        format!("{}{}/", self.base, self.key(sub))
    }

    /// `s3://bucket/<key>`: an object's URL.
    pub fn object_url(&self, key: &str) -> String {
        format!("{}{key}", self.base)
    }

    /// The key of an object's URL under this location's store.
    pub fn key_of_url<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(&self.base).unwrap_or(url)
    }

    /// The object path of `key` as it is.
    pub fn path_of(&self, key: &str) -> Result<Path> {
        Path::parse(key).map_err(|e| {
            Error::config(
                self.config_key,
                format!("{}: not a usable object key: {e}", self.object_url(key)),
            )
        })
    }

    /// Delete the given objects; one already gone is not an error.
    pub async fn delete(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            match self.store.delete(&self.path_of(key)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(store_error(
                        &format!("cannot delete {}", self.object_url(key)),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let open =
            |url: &str| Location::open(url, Some("eu-west-1"), Some("http://127.0.0.1:1"), "k");
        let s = open("s3://bucket/a/b/").unwrap();
        assert_eq!(s.url("job/7"), "s3://bucket/a/b/job/7/");
        assert_eq!(s.key("job/7"), "a/b/job/7");
        assert_eq!(s.key_of_url("s3://bucket/a/b/x.parquet"), "a/b/x.parquet");
        let s = open("s3://bucket").unwrap();
        assert_eq!(s.url("x"), "s3://bucket/x/");
        assert_eq!(s.key(""), "");
        // Odd characters: the URL and the object path name the same key.
        let s = open("s3://bucket/ex ports/").unwrap();
        let sub = "orders[v2]~{a}%#|^/1";
        assert_eq!(s.url(sub), "s3://bucket/ex ports/orders[v2]~{a}%#|^/1/");
        assert_eq!(
            s.path_of(&s.key(sub)).unwrap().as_ref(),
            "ex ports/orders[v2]~{a}%#|^/1"
        );
        assert!(open("s3:///p").is_err());
        let f = open("file:///tmp/out/").unwrap();
        assert_eq!(f.url("p"), "file:///tmp/out/p/");
        assert_eq!(
            f.object_url(&f.key("a.parquet")),
            "file:///tmp/out/a.parquet"
        );
        let e = open("file://relative/dir").err().unwrap().to_string();
        assert!(e.contains("absolute path") && e.starts_with("k:"), "{e}");
        let e = open("gs://b/p").err().unwrap().to_string();
        assert!(e.contains("s3://bucket/prefix/ or file:///dir/"), "{e}");
    }
}
