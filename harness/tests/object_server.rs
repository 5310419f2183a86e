//! The real servers the transport tests use: SeaweedFS's S3 gateway through
//! `object_store`'s signed AmazonS3 client, and the static HTTP mirror with
//! its fault knobs and counters, through raw HTTP and `object_store`'s
//! HttpStore.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload};

use statesnap_harness::object_server::{SeaweedS3, StaticHttpOptions, StaticHttpServer};

// ---- SeaweedFS ----------------------------------------------------------------------------------

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// An AmazonS3 client of `bucket` configured only from `s3.s3_env()` (as
/// `AmazonS3Builder::from_env` would be), signing with its dummy credentials.
fn s3_store(s3: &SeaweedS3, bucket: &str) -> object_store::aws::AmazonS3 {
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in s3.s3_env() {
        let key: AmazonS3ConfigKey = key.to_ascii_lowercase().parse().unwrap();
        builder = builder.with_config(key, value);
    }
    builder.build().unwrap()
}

async fn put_get_list(store: &dyn ObjectStore, prefix: &str) {
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let chunk = ObjectPath::from(format!("{prefix}/chunks/000001"));
    let manifest = ObjectPath::from(format!("{prefix}/manifest.json"));
    store.put(&chunk, PutPayload::from(data.clone())).await.unwrap();
    store.put(&manifest, PutPayload::from_static(b"{}")).await.unwrap();
    let got = store.get(&chunk).await.unwrap().bytes().await.unwrap();
    assert!(got == data, "the chunk came back different");
    assert_eq!(store.head(&chunk).await.unwrap().size, data.len() as u64);
    assert_eq!(
        &store.get_range(&chunk, 1000..1010).await.unwrap()[..],
        &data[1000..1010]
    );
    let listed = store
        .list_with_delimiter(Some(&ObjectPath::from(format!("{prefix}/chunks"))))
        .await
        .unwrap();
    assert_eq!(listed.objects.len(), 1);
    // A multipart upload (what large objects take).
    let big = ObjectPath::from(format!("{prefix}/big"));
    let mut upload = store.put_multipart(&big).await.unwrap();
    upload.put_part(PutPayload::from(vec![1u8; 5 << 20])).await.unwrap();
    upload.put_part(PutPayload::from(vec![2u8; 1000])).await.unwrap();
    upload.complete().await.unwrap();
    assert_eq!(store.head(&big).await.unwrap().size, (5 << 20) + 1000);
    assert_eq!(
        &store.get_range(&big, (5 << 20) - 1..(5 << 20) + 1).await.unwrap()[..],
        &[1, 2]
    );
    let missing = store.get(&ObjectPath::from(format!("{prefix}/nope"))).await;
    assert!(
        matches!(missing, Err(object_store::Error::NotFound { .. })),
        "{missing:?}"
    );
}

