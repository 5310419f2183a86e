//! Where snapshots are published and fetched: an S3-compatible bucket, an
//! HTTP(S) server, or a local directory, each behind `object_store`.
//!
//! S3 takes its endpoint, region and credentials the way AWS tools do, from
//! the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP=true` for a
//! plain-HTTP endpoint, `AWS_SKIP_SIGNATURE=true` for a public bucket).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

/// One place snapshots live: a store and the prefix inside it.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// What the user gave, for messages.
    shown: String,
    kind: LocationKind,
}

/// What kind of store a [`Location`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationKind {
    S3,
    Http,
    Directory,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// How long one request may take, and how often `object_store` itself
/// retries one: little, since a failed chunk is retried by the fetcher
/// (from another mirror when there is one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

impl Location {
    /// Parses `s3://bucket[/prefix]`, `http(s)://host[:port][/path]`,
    /// `file:///dir` or a plain directory path. `create`: a local directory
    /// is created when missing (publishing); otherwise it must exist.
    pub fn parse(given: &str, create: bool) -> anyhow::Result<Location> {
        let given = given.trim();
        if given.is_empty() {
            bail!("an empty location: give s3://BUCKET/PREFIX, https://HOST/PATH, file:///DIR or a directory");
        }
        let (scheme, rest) = match given.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("".into(), given),
        };
        match scheme.as_str() {
            "s3" | "s3a" => Self::s3(given, rest),
            "http" | "https" => Self::http(given),
            "file" => Self::directory(given, Path::new(rest), create),
            "" => Self::directory(given, Path::new(given), create),
            other => bail!(
                "`{given}`: the scheme {other}:// is not supported; give s3://BUCKET/PREFIX, https://HOST/PATH, \
                 file:///DIR or a directory"
            ),
        }
    }

    fn s3(given: &str, rest: &str) -> anyhow::Result<Location> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("`{given}` names no bucket: give s3://BUCKET/PREFIX");
        }
        // These client options replace those `from_env` read, so
        // AWS_ALLOW_HTTP is applied here: a plain-HTTP endpoint (a local S3
        // server) is allowed when asked for, or when the endpoint says http://.
        let allow_http = match std::env::var("AWS_ALLOW_HTTP") {
            Ok(v) => v.eq_ignore_ascii_case("true") || v == "1",
            Err(_) => endpoint_from_env().is_some_and(|e| e.starts_with("http://")),
        };
        let options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_allow_http(allow_http);
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(options)
            .with_retry(retry());
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().with_context(|| {
            format!(
                "configuring S3 for `{given}` (endpoint and credentials come from AWS_ENDPOINT_URL, AWS_REGION, \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        })?;
        Ok(Location {
            store: Arc::new(store),
            prefix: parse_prefix(given, prefix)?,
            shown: given.to_string(),
            kind: LocationKind::S3,
        })
    }

    fn http(given: &str) -> anyhow::Result<Location> {
        let url = url::Url::parse(given).with_context(|| format!("`{given}` is not a URL"))?;
        // Objects are named relative to the given path: it is a directory.
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_allow_http(url.scheme() == "http")
            // No idle connections kept: a web server that gives each open
            // connection a thread (tiny_http) left a new one unanswered
            // while idle kept-alive ones held its threads, and the request
            // waited for its timeout. A chunk is megabytes: a connection
            // per request costs nothing measurable.
            .with_pool_max_idle_per_host(0);
        let store = HttpBuilder::new()
            .with_url(base.as_str())
            .with_client_options(options)
            .with_retry(retry())
            .build()
            .with_context(|| format!("configuring HTTP for `{given}`"))?;
        Ok(Location {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            shown: given.to_string(),
            kind: LocationKind::Http,
        })
    }

    fn directory(given: &str, dir: &Path, create: bool) -> anyhow::Result<Location> {
        if create {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        } else if !dir.is_dir() {
            bail!(
                "{} is not a directory: give a snapshot directory, a published directory, \
                 s3://BUCKET/PREFIX or http(s)://HOST/PATH",
                dir.display()
            );
        }
        let store = LocalFileSystem::new_with_prefix(dir).with_context(|| format!("opening {}", dir.display()))?;
        Ok(Location {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            shown: given.to_string(),
            kind: LocationKind::Directory,
        })
    }

    pub fn kind(&self) -> LocationKind {
        self.kind
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object `name` (e.g. `chunks/<sha256>`) under this location.
    pub(crate) fn object(&self, name: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.clone().join(part);
        }
        path
    }
}

fn endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

fn parse_prefix(given: &str, prefix: &str) -> anyhow::Result<ObjectPath> {
    ObjectPath::parse(prefix.trim_matches('/'))
        .with_context(|| format!("`{given}`: the prefix `{prefix}` is not a valid object path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert_eq!(Location::parse(&d, false).unwrap().kind(), LocationKind::Directory);
        assert_eq!(
            Location::parse(&format!("file://{d}"), false).unwrap().kind(),
            LocationKind::Directory
        );
        let http = Location::parse("http://127.0.0.1:9/snaps", false).unwrap();
        assert_eq!(http.kind(), LocationKind::Http);
        assert_eq!(http.object("chunks/ab").as_ref(), "chunks/ab");
        let s3 = Location::parse("s3://bucket/a/b/", false).unwrap();
        assert_eq!(s3.kind(), LocationKind::S3);
        assert_eq!(s3.object("index.json").as_ref(), "a/b/index.json");
        let e = Location::parse("ftp://x/y", false).unwrap_err().to_string();
        assert!(e.contains("ftp:// is not supported"), "{e}");
        let e = Location::parse("s3:///x", false).unwrap_err().to_string();
        assert!(e.contains("names no bucket"), "{e}");
        let e = Location::parse(&format!("{d}/missing"), false).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
