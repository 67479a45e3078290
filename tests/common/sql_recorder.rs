//! A recording HTTP proxy in front of a real ClickHouse: every request is forwarded as it
//! came and its SQL kept, so a test can run Glimpse's code against ClickHouse 18.16 and then
//! replay exactly the statements it sent on current ClickHouse (chdb).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The statements seen so far, in the order sent.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<String>>>);

impl Recorded {
    pub fn statements(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Starts the proxy for `upstream` (`http://host:port`); returns its URL and the record.
pub async fn start(upstream: &str) -> (String, Recorded) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let recorded = Recorded::default();
    let upstream = upstream.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let record = recorded.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (upstream, http, record) = (upstream.clone(), http.clone(), record.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (upstream, http, record) = (upstream.clone(), http.clone(), record.clone());
                    async move { Ok::<_, Infallible>(forward(request, &upstream, &http, &record).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, recorded)
}

async fn forward(
    request: Request<Incoming>,
    upstream: &str,
    http: &reqwest::Client,
    record: &Recorded,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = format!("{upstream}{}", parts.uri);
    let query_param = reqwest::Url::parse(&target).ok().and_then(|u| {
        u.query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
    });
    // A statement is in `query=` (inserts: the rows follow in the body) or in the body.
    let statement = match query_param {
        Some(query) => query,
        None => String::from_utf8_lossy(&body).into_owned(),
    };
    record.0.lock().unwrap().push(statement);
    let mut outgoing = http.request(parts.method.clone(), &target).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    match outgoing.send().await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    response = response.header(name.as_str(), value.as_bytes());
                }
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            response.body(Full::new(bytes)).unwrap()
        }
        Err(e) => Response::builder()
            .status(502)
            .body(Full::new(Bytes::from(e.to_string())))
            .unwrap(),
    }
}