#[test]
fn seaweed_serves_signed_s3_requests_and_stops_completely() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [tmp.path().join("a"), tmp.path().join("b")];
    // Two at once: their ports must not collide.
    let started = Instant::now();
    let servers: Vec<SeaweedS3> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|dir| scope.spawn(move || SeaweedS3::start(dir).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("two weed servers ready in {:.1} s", started.elapsed().as_secs_f64());
    assert_ne!(servers[0].endpoint(), servers[1].endpoint());
    assert!(servers[0].endpoint().starts_with("http://127.0.0.1:"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (i, s3) in servers.iter().enumerate() {
        s3.create_bucket("snapshots").unwrap();
        s3.create_bucket("snapshots").unwrap(); // already there: still fine
        let store = s3_store(s3, "snapshots");
        runtime.block_on(put_get_list(&store, &format!("server{i}/snap-100")));
    }
    // Arbitrary credentials are accepted too (there is no identity config).
    let other = AmazonS3Builder::new()
        .with_endpoint(servers[1].endpoint())
        .with_allow_http(true)
        .with_bucket_name("snapshots")
        .with_access_key_id("AKIAANYTHING")
        .with_secret_access_key("whatever")
        .with_region("eu-west-3")
        .build()
        .unwrap();
    runtime.block_on(async {
        let got = other
            .get(&ObjectPath::from("server1/snap-100/manifest.json"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"{}");
    });
    // A missing bucket is an error, not a silent success.
    let missing = s3_store(&servers[0], "no-such-bucket");
    assert!(runtime
        .block_on(missing.put(&ObjectPath::from("x"), PutPayload::from_static(b"x")))
        .is_err());
    let bad_name = servers[0].create_bucket("Not_A_Bucket!").unwrap_err();
    assert!(bad_name.to_string().contains("Not_A_Bucket!"), "{bad_name:#}");

    // Stopping: one explicitly, one by dropping; nothing of either is left.
    let mut servers = servers.into_iter();
    let (first, second) = (servers.next().unwrap(), servers.next().unwrap());
    let pids = [first.pid(), second.pid()];
    let stopping = Instant::now();
    first.stop().unwrap();
    drop(second);
    eprintln!("both stopped in {:.1} s", stopping.elapsed().as_secs_f64());
    for (dir, pid) in dirs.iter().zip(pids) {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "weed {pid} is still there"
        );
        let left = processes_mentioning(&dir.display().to_string());
        assert!(left.is_empty(), "processes of {} left: {left:?}", dir.display());
        assert!(dir.join("weed.log").is_file());
    }
}

#[test]
fn a_missing_weed_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = SeaweedS3::start_with(&tmp.path().join("no-weed"), tmp.path()).unwrap_err();
    assert!(format!("{err:#}").contains("no-weed"), "{err:#}");
}

// ---- the static HTTP server ----------------------------------------------------------------------

/// A raw HTTP/1.1 exchange: status, headers (lower-case names), body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn raw(server: &StaticHttpServer, method: &str, target: &str, extra: &str) -> Raw {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}\r\n",
        server.addr()
    )
    .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A snapshot-like tree: `snap/manifest.json`, `snap/chunks/00000{0,1,2}` (100 KB each).
fn snapshot_tree(root: &Path) -> Vec<u8> {
    std::fs::create_dir_all(root.join("snap/chunks")).unwrap();
    std::fs::write(root.join("snap/manifest.json"), b"{\"chunks\":3}").unwrap();
    let chunk = pattern(100_000);
    for i in 0..3 {
        std::fs::write(root.join(format!("snap/chunks/00000{i}")), &chunk).unwrap();
    }
    std::fs::write(root.parent().unwrap().join("secret"), b"outside").unwrap();
    chunk
}

#[test]
fn the_static_server_serves_files_heads_ranges_and_404s() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let chunk = snapshot_tree(&root);
    std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("snap/escape")).unwrap();
    let server = StaticHttpServer::start(&root).unwrap();
    assert!(server.url().starts_with("http://127.0.0.1:"));

    let r = raw(&server, "GET", "/snap/chunks/000001", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.body == chunk);

    let r = raw(&server, "HEAD", "/snap/chunks/000001", "");
    assert_eq!((r.status, r.header("content-length")), (200, Some("100000")));
    assert!(r.body.is_empty());

    let r = raw(&server, "GET", "/snap/manifest.json?x=1", "");
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"chunks\":3}"[..]));
    let r = raw(&server, "GET", "/snap/%63hunks/000002", "");
    assert_eq!(r.status, 200);

    let r = raw(&server, "GET", "/snap/chunks/000001", "Range: bytes=10-19\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100000"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.body, chunk[10..20]);
    let r = raw(&server, "GET", "/snap/chunks/000001", "Range: bytes=-5\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &chunk[99_995..]));
    let r = raw(&server, "GET", "/snap/chunks/000001", "Range: bytes=100000-\r\n");
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */100000")));

    for missing in ["/snap/chunks/000009", "/snap", "/snap/chunks/", "/", "/snap/escape"] {
        assert_eq!(raw(&server, "GET", missing, "").status, 404, "{missing}");
    }
    for escaping in ["/../secret", "/snap/../../secret", "/snap/%2e%2e/%2e%2e/secret"] {
        let r = raw(&server, "GET", escaping, "");
        assert_eq!(r.status, 400, "{escaping}");
        assert!(!String::from_utf8_lossy(&r.body).contains("outside"));
    }
    assert_eq!(raw(&server, "PUT", "/snap/x", "Content-Length: 0\r\n").status, 405);

    // GETs: 000001 ×4, manifest, 000002, 000009, /snap, /snap/chunks/, /, escape, and 3 refused.
    assert_eq!(server.gets(), 14);
    assert_eq!(server.heads(), 1);
    assert_eq!(server.requests(), 16);
    assert_eq!(server.chunk_gets(), 7);
    assert_eq!(server.gets_under("/snap/chunks/000001"), 4);
    assert_eq!(server.gets_under("/snap/chunks/"), 7);
    assert_eq!(server.gets_under("/snap/"), 9);
    assert_eq!(server.gets_by_path().get("/snap/manifest.json"), Some(&1));
    assert_eq!(server.bytes_served(), 100_000 * 2 + 12 + 10 + 5);
    server.reset_counters();
    assert_eq!(
        (server.requests(), server.chunk_gets(), server.gets_under("/")),
        (0, 0, 0)
    );

    let addr = server.addr();
    drop(server);
    assert!(TcpStream::connect(addr).is_err(), "still listening after drop");
}

