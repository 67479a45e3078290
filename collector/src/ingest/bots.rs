//! Is this request from a bot? Decided from the user agent alone, before any row is made.
//!
//! Tracker beacons come from JavaScript running in a page, so most bots never send one; those
//! that do are headless browsers, uptime and SEO tools, link previewers, and scripts replaying
//! requests. We drop them with a reason that is counted, never stored.
//!
//! Checks, cheapest and most specific first: an empty user agent; headless browsers; HTTP
//! libraries and automation tools; self-declared crawlers (woothee's crawler list, the `isbot`
//! crate's maintained list, and general tokens such as `bot`, `crawl` or a URL, which no real
//! browser sends); finally user agents no browser would send (too short, too long, or neither
//! a `Mozilla/`-style token nor a browser woothee knows).

use isbot::Bots;

use super::useragent::{Device, UserAgentInfo};

/// Why a user agent counts as a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotReason {
    /// No user agent, or only whitespace.
    EmptyUserAgent,
    /// A crawler, monitor, previewer or other service that names itself.
    KnownBot,
    /// A headless or embedded browser driven by a program (HeadlessChrome, Lighthouse, …).
    Headless,
    /// An HTTP library or command-line tool (curl, python-requests, Go-http-client, …).
    Automation,
    /// Not what any browser sends: too short, too long, or no browser at all.
    Implausible,
}

impl BotReason {
    /// A stable, low-cardinality label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            BotReason::EmptyUserAgent => "empty_user_agent",
            BotReason::KnownBot => "known_bot",
            BotReason::Headless => "headless",
            BotReason::Automation => "automation",
            BotReason::Implausible => "implausible",
        }
    }
}

// Pattern lists: one regular expression a line, matched against the lower-cased user agent.
// `isbot::Bots` lower-cases the patterns too, so upper-case escapes (`\S`, `\D`, `\W`, `\B`)
// must not be used: they would turn into their opposites.

/// Browsers driven by programs. `Electron/` alone is not here: desktop apps that people use
/// (Obsidian, Slack, …) send it too.
const HEADLESS: &str = r"
headless
phantomjs
slimerjs
lighthouse
puppeteer
playwright
selenium
webdriver
nightmare
splash
cypress/
htmlunit
jsdom/
zombie\.js
";

/// HTTP client libraries, command-line tools, and apps' native HTTP stacks (`CFNetwork`,
/// Microsoft Office fetching a link): none of them runs the tracker.
const AUTOMATION: &str = r"
^curl
libcurl
pycurl
wget/
python-requests
python-urllib
python-httpx
httpx/
^python
aiohttp
go-http-client
^go [0-9.]+ package http
^java/
^java[0-9. ]
java/[0-9]
jakarta commons
okhttp
axios/
node-fetch
^node/
^node\.js
undici
^got[ /]
libwww-perl
^lwp::
^perl
^mechanize
apache-httpclient
httpclient
^httpie
scrapy
httrack
^ruby
faraday
^typhoeus
^rest-client
^php
guzzlehttp
^dart[ /:]
^reqwest
^rust
^hyper/
^postmanruntime
^insomnia
powershell
^winhttp
^microsoft url control
^microsoft office
^ms office
^cfnetwork
^deno/
^bun/
^dotnet
^\.net
^restsharp
^embarcadero
^indy library
^synapse
";

/// Tokens that self-declared crawlers, monitors and previewers use, and that no browser sends.
/// `bot` is matched where it ends a word (`Googlebot`, `bingbot/`, `GPTBot;`), so phone names
/// like "Cubot X30" stay people.
const GENERAL: &str = r"
(^|[^u]|[^c]u)bot([^a-z0-9]|$)
crawl
spider
slurp
fetch
monitor
preview
scan
scrap
archiv
check
validator
audit
inspect
verif
synthetic
agent
sitemap
capture
screenshot
feed
parser
research
(^|[^a-z])test
https?:
\+http
www\.
[a-z0-9._-]+@[a-z0-9-]+\.[a-z]
\(at\)
[a-z0-9-]\.(com|net|org|io)([^a-z0-9.]|$)
";

