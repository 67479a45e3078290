//! `glimpse serve` against a ClickHouse 18.16 that only speaks HTTPS, with a certificate signed
//! by a CA this test creates (openssl): beacons land when `clickhouse_ca_cert` names that CA;
//! without it, start-up fails naming the URL and the certificate problem. The running serve
//! also shows its metrics on `metrics_addr` and not on the collector's port.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{browser_client, free_addr, wait_for_200};
use glimpse_core::db::tls::CaCert;

fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed (`server.pem`, `server.key`).
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Glimpse Test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// ClickHouse with an HTTPS port and no plain HTTP port; `default` without a password, from
/// loopback only.
struct HttpsClickHouse {
    child: tokio::process::Child,
    port: u16,
}

impl HttpsClickHouse {
    async fn start(dir: &Path, ca: &CaCert) -> Self {
        let d = dir.display();
        let port = free_addr().port();
        let tcp_port = free_addr().port();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <https_port>{port}</https_port>
    <tcp_port>{tcp_port}</tcp_port>
    <openSSL>
        <server>
            <certificateFile>{d}/server.pem</certificateFile>
            <privateKeyFile>{d}/server.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><log_queries>0</log_queries></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#,
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("clickhouse.log")).unwrap();
        let child = tokio::process::Command::new("clickhouse-server")
            .arg(format!("--config-file={d}/config.xml"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting clickhouse-server");
        let server = Self { child, port };
        let client = server.client(ca);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match client.query("SELECT 1").fetch_one::<u8>().await {
                Ok(1) => return server,
                result if tokio::time::Instant::now() > deadline => panic!(
                    "ClickHouse did not answer over HTTPS: {result:?}\n{}",
                    std::fs::read_to_string(dir.join("clickhouse.log")).unwrap_or_default()
                ),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn client(&self, ca: &CaCert) -> clickhouse::Client {
        glimpse_core::db::tls::client(Some(ca))
            .with_url(self.url())
            .with_validation(false)
    }
}

/// `glimpse serve` on free ports; the collector's and the metrics listener's base URLs.
fn serve(data: &Path, url: &str, ca: Option<&Path>) -> (tokio::process::Command, String, String) {
    let (collector, metrics) = (free_addr(), free_addr());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_glimpse"));
    command
        .arg("serve")
        .env_remove("GLIMPSE_CLICKHOUSE_CA_CERT")
        .env("GLIMPSE_CLICKHOUSE_URL", url)
        .env("GLIMPSE_DATA_DIR", data)
        .env("GLIMPSE_COLLECTOR_ADDR", collector.to_string())
        .env("GLIMPSE_METRICS_ADDR", metrics.to_string())
        .env("GLIMPSE_QUERY_ADDR", free_addr().to_string())
        .env("GLIMPSE_SITES", "example.com")
        .env("GLIMPSE_BATCH_MAX_DELAY_MS", "200")
        .env("GLIMPSE_SHUTDOWN_TIMEOUT_SECS", "10")
        .env("GLIMPSE_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(ca) = ca {
        command.env("GLIMPSE_CLICKHOUSE_CA_CERT", ca);
    }
    (
        command,
        format!("http://{collector}"),
        format!("http://{metrics}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_to_an_https_clickhouse_with_a_private_ca_and_refuses_it_without() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let ca_path = dir.path().join("ca.pem");
    let ca = CaCert::load(&ca_path).unwrap();
    let clickhouse_dir = dir.path().join("clickhouse");
    std::fs::create_dir(&clickhouse_dir).unwrap();
    for file in ["server.pem", "server.key"] {
        std::fs::copy(dir.path().join(file), clickhouse_dir.join(file)).unwrap();
    }
    let mut clickhouse = HttpsClickHouse::start(&clickhouse_dir, &ca).await;
    let url = clickhouse.url();

    // Without the CA: the system's roots do not know it; serve stops at start-up and says why.
    let (mut command, _, _) = serve(&dir.path().join("no-ca"), &url, None);
    let refused_log = dir.path().join("refused.log");
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&refused_log).unwrap())
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let stderr = std::fs::read_to_string(&refused_log).unwrap_or_default();
    let status = status
        .unwrap_or_else(|_| panic!("serve without the CA runs on:\n{stderr}"))
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("ClickHouse at {url}")), "{stderr}");
    assert!(
        stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );
    assert!(stderr.contains("GLIMPSE_CLICKHOUSE_CA_CERT"), "{stderr}");
    assert_eq!(
        stderr.matches("TLS failed").count(),
        1,
        "said once: {stderr}"
    );
    println!("serve without the CA: {}", stderr.trim());

    // With the CA: ready, and a beacon lands in ClickHouse over HTTPS.
    let (mut command, base, metrics) = serve(&dir.path().join("with-ca"), &url, Some(&ca_path));
    let log = dir.path().join("serve.log");
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = browser_client();
    wait_for_200(&client, &format!("{base}/ready"), Duration::from_secs(60)).await;
    let response = client
        .post(format!("{base}/api/event"))
        .header("content-type", "text/plain")
        .body(r#"{"n":"pageview","u":"https://example.com/tls","d":"example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let ch = clickhouse.client(&ca);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = ch
            .query("SELECT count() FROM glimpse.events WHERE pathname = '/tls'")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0);
        if rows == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the beacon did not land ({rows} rows)\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The process's metrics are on metrics_addr, not on the public collector port.
    let public = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let text = client
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("glimpse_rows_written_total 1"), "{text}");
    assert!(
        text.contains(&format!(
            "glimpse_build_info{{version=\"{}\",git_sha=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains("# HELP glimpse_rows_written_total "),
        "{text}"
    );

    child.kill().await.unwrap();
    clickhouse.child.kill().await.unwrap();
}