#[test]
fn object_stores_http_client_reads_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let chunk = snapshot_tree(&root);
    let server = StaticHttpServer::start(&root).unwrap();
    let store = HttpBuilder::new()
        .with_url(server.url())
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let path = ObjectPath::from("snap/chunks/000000");
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert!(got[..] == chunk[..]);
        let meta = store.head(&path).await.unwrap();
        assert_eq!(meta.size, chunk.len() as u64);
        let part = store.get_range(&path, 99_000..100_000).await.unwrap();
        assert!(part[..] == chunk[99_000..]);
        let missing = store.get(&ObjectPath::from("snap/chunks/000042")).await;
        assert!(
            matches!(missing, Err(object_store::Error::NotFound { .. })),
            "{missing:?}"
        );
    });
    // A plain `get` is one unranged GET; `get_range` one ranged GET; `head` one HEAD.
    assert_eq!(server.gets_under("/snap/chunks/000000"), 2);
    assert_eq!(server.heads(), 1);
    assert_eq!(server.chunk_gets(), 3);

    // A corrupting mirror: chunk bodies differ in exactly one byte, the manifest does not.
    server.set_corrupt(true);
    runtime.block_on(async {
        let got = store
            .get(&ObjectPath::from("snap/chunks/000001"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.len(), chunk.len());
        assert_eq!(got.iter().zip(&chunk).filter(|(a, b)| a != b).count(), 1);
        let part = store
            .get_range(&ObjectPath::from("snap/chunks/000001"), 0..10)
            .await
            .unwrap();
        assert_eq!(part.iter().zip(&chunk).filter(|(a, b)| a != b).count(), 1);
        let manifest = store
            .get(&ObjectPath::from("snap/manifest.json"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&manifest[..], b"{\"chunks\":3}");
    });
    server.set_corrupt(false);

    // Every 2nd request fails: object_store retries the 500 and succeeds.
    server.reset_counters();
    server.set_fail_every(Some(2));
    runtime.block_on(async {
        for i in 0..3 {
            let path = ObjectPath::from(format!("snap/chunks/00000{i}"));
            let got = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert!(got[..] == chunk[..]);
        }
    });
    assert!(server.failures_injected() >= 1);
    assert_eq!(server.chunk_gets(), 3 + server.failures_injected());
    server.set_fail_every(None);
}

#[test]
fn faults_and_parallel_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    snapshot_tree(&root);
    let server = Arc::new(
        StaticHttpServer::start_with(
            &root,
            StaticHttpOptions {
                threads: 8,
                fail_every: Some(3),
                ..StaticHttpOptions::default()
            },
        )
        .unwrap(),
    );
    let statuses: Vec<u16> = (0..6)
        .map(|_| raw(&server, "GET", "/snap/manifest.json", "").status)
        .collect();
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500]);
    assert_eq!(server.failures_injected(), 2);
    server.set_fail_every(None);

    // Eight requests delayed 400 ms each are answered side by side.
    server.set_delay_per_request(Duration::from_millis(400));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let server = Arc::clone(&server);
            scope.spawn(move || assert_eq!(raw(&server, "GET", "/snap/chunks/000000", "").status, 200));
        }
    });
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "not parallel: {elapsed:?}");
    assert!(server.peak_in_flight() >= 4, "peak {}", server.peak_in_flight());
    server.set_delay_per_request(Duration::ZERO);
    let started = Instant::now();
    assert_eq!(raw(&server, "HEAD", "/snap/manifest.json", "").status, 200);
    assert!(started.elapsed() < Duration::from_millis(300));
}