/// Shapes no browser sends: Chrome, Safari and Edge write exactly `(KHTML, like Gecko)`, and
/// `Mozilla/` comes first, never after another product (`PS_Daily/1.0 Mozilla/5.0 …`).
const IMPLAUSIBLE: &str = r"
\(khtml, like gecko[^)]
^[a-z0-9_.-]+/[0-9.]+ mozilla/
";

/// A bare name after the browser token at the end: `… Safari/537.36 GTmetrix`. Desktop
/// browsers that append their name give it a version (`Edg/131`, `OPR/115`); monitoring tools
/// often do not. Only checked on desktop user agents: phone apps' web views do append bare
/// names (`… Mobile Safari/537.36 TwitterAndroid`), and so did desktop toolbars of the 2000s
/// (`Firefox/3.0.14 GTB6`), which no longer matter.
const TRAILING_NAME: &str = r"
(safari|firefox|chrome)/[0-9.]+ [a-z][a-z0-9_-]*$
";

/// Shortest and longest user agents a browser plausibly sends, in bytes.
const MIN_LEN: usize = 20;
const MAX_LEN: usize = 1000;

/// Classifies user agents as bots. Build once: it compiles its pattern lists.
pub struct BotDetector {
    /// Verdicts by user agent: the same few hundred make most traffic, and the patterns cost
    /// microseconds. Bounded; never persisted.
    verdicts: Option<quick_cache::sync::Cache<String, Option<BotReason>>>,
    headless: Bots,
    automation: Bots,
    known: Bots,
    general: Bots,
    implausible: Bots,
    trailing_name: Bots,
}

impl Default for BotDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl BotDetector {
    /// Compiles the pattern lists (a few milliseconds).
    pub fn new() -> Self {
        BotDetector {
            verdicts: None,
            headless: Bots::new(HEADLESS),
            automation: Bots::new(AUTOMATION),
            known: Bots::default(),
            general: Bots::new(GENERAL),
            implausible: Bots::new(IMPLAUSIBLE),
            trailing_name: Bots::new(TRAILING_NAME),
        }
    }

    /// Like [`new`](Self::new), remembering the verdicts for up to `capacity` user agents.
    pub fn with_cache(capacity: usize) -> Self {
        Self {
            verdicts: Some(quick_cache::sync::Cache::new(capacity.max(1))),
            ..Self::new()
        }
    }

    /// Why `user_agent` is a bot, or `None` for a person's browser. `parsed` is the
    /// [`UserAgentParser`](super::useragent::UserAgentParser)'s result for the same string.
    pub fn classify(&self, user_agent: &str, parsed: &UserAgentInfo) -> Option<BotReason> {
        let Some(verdicts) = self.verdicts.as_ref().filter(|_| user_agent.len() <= 1024) else {
            return self.decide(user_agent, parsed);
        };
        if let Some(verdict) = verdicts.get(user_agent) {
            return verdict;
        }
        let verdict = self.decide(user_agent, parsed);
        verdicts.insert(user_agent.to_string(), verdict);
        verdict
    }

    fn decide(&self, user_agent: &str, parsed: &UserAgentInfo) -> Option<BotReason> {
        let ua = user_agent.trim();
        if ua.is_empty() {
            return Some(BotReason::EmptyUserAgent);
        }
        if ua.len() > MAX_LEN {
            return Some(BotReason::Implausible);
        }
        if self.headless.is_bot(ua) {
            return Some(BotReason::Headless);
        }
        if self.automation.is_bot(ua) || parsed.browser == "HTTP Library" {
            return Some(BotReason::Automation);
        }
        if parsed.is_crawler || self.known.is_bot(ua) || self.general.is_bot(ua) {
            return Some(BotReason::KnownBot);
        }
        if ua.len() < MIN_LEN
            || (!has_browser_product(ua) && parsed.browser.is_empty())
            || compatible_but_not_ie(ua)
            || self.implausible.is_bot(ua)
            || (parsed.device == Device::Desktop && self.trailing_name.is_bot(ua))
        {
            return Some(BotReason::Implausible);
        }
        None
    }
}

