//! The Umami, Matomo and pixel endpoints over a real socket with an in-memory sink: answers as
//! the original servers give them, CORS, and that nothing the payload claims about the client
//! (address, user agent, visitor id) is believed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use glimpse_collector::http::Readiness;
use glimpse_collector::sink::{DropCounts, MemorySink};
use glimpse_collector::{serve_with_sink, ServeReport};
use glimpse_core::config::Config;
use glimpse_core::schema::EventRow;
use glimpse_core::site::Site;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const WEBSITE: &str = "3f1c1a4e-7d2b-4c55-9a0e-2b7f5c8d9e01";

struct Server {
    base: String,
    sink: MemorySink,
    _data: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<ServeReport, glimpse_collector::ServeError>>,
    client: reqwest::Client,
}

impl Server {
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let config = Config {
            sites: vec![Site::new("example.com"), Site::new("other.org")],
            data_dir: data.path().to_path_buf(),
            collector: glimpse_core::config::CollectorConfig {
                umami_websites: [(WEBSITE.to_string(), "example.com".to_string())].into(),
                matomo_sites: [("1".to_string(), "example.com".to_string())].into(),
                batch_max_delay_ms: 20,
                spool: false,
                ..Default::default()
            },
            ..Config::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sink = MemorySink::default();
        let readiness = Arc::new(Readiness::new(None));
        readiness.migrated.store(true, Ordering::SeqCst);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_sink(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            sink.clone(),
            readiness,
            Arc::new(DropCounts::default()),
        ));
        Self {
            base,
            sink,
            _data: data,
            stop,
            task,
            client: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("user-agent", FIREFOX)
    }

    async fn rows(self) -> Vec<EventRow> {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        let rows = self.sink.rows.lock().unwrap().clone();
        rows
    }
}

