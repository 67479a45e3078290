//! `GET /js/script.js` (the configured `script_path`) and its variants beside it: the tracker
//! built in `tracker-js/dist/`, embedded in the binary so that Glimpse runs without Node.
//!
//! Each variant is prepared once, when the server starts ([`Scripts`], kept in its state): the
//! tracker's default beacon path is rewritten to `event_path`, then the text is pre-compressed with gzip and brotli; requests pick the
//! encoding from `Accept-Encoding` and get a strong `ETag` (`If-None-Match` → `304`).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use super::ingest_error::IngestError;
use super::response::{self, Body};

/// The extensions a variant may carry, as they appear in its file name, sorted.
pub const EXTENSIONS: [&str; 3] = ["engagement", "file-downloads", "outbound-links"];

/// The built tracker: `(extensions joined by '.', file)`. `tracker-js` checks that these
/// files match a fresh build of its source.
const VARIANTS: [(&str, &[u8]); 8] = [
    ("", include_bytes!("../../../tracker-js/dist/script.js")),
    (
        "engagement",
        include_bytes!("../../../tracker-js/dist/script.engagement.js"),
    ),
    (
        "file-downloads",
        include_bytes!("../../../tracker-js/dist/script.file-downloads.js"),
    ),
    (
        "outbound-links",
        include_bytes!("../../../tracker-js/dist/script.outbound-links.js"),
    ),
    (
        "engagement.file-downloads",
        include_bytes!("../../../tracker-js/dist/script.engagement.file-downloads.js"),
    ),
    (
        "engagement.outbound-links",
        include_bytes!("../../../tracker-js/dist/script.engagement.outbound-links.js"),
    ),
    (
        "file-downloads.outbound-links",
        include_bytes!("../../../tracker-js/dist/script.file-downloads.outbound-links.js"),
    ),
    (
        "engagement.file-downloads.outbound-links",
        include_bytes!(
            "../../../tracker-js/dist/script.engagement.file-downloads.outbound-links.js"
        ),
    ),
];

/// The beacon path the tracker is built with; the collector puts `event_path` in its place.
const BUILT_EVENT_PATH: &str = "\"/api/event\"";

/// A day: browsers revalidate (cheaply, with `If-None-Match`) once a day.
const CACHE_CONTROL: &str = "public, max-age=86400";

pub use glimpse_core::tracker::{file_name, variant_count, variant_of};

/// One variant, ready to send in each encoding.
pub struct Prepared {
    pub identity: Bytes,
    pub gzip: Bytes,
    pub brotli: Bytes,
    /// Hex digest of `identity`, the base of the strong `ETag`s.
    pub digest: String,
}

/// Every variant for one event path, compressed once when the server starts and kept in its
/// state.
pub struct Scripts {
    pub variants: Vec<Prepared>,
}

impl Scripts {
    /// Rewrites and compresses every variant (brotli at its best: tens of milliseconds each).
    pub fn new(event_path: &str) -> Self {
        let literal = serde_json::Value::from(event_path).to_string();
        let variants = VARIANTS
            .iter()
            .map(|(_, built)| {
                let text = String::from_utf8_lossy(built).replacen(BUILT_EVENT_PATH, &literal, 1);
                prepare(Bytes::from(text))
            })
            .collect();
        Self { variants }
    }
}