/// Whether the user agent starts like a browser's: `Mozilla/5.0 (…`, or old Opera's `Opera/9.80`.
fn has_browser_product(ua: &str) -> bool {
    ua.starts_with("Mozilla/") || ua.starts_with("Opera/")
}

/// `(compatible; …)` is Internet Explorer's form (`compatible; MSIE 10.0; Windows NT 6.2`);
/// today only crawlers copy it (`compatible; SomeTool/1.0`). Konqueror used it too, long ago.
fn compatible_but_not_ie(ua: &str) -> bool {
    let ua = ua.to_ascii_lowercase();
    ua.contains("compatible") && !ua.contains("msie") && !ua.contains("trident/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::useragent::UserAgentParser;

    fn classify(detector: &BotDetector, parser: &UserAgentParser, ua: &str) -> Option<BotReason> {
        detector.classify(ua, &parser.parse(ua))
    }

    #[test]
    fn cached_verdicts_equal_fresh_ones() {
        let fresh = BotDetector::new();
        let cached = BotDetector::with_cache(2);
        let parser = UserAgentParser::new(100);
        let uas = [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "curl/8.5.0",
            "",
        ];
        for _ in 0..3 {
            for ua in uas {
                assert_eq!(
                    classify(&cached, &parser, ua),
                    classify(&fresh, &parser, ua),
                    "{ua}"
                );
            }
        }
    }

    #[test]
    fn reasons() {
        let detector = BotDetector::new();
        let parser = UserAgentParser::new(100);
        for (ua, want) in [
            ("", Some(BotReason::EmptyUserAgent)),
            ("   \t", Some(BotReason::EmptyUserAgent)),
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Some(BotReason::KnownBot)),
            ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", Some(BotReason::KnownBot)),
            ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", Some(BotReason::KnownBot)),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", Some(BotReason::Headless)),
            ("Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse", Some(BotReason::Headless)),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Playwright/1.40.0", Some(BotReason::Headless)),
            ("curl/8.5.0", Some(BotReason::Automation)),
            ("Wget/1.21.4", Some(BotReason::Automation)),
            ("python-requests/2.31.0", Some(BotReason::Automation)),
            ("Python/3.12 aiohttp/3.9.1", Some(BotReason::Automation)),
            ("Go-http-client/2.0", Some(BotReason::Automation)),
            ("Java/17.0.9", Some(BotReason::Automation)),
            ("okhttp/4.12.0", Some(BotReason::Automation)),
            ("axios/1.6.2", Some(BotReason::Automation)),
            ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", Some(BotReason::Automation)),
            ("libwww-perl/6.72", Some(BotReason::Automation)),
            ("Apache-HttpClient/4.5.14 (Java/17.0.9)", Some(BotReason::Automation)),
            ("Scrapy/2.11.0 (+https://scrapy.org)", Some(BotReason::Automation)),
            ("Mozilla/4.5 (compatible; HTTrack 3.0x; Windows 98)", Some(BotReason::Automation)),
            ("Mozilla/5.0", Some(BotReason::Implausible)),
            ("Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240805.005)", Some(BotReason::Implausible)),
            ("SomeTool (Linux; x86_64) v1.2.3", Some(BotReason::Implausible)),
        ] {
            assert_eq!(classify(&detector, &parser, ua), want, "{ua}");
        }
        let long = format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) {}",
            "A".repeat(MAX_LEN)
        );
        assert_eq!(
            classify(&detector, &parser, &long),
            Some(BotReason::Implausible)
        );
    }

    #[test]
    fn real_browsers_are_people() {
        let detector = BotDetector::new();
        let parser = UserAgentParser::new(100);
        let mut wrong = Vec::new();
        for &(ua, .., device) in crate::ingest::useragent::tests::TABLE {
            let got = classify(&detector, &parser, ua);
            if got.is_some() != (device == Device::Bot) {
                wrong.push(format!("{got:?}: {ua}"));
            }
        }
        for ua in [
            // Phones whose names contain bot-like words.
            "Mozilla/5.0 (Linux; Android 12; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 13; Infinix X6833B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 coc_coc_browser/131.0.0",
            "Mozilla/5.0 (Linux; Android 12; HarmonyOS; ELS-AN00; HMSCore 6.13.0.302) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 HuaweiBrowser/15.0.4.312 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 14; 2201117TY) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 XiaoMi/MiuiBrowser/14.16.0-gn",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 85.0.4183.93/6.0 TV Safari/537.36",
            "Opera/9.80 (Android; Opera Mini/36.2.2254/191.303; U; en) Presto/2.12.423 Version/12.16",
        ] {
            if let Some(reason) = classify(&detector, &parser, ua) {
                wrong.push(format!("{reason:?}: {ua}"));
            }
        }
        assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
    }

    #[test]
    fn labels_are_snake_case() {
        use BotReason::*;
        let labels =
            [EmptyUserAgent, KnownBot, Headless, Automation, Implausible].map(BotReason::label);
        assert_eq!(
            labels,
            [
                "empty_user_agent",
                "known_bot",
                "headless",
                "automation",
                "implausible"
            ]
        );
    }

    /// Recall on the `crawler-user-agents` corpus and false positives on `top-user-agents`
    /// (the most common real browsers), both npm packages installed by `scripts/test.sh`.
    #[test]
    fn recall_and_false_positives_on_public_corpora() {
        let Some(dir) = std::env::var_os("GLIMPSE_TEST_UA_DATA") else {
            panic!(
                "GLIMPSE_TEST_UA_DATA is not set: run scripts/test.sh, which installs the npm \
                 packages crawler-user-agents and top-user-agents and points this variable at them"
            );
        };
        let modules = std::path::Path::new(&dir).join("node_modules");
        let read = |path: std::path::PathBuf| -> serde_json::Value {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test.sh)", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };

        let crawlers = read(modules.join("crawler-user-agents/crawler-user-agents.json"));
        let bots: Vec<String> = crawlers
            .as_array()
            .expect("crawler-user-agents.json is an array")
            .iter()
            .flat_map(|entry| entry["instances"].as_array().cloned().unwrap_or_default())
            .filter_map(|ua| ua.as_str().map(str::to_string))
            .collect();

        let top = modules.join("top-user-agents");
        let mut browsers: Vec<String> = ["index.json", "desktop.json", "mobile.json"]
            .iter()
            .map(|f| top.join("src").join(f))
            .filter(|p| p.exists())
            .flat_map(|p| read(p).as_array().cloned().unwrap_or_default())
            .filter_map(|ua| ua.as_str().map(str::to_string))
            .collect();
        browsers.sort();
        browsers.dedup();
        assert!(bots.len() > 1000, "only {} crawler user agents", bots.len());
        assert!(
            browsers.len() >= 50,
            "only {} browser user agents",
            browsers.len()
        );

        let detector = BotDetector::new();
        let parser = UserAgentParser::new(4096);
        let missed: Vec<&String> = bots
            .iter()
            .filter(|ua| classify(&detector, &parser, ua).is_none())
            .collect();
        let flagged: Vec<(BotReason, &String)> = browsers
            .iter()
            .filter_map(|ua| classify(&detector, &parser, ua).map(|r| (r, ua)))
            .collect();

        let caught = bots.len() - missed.len();
        let recall = 100.0 * caught as f64 / bots.len() as f64;
        let fp_rate = 100.0 * flagged.len() as f64 / browsers.len() as f64;
        println!("bot recall: {caught} / {} = {recall:.2} %", bots.len());
        println!(
            "false positives: {} / {} = {fp_rate:.2} %",
            flagged.len(),
            browsers.len()
        );
        for ua in missed.iter().take(20) {
            println!("  missed bot: {ua}");
        }
        for (reason, ua) in &flagged {
            println!("  flagged browser ({}): {ua}", reason.label());
        }
        assert!(recall >= 99.0, "bot recall {recall:.2} % is under 99 %");
        assert!(
            fp_rate <= 0.1,
            "false positives {fp_rate:.2} % are over 0.1 %"
        );
    }
}