#[tokio::test]
async fn umami_send_answers_json_and_passes_the_preflight() {
    let server = Server::start().await;
    let preflight = server
        .request(reqwest::Method::OPTIONS, "/api/send")
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-umami-cache",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("content-type") && allowed.contains("x-umami-cache"));
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    let send = |body: String| {
        server
            .request(reqwest::Method::POST, "/api/send")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let pageview = format!(
        r#"{{"type":"event","payload":{{"website":"{WEBSITE}","hostname":"example.com","url":"https://example.com/a",
        "referrer":"","screen":"1920x1080","language":"en","title":"A","ip":"198.51.100.7","userAgent":"Googlebot/2.1"}}}}"#
    );
    let r = send(pageview).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        answer,
        serde_json::json!({}),
        "no session token, not disabled"
    );
    let identify = format!(
        r#"{{"type":"identify","payload":{{"website":"{WEBSITE}","url":"https://example.com/a","id":"u1"}}}}"#
    );
    assert_eq!(send(identify).await.unwrap().status(), 200);
    let unknown = r#"{"type":"event","payload":{"website":"00000000-0000-0000-0000-000000000000","url":"https://e.com/"}}"#;
    assert_eq!(send(unknown.into()).await.unwrap().status(), 403);
    let invalid = send(format!(r#"{{"payload":{{"website":"{WEBSITE}"}}}}"#))
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let rows = server.rows().await;
    assert_eq!(rows.len(), 1, "identify is not stored");
    // The payload's userAgent (a bot's) was not believed: the header's browser counts.
    assert_eq!(rows[0].browser, "Firefox");
    assert_eq!(
        (rows[0].pathname.as_str(), rows[0].screen_width),
        ("/a", 1920)
    );
}

#[tokio::test]
async fn matomo_answers_204_gif_or_bulk_json_and_ignores_client_claims() {
    let server = Server::start().await;
    let page = "idsite=1&rec=1&url=https%3A%2F%2Fexample.com%2Fm";
    let get = |query: String| {
        server
            .request(reqwest::Method::GET, &format!("/matomo.php?{query}"))
            .send()
    };
    // sendBeacon: POST with the parameters in the URL, send_image=0 → 204.
    let beacon = server
        .request(
            reqwest::Method::POST,
            &format!("/matomo.php?{page}&send_image=0&_id=0123456789abcdef&uid=alice&cip=198.51.100.7&ua=Googlebot"),
        )
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .header("origin", "https://example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 204);
    assert_eq!(
        beacon.headers()["access-control-allow-origin"],
        "https://example.com"
    );
    assert_eq!(beacon.headers()["access-control-allow-credentials"], "true");
    // An image request (send_image absent) → the 1×1 GIF.
    let image = get(format!("{page}&e_c=Video&e_a=Play")).await.unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/gif");
    assert_eq!(image.bytes().await.unwrap().len(), 43);
    // Heartbeats and rec≠1 are answered and ignored; piwik.php is the same endpoint.
    assert_eq!(
        get(format!("{page}&ping=1&send_image=0"))
            .await
            .unwrap()
            .status(),
        204
    );
    let piwik = server
        .request(
            reqwest::Method::GET,
            "/piwik.php?idsite=1&url=x&send_image=0",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(piwik.status(), 204);
    // A form body (setRequestMethod('POST')).
    let form = server
        .request(reqwest::Method::POST, "/matomo.php")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "{page}&link=https%3A%2F%2Fother.org%2F&send_image=0"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 204);
    // Bulk: Matomo's JSON summary.
    let bulk = server
        .request(reqwest::Method::POST, "/matomo.php")
        .body(format!(
            r#"{{"requests":["?{page}&download=https%3A%2F%2Fexample.com%2Fa.pdf","?idsite=9&rec=1&url=https%3A%2F%2Fexample.com%2F"],"send_image":0}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 200);
    let summary: serde_json::Value = bulk.json().await.unwrap();
    assert_eq!(
        summary,
        serde_json::json!({"status": "success", "tracked": 1, "invalid": 1})
    );
    assert_eq!(
        get("idsite=9&rec=1&url=https%3A%2F%2Fexample.com%2F".into())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(get("idsite=1&rec=1".into()).await.unwrap().status(), 400);
    let put = server
        .request(reqwest::Method::PUT, "/matomo.php")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);

    let rows = server.rows().await;
    let mut names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "File Download",
            "Outbound Link: Click",
            "Video: Play",
            "pageview"
        ]
    );
    // One visitor (same address and browser): Matomo's _id/uid and cip/ua changed nothing.
    assert!(rows.iter().all(|r| r.visitor_id == rows[0].visitor_id));
    assert!(rows.iter().all(|r| r.browser == "Firefox"));
}

#[tokio::test]
async fn pixel_is_always_a_gif_and_falls_back_to_the_referer() {
    let server = Server::start().await;
    let pixel = |query: &str, referer: Option<&str>| {
        let mut r = server.request(reqwest::Method::GET, &format!("/pixel.gif?{query}"));
        if let Some(referer) = referer {
            r = r.header("referer", referer);
        }
        r.send()
    };
    let ok = pixel(
        "d=example.com",
        Some("https://example.com/static/page.html"),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "image/gif");
    assert!(ok.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let explicit = pixel("d=example.com&u=https%3A%2F%2Fexample.com%2Fmail", None)
        .await
        .unwrap();
    assert_eq!(explicit.status(), 200);
    let unknown = pixel("d=nope.net&u=https%3A%2F%2Fnope.net%2F", None)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 403);
    assert_eq!(unknown.headers()["content-type"], "image/gif");
    assert_eq!(pixel("d=example.com", None).await.unwrap().status(), 400);
    let post = server
        .request(reqwest::Method::POST, "/pixel.gif?d=example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    let head = server
        .request(
            reqwest::Method::HEAD,
            "/pixel.gif?d=example.com&u=https%3A%2F%2Fexample.com%2Fhead",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200, "HEAD is answered, not recorded");
    let rows = server.rows().await;
    let mut paths: Vec<_> = rows.iter().map(|r| r.pathname.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/mail", "/static/page.html"]);
}