fn prepare(identity: Bytes) -> Prepared {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gz.write_all(&identity);
    let gzip = gz.finish().unwrap_or_default();
    let mut brotli = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        ..Default::default()
    };
    let _ = brotli::BrotliCompress(&mut &identity[..], &mut brotli, &params);
    let digest = blake3::hash(&identity).to_hex()[..20].to_string();
    Prepared {
        identity,
        gzip: Bytes::from(gzip),
        brotli: Bytes::from(brotli),
        digest,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

/// The best encoding the client accepts: brotli, then gzip, else none. `q=0` refuses one.
fn negotiate(headers: &HeaderMap) -> Encoding {
    let (mut br, mut gz) = (false, false);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            match name.as_str() {
                "br" => br = !refused,
                "gzip" | "x-gzip" => gz = !refused,
                "*" => {
                    br |= !refused;
                    gz |= !refused;
                }
                _ => {}
            }
        }
    }
    if br {
        Encoding::Brotli
    } else if gz {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// Whether `If-None-Match` lists `etag` (weak comparison, as RFC 9110 asks for this header).
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

/// Answers a request for variant `index` of the tracker.
pub fn handle<B>(scripts: &Scripts, index: usize, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let refused = IngestError::PageMethodNotAllowed { allow: "GET, HEAD" };
        return response::with_cors(refused.into_response());
    }
    let prepared = &scripts.variants[index];
    let encoding = negotiate(request.headers());
    let (body, content_encoding, suffix) = match encoding {
        Encoding::Brotli => (&prepared.brotli, Some("br"), "-br"),
        Encoding::Gzip => (&prepared.gzip, Some("gzip"), "-gz"),
        Encoding::Identity => (&prepared.identity, None, ""),
    };
    let etag = format!("\"{}{suffix}\"", prepared.digest);
    let fresh = not_modified(request.headers(), &etag);
    let mut r = Response::new(Full::new(if fresh { Bytes::new() } else { body.clone() }));
    *r.status_mut() = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let headers = r.headers_mut();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, CACHE_CONTROL);
    set(header::VARY, "Accept-Encoding");
    set(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    // Sites that isolate themselves (COEP) may still load it.
    set(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "cross-origin",
    );
    if !fresh {
        set(
            header::CONTENT_TYPE,
            "application/javascript; charset=utf-8",
        );
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        if let Some(encoding) = content_encoding {
            set(header::CONTENT_ENCODING, encoding);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    #[test]
    fn embedded_files_are_in_the_order_of_the_variant_names() {
        let names: Vec<&str> = VARIANTS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, glimpse_core::tracker::VARIANT_NAMES);
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    async fn body(r: Response<Body>) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    #[test]
    fn variants_by_path() {
        let s = "/js/script.js";
        assert_eq!(variant_of("/js/script.js", s), Some(0));
        let all = variant_of("/js/script.engagement.file-downloads.outbound-links.js", s);
        assert_eq!(all, Some(7));
        let any_order = variant_of("/js/script.outbound-links.engagement.file-downloads.js", s);
        assert_eq!(any_order, all);
        assert_eq!(
            file_name(variant_of("/js/script.outbound-links.js", s).unwrap()),
            "script.outbound-links.js"
        );
        for bad in [
            "/js/script.nope.js",
            "/js/script..js",
            "/js/script.js.js",
            "/js/scripts.js",
            "/js/script.engagement",
        ] {
            assert_eq!(variant_of(bad, s), None, "{bad}");
        }
        assert_eq!(variant_of("/a/b/lib.js", "/a/b/lib.js"), Some(0));
        assert_eq!(variant_of("/a/b/lib.engagement.js", "/a/b/lib.js"), Some(1));
    }

    #[test]
    fn every_variant_is_embedded_with_one_event_path_to_rewrite() {
        for (i, (_, built)) in VARIANTS.iter().enumerate() {
            let text = std::str::from_utf8(built).unwrap();
            assert_eq!(
                text.matches(BUILT_EVENT_PATH).count(),
                1,
                "{}",
                file_name(i)
            );
        }
        let custom = Scripts::new("/p/e");
        for v in &custom.variants {
            let text = std::str::from_utf8(&v.identity).unwrap();
            assert!(text.contains("new URL(\"/p/e\","), "{text}");
            assert!(!text.contains(BUILT_EVENT_PATH));
        }
    }

    #[tokio::test]
    async fn encodings_etags_and_revalidation() {
        let scripts = Scripts::new("/api/event");
        let core = &scripts.variants[0];
        let plain = handle(&scripts, 0, &request("/js/script.js", &[]));
        assert_eq!(plain.status(), 200);
        let h = plain.headers();
        assert_eq!(h["content-type"], "application/javascript; charset=utf-8");
        assert_eq!(h["cache-control"], "public, max-age=86400");
        assert_eq!(h["vary"], "Accept-Encoding");
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(h.get("content-encoding").is_none());
        let etag = h["etag"].to_str().unwrap().to_string();
        assert_eq!(body(plain).await, core.identity);

        let gz = handle(
            &scripts,
            0,
            &request("/", &[("accept-encoding", "gzip, deflate")]),
        );
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        let gz_etag = gz.headers()["etag"].to_str().unwrap().to_string();
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&body(gz).await[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, core.identity);

        let br = handle(
            &scripts,
            0,
            &request("/", &[("accept-encoding", "gzip, br")]),
        );
        assert_eq!(br.headers()["content-encoding"], "br");
        let mut unbrotli = Vec::new();
        brotli::BrotliDecompress(&mut &body(br).await[..], &mut unbrotli).unwrap();
        assert_eq!(unbrotli, core.identity);

        let refused = handle(
            &scripts,
            0,
            &request("/", &[("accept-encoding", "br;q=0, gzip;q=0.5")]),
        );
        assert_eq!(refused.headers()["content-encoding"], "gzip");

        assert_ne!(etag, gz_etag);
        let again = handle(&scripts, 0, &request("/", &[("if-none-match", &etag)]));
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(body(again).await.is_empty());
        let weak = format!("\"x\", W/{gz_etag}");
        let again = handle(
            &scripts,
            0,
            &request(
                "/",
                &[("if-none-match", &weak), ("accept-encoding", "gzip")],
            ),
        );
        assert_eq!(again.status(), 304);
        let stale = handle(&scripts, 0, &request("/", &[("if-none-match", "\"old\"")]));
        assert_eq!(stale.status(), 200);

        let post = handle(
            &scripts,
            0,
            &Request::post("/js/script.js").body(()).unwrap(),
        );
        assert_eq!(post.status(), 405);
    }

    #[test]
    fn the_default_script_is_within_the_size_budget() {
        let scripts = Scripts::new("/api/event");
        for (i, v) in scripts.variants.iter().enumerate() {
            println!(
                "tracker {}: {} B, gzip {} B, brotli {} B",
                file_name(i),
                v.identity.len(),
                v.gzip.len(),
                v.brotli.len()
            );
        }
        let core = scripts.variants[0].gzip.len();
        assert!(
            core <= 1024,
            "script.js is {core} B gzipped, over the 1,024 B budget"
        );
    }
}
