//! The deployment files: the systemd unit is accepted by `systemd-analyze verify` and keeps
//! its hardening; the reverse-proxy examples in docker/README.md send every path the
//! collector serves to the collector.

use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The value of `key=` in the unit, if set (the last assignment wins, as in systemd).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = repo_file("packaging/glimpse.service");
    for (key, value) in [
        ("ExecStart", "/usr/local/bin/glimpse serve"),
        ("EnvironmentFile", "-/etc/glimpse/glimpse.env"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "glimpse"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(&unit, key), Some(value), "{key}");
    }
    // Nothing writable beside the state directory.
    assert_eq!(unit_value(&unit, "ReadWritePaths"), None);
    // systemd must not kill serve before its own graceful shutdown is over.
    let stop: u64 = unit_value(&unit, "TimeoutStopSec")
        .unwrap()
        .parse()
        .unwrap();
    let shutdown = glimpse_core::Config::default().shutdown_timeout_secs;
    assert!(stop > shutdown, "TimeoutStopSec={stop} <= {shutdown}");

    // verify checks that ExecStart's binary exists: this build's, in a copy of the unit.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("glimpse.service");
    let binary = env!("CARGO_BIN_EXE_glimpse");
    std::fs::write(&copy, unit.replace("/usr/local/bin/glimpse", binary)).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown or misspelt keys are only warned about, with exit status 0.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        output.status
    );
}

/// The fenced code blocks of a Markdown text whose body contains `marker`.
fn code_blocks_with<'a>(markdown: &'a str, marker: &str) -> Vec<&'a str> {
    markdown
        .split("```")
        .skip(1)
        .step_by(2)
        .filter(|block| block.contains(marker))
        .collect()
}

/// Paths the query service answers, which must not be sent to the collector.
const QUERY_PATHS: [&str; 4] = [
    "/",
    "/api/v1/stats/aggregate",
    "/assets/app.js",
    "/api/v1/sites",
];

fn collector_paths() -> Vec<String> {
    glimpse_collector::http::public_paths(&glimpse_core::Config::default())
}

/// Caddy's `path` matcher: exact, `prefix*` or `*suffix`.
fn caddy_path_matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        path.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        path.ends_with(suffix)
    } else {
        pattern == path
    }
}

#[test]
fn the_caddy_example_sends_every_collector_path_to_the_collector() {
    let readme = repo_file("docker/README.md");
    let blocks = code_blocks_with(&readme, "reverse_proxy @collector");
    assert_eq!(blocks.len(), 1, "one Caddy example");
    let matcher: Vec<&str> = blocks[0]
        .lines()
        .find_map(|line| line.trim().strip_prefix("@collector path "))
        .expect("@collector path ...")
        .split_whitespace()
        .collect();
    let routed = |path: &str| matcher.iter().any(|p| caddy_path_matches(p, path));
    let missing: Vec<String> = collector_paths()
        .into_iter()
        .filter(|path| !routed(path))
        .collect();
    assert!(missing.is_empty(), "not sent to the collector: {missing:?}");
    for path in QUERY_PATHS {
        assert!(!routed(path), "{path} sent to the collector");
    }
}

/// An HTTP server answering every request with `name`, for nginx to proxy to.
async fn upstream(name: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// The nginx example, run by nginx itself in front of two stand-ins for the services.
#[tokio::test]
async fn the_nginx_example_sends_every_collector_path_to_the_collector() {
    let readme = repo_file("docker/README.md");
    let blocks = code_blocks_with(&readme, "proxy_pass");
    assert_eq!(blocks.len(), 1, "one nginx example");
    let example = blocks[0].trim_start_matches("nginx");
    assert!(
        example.contains("127.0.0.1:8000") && example.contains("127.0.0.1:8001"),
        "{example}"
    );

    let (collector, query) = (upstream("collector").await, upstream("query").await);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The example without TLS (no certificate here), on a free port, to the stand-ins.
    let server: String = example
        .lines()
        .filter(|line| !line.trim_start().starts_with("ssl_"))
        .map(|line| {
            if line.trim_start().starts_with("listen ") {
                format!("listen 127.0.0.1:{port};")
            } else {
                line.replace("127.0.0.1:8000", &collector.to_string())
                    .replace("127.0.0.1:8001", &query.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {d};\n\
             proxy_temp_path {d};\nfastcgi_temp_path {d};\nuwsgi_temp_path {d};\n\
             scgi_temp_path {d};\n{server}\n}}\n"
        ),
    )
    .unwrap();
    let mut nginx = tokio::process::Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx (Debian package nginx)");

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while client.get(&base).send().await.is_err() {
        if let Ok(Some(status)) = nginx.try_wait() {
            let out = nginx.wait_with_output().await.unwrap();
            panic!(
                "nginx exited ({status}): {}\n{server}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(std::time::Instant::now() < deadline, "nginx did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut wrong = Vec::new();
    let expected = collector_paths()
        .into_iter()
        .map(|p| (p, "collector"))
        .chain(QUERY_PATHS.iter().map(|p| (p.to_string(), "query")));
    for (path, service) in expected {
        let answer = client
            .get(format!("{base}{path}?x=1"))
            .send()
            .await
            .unwrap();
        let body = answer.text().await.unwrap();
        if body != service {
            wrong.push(format!("{path}: {body}"));
        }
    }
    nginx.kill().await.unwrap();
    assert!(wrong.is_empty(), "routed to the wrong service: {wrong:?}");
}
