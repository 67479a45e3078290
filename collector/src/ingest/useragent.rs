//! User agent → browser, OS and device, as a dashboard shows them.
//!
//! [woothee](https://github.com/woothee/woothee) does the parsing; this module renames its
//! output to the names people expect ("macOS", not "Mac OSX"; OS "Windows" with version "10",
//! not "Windows 10"), fills in what woothee does not know (macOS 11 and later, in-app browsers,
//! tablets) and caches the result, because a few hundred user agents make most of the traffic.
//! Nothing here keeps the user agent itself beyond the cache key.

use std::convert::Infallible;
use std::sync::Arc;

use quick_cache::sync::Cache;

/// What a user agent says about the browser, OS and device. Unknown parts are empty strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgentInfo {
    /// Browser or app name as dashboards show it: "Chrome", "Safari", "Samsung Internet",
    /// "Instagram", … For crawlers woothee's name ("Googlebot").
    pub browser: String,
    /// Major version only, e.g. "120".
    pub browser_version: String,
    /// OS family: "Windows", "macOS", "iOS", "Android", "Linux", "ChromeOS", …
    pub os: String,
    /// Short OS version without build numbers, e.g. "10", "14.2", "17" (a ".0" minor is
    /// dropped). Empty where the user agent hides it (Linux, ChromeOS).
    pub os_version: String,
    /// Device class from the user agent alone; see [`refine_device`] for the screen width.
    pub device: Device,
    /// woothee's "crawler" category: a self-declared search engine or service bot.
    pub is_crawler: bool,
}

/// Device class stored in the `device` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
    Bot,
    /// Consoles, TVs, and user agents that say nothing about the device.
    Other,
}

impl Device {
    /// The stored value: `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
            Device::Bot => "bot",
            Device::Other => "other",
        }
    }
}

/// The screen width decides for people's devices when the tracker sent one, as Plausible does:
/// under 576 px mobile, under 992 px tablet, otherwise desktop. Bots stay bots; a missing or
/// zero width leaves the user agent's answer.
pub fn refine_device(device: Device, screen_width: Option<u16>) -> Device {
    match (device, screen_width) {
        (Device::Bot, _) | (_, None | Some(0)) => device,
        (_, Some(w)) if w < 576 => Device::Mobile,
        (_, Some(w)) if w < 992 => Device::Tablet,
        _ => Device::Desktop,
    }
}

/// User agents longer than this are parsed but not cached, so the cache's memory stays bounded
/// by `capacity × MAX_CACHED_LEN` bytes. Real browsers send well under 512 bytes.
const MAX_CACHED_LEN: usize = 1024;

/// A woothee parser behind a bounded cache. Cheap to share: `parse` takes `&self`.
pub struct UserAgentParser {
    parser: woothee::parser::Parser,
    cache: Cache<String, Arc<UserAgentInfo>>,
}

impl UserAgentParser {
    /// A parser that caches up to `capacity` distinct user agents (at least one).
    pub fn new(capacity: usize) -> Self {
        UserAgentParser {
            parser: woothee::parser::Parser::new(),
            cache: Cache::new(capacity.max(1)),
        }
    }

    /// Parses `user_agent`, from the cache when it was seen recently.
    pub fn parse(&self, user_agent: &str) -> Arc<UserAgentInfo> {
        if user_agent.len() > MAX_CACHED_LEN {
            return Arc::new(self.parse_uncached(user_agent));
        }
        let cached = self.cache.get_or_insert_with(user_agent, || {
            Ok::<_, Infallible>(Arc::new(self.parse_uncached(user_agent)))
        });
        match cached {
            Ok(info) => info,
            Err(never) => match never {},
        }
    }

    /// Number of user agents in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn parse_uncached(&self, ua: &str) -> UserAgentInfo {
        let Some(w) = self.parser.parse(ua) else {
            return UserAgentInfo {
                browser: String::new(),
                browser_version: String::new(),
                os: String::new(),
                os_version: String::new(),
                device: Device::Other,
                is_crawler: false,
            };
        };
        let is_crawler = w.category == "crawler";
        let (browser, browser_version) = if is_crawler {
            (known(w.name).to_string(), major(w.version).to_string())
        } else {
            browser_of(ua, w.name, w.version)
        };
        let (os, os_version) = os_of(ua, w.os, &w.os_version);
        UserAgentInfo {
            browser,
            browser_version,
            os,
            os_version,
            device: device_of(ua, w.category),
            is_crawler,
        }
    }
}

/// Apps and browsers that woothee reports as "Webview" or as the Chrome they are built on:
/// (token in the user agent, name to show, token the version follows).
const APPS: &[(&str, &str, &str)] = &[
    ("Instagram", "Instagram", "Instagram "),
    ("FBAN/", "Facebook", "FBAV/"),
    ("FBAV/", "Facebook", "FBAV/"),
    ("FB_IAB/", "Facebook", "FBAV/"),
    // Facebook's in-app browser since 2025; no version.
    ("MetaIAB Facebook", "Facebook", "FBAV/"),
    ("musical_ly", "TikTok", "musical_ly_"),
    ("BytedanceWebview", "TikTok", "musical_ly_"),
    ("Snapchat", "Snapchat", "Snapchat/"),
    ("Pinterest", "Pinterest", "Pinterest/"),
    ("LinkedInApp", "LinkedIn", "LinkedInApp/"),
    ("UCBrowser/", "UC Browser", "UCBrowser/"),
    ("Silk/", "Silk", "Silk/"),
    ("DuckDuckGo/", "DuckDuckGo", "DuckDuckGo/"),
    ("HeadlessChrome/", "Headless Chrome", "HeadlessChrome/"),
];

fn browser_of(ua: &str, name: &str, version: &str) -> (String, String) {
    if let Some((_, app, version_token)) = APPS.iter().find(|(token, _, _)| ua.contains(token)) {
        let version = version_after(ua, version_token).unwrap_or_default();
        return (app.to_string(), major(version).to_string());
    }
    let (name, version) = match name {
        "SamsungBrowser" => ("Samsung Internet", version),
        // An app's embedded browser that announces no app of ours.
        "Webview" if ua.contains("Android") => (
            "Chrome WebView",
            version_after(ua, "Chrome/").unwrap_or_default(),
        ),
        "Webview" => ("Safari WebView", ""),
        other => (known(other), version),
    };
    (name.to_string(), major(version).to_string())
}

fn os_of(ua: &str, os: &str, os_version: &str) -> (String, String) {
    let (os, version) = match os {
        "Mac OSX" => {
            // woothee knows only 10.x; macOS 11+ shows as "UNKNOWN" there.
            let v = version_after(ua, "Mac OS X ").unwrap_or_default();
            ("macOS", v.to_string())
        }
        "iPhone" | "iPad" | "iPod" | "iOS" => ("iOS", os_version.to_string()),
        "Windows Phone OS" => ("Windows Phone", os_version.to_string()),
        "Windows UNKNOWN Ver" => ("Windows", String::new()),
        // "Windows 10", "Windows 8.1", "Windows XP": the version is in the name. Windows 11
        // sends "Windows NT 10.0" too, so it counts as 10.
        w if w.starts_with("Windows ") && w != "Windows CE" => {
            return ("Windows".to_string(), w["Windows ".len()..].to_string());
        }
        "Linux" | "ChromeOS" => (os, String::new()),
        other => (known(other), os_version.to_string()),
    };
    (os.to_string(), short_version(&version))
}

fn device_of(ua: &str, category: &str) -> Device {
    const TV: &[&str] = &[
        "Android TV",
        "SMART-TV",
        "SmartTV",
        "GoogleTV",
        "Web0S",
        "HbbTV",
        "CrKey",
    ];
    if category == "crawler" {
        return Device::Bot;
    }
    if TV.iter().any(|t| ua.contains(t)) {
        return Device::Other;
    }
    match category {
        "pc" => Device::Desktop,
        // woothee files iPads and Android tablets under "smartphone".
        "smartphone" if is_tablet(ua) => Device::Tablet,
        "smartphone" | "mobilephone" => Device::Mobile,
        _ => Device::Other,
    }
}

/// Tablets say so by name (iPad, Kindle, Silk, Firefox's "Tablet"), or are Android devices
/// without the "Mobile" token that Android phones send.
fn is_tablet(ua: &str) -> bool {
    ["iPad", "Tablet", "Kindle", "Silk/"]
        .iter()
        .any(|t| ua.contains(t))
        || (ua.contains("Android") && !ua.contains("Mobile"))
}

/// woothee's "UNKNOWN" as an empty string.
fn known(value: &str) -> &str {
    if value == woothee::woothee::VALUE_UNKNOWN {
        ""
    } else {
        value
    }
}

/// The run of digits, dots and underscores right after `token`, if it starts with a digit.
fn version_after<'a>(ua: &'a str, token: &str) -> Option<&'a str> {
    let start = ua.find(token)? + token.len();
    let rest = &ua[start..];
    let len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(rest.len());
    let version = &rest[..len];
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// Leading digits: "131.0.6778.81" → "131"; "UNKNOWN" → "".
fn major(version: &str) -> &str {
    let len = version
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version.len());
    &version[..len]
}

/// "18.1.1" → "18.1", "10_15_7" → "10.15", "17.0" → "17", "NT 10.0" or "amd64" → "".
fn short_version(version: &str) -> String {
    let mut parts = version.split(['.', '_']);
    let major = parts.next().unwrap_or_default();
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return String::new();
    }
    match parts.next() {
        Some(minor)
            if !minor.is_empty()
                && minor.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().any(|b| b != b'0') =>
        {
            format!("{major}.{minor}")
        }
        _ => major.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use Device::{Bot, Desktop, Mobile, Other, Tablet};

    /// (user agent, browser, major version, OS, OS version, device). Real user agents of
    /// current (and a few old but still seen) browsers, and two crawlers. The bot detector's
    /// tests check it too: exactly the `Bot` rows are bots.
    pub(crate) const TABLE: &[(&str, &str, &str, &str, &str, Device)] = &[
        // Desktop
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "macOS", "10.15", Desktop),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Linux", "", Desktop),
        ("Mozilla/5.0 (X11; Linux aarch64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Linux", "", Desktop),
        ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "ChromeOS", "", Desktop),
        ("Mozilla/5.0 (X11; CrOS aarch64 15917.71.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "ChromeOS", "", Desktop),
        ("Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
            "Chrome", "109", "Windows", "7", Desktop),
        ("Mozilla/5.0 (Windows NT 6.3; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36",
            "Chrome", "109", "Windows", "8.1", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox", "133", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox", "133", "macOS", "10.15", Desktop),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox", "133", "Linux", "", Desktop),
        ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Firefox", "128", "Linux", "", Desktop),
        ("Mozilla/5.0 (Windows NT 5.1; rv:52.0) Gecko/20100101 Firefox/52.0",
            "Firefox", "52", "Windows", "XP", Desktop),
        ("Mozilla/5.0 (X11; FreeBSD amd64; rv:133.0) Gecko/20100101 Firefox/133.0",
            "Firefox", "133", "BSD", "", Desktop),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Safari/605.1.15",
            "Safari", "18", "macOS", "10.15", Desktop),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
            "Safari", "17", "macOS", "10.15", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge", "131", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
            "Edge", "131", "macOS", "10.15", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.18363",
            "Edge", "18", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
            "Opera", "115", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/116.0.0.0 (Edition Yx GX)",
            "Opera", "116", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 YaBrowser/24.12.0.0 Safari/537.36",
            "Yandex Browser", "24", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Vivaldi/7.0.3495.27",
            "Vivaldi", "7", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
            "Internet Explorer", "11", "Windows", "10", Desktop),
        ("Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
            "Internet Explorer", "11", "Windows", "7", Desktop),
        ("Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.2; Trident/6.0)",
            "Internet Explorer", "10", "Windows", "8", Desktop),
        // A macOS app's embedded WebKit: no browser token at all.
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
            "", "", "macOS", "10.15", Desktop),
        // iPhone and iPod
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1.1 Mobile/15E148 Safari/604.1",
            "Safari", "18", "iOS", "18.1", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
            "Safari", "17", "iOS", "17.6", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
            "Safari", "17", "iOS", "17", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 16_7_10 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
            "Safari", "16", "iOS", "16.7", Mobile),
        ("Mozilla/5.0 (iPod touch; CPU iPhone OS 15_8 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.6.6 Mobile/15E148 Safari/604.1",
            "Safari", "15", "iOS", "15.8", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome", "131", "iOS", "18.1", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
            "Firefox", "133", "iOS", "18.1", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 EdgiOS/131.2903.68 Mobile/15E148 Safari/605.1.15",
            "Edge", "131", "iOS", "18.1", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/343.0.695551749 Mobile/15E148 Safari/604.1",
            "Google Search App", "343", "iOS", "18.1", Mobile),
        // iPad
        ("Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
            "Safari", "18", "iOS", "18.1", Tablet),
        ("Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome", "131", "iOS", "17.7", Tablet),
        // Android phones
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome", "131", "Android", "10", Mobile),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
            "Chrome", "131", "Android", "14", Mobile),
        ("Mozilla/5.0 (Linux; Android 14; 23127PN0CG) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
            "Chrome", "131", "Android", "14", Mobile),
        ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36",
            "Samsung Internet", "27", "Android", "14", Mobile),
        ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
            "Firefox", "133", "Android", "14", Mobile),
        ("Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.2903.70",
            "Edge", "131", "Android", "14", Mobile),
        ("Mozilla/5.0 (Linux; Android 12; moto g(30)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 OPR/86.0.0.0",
            "Opera", "86", "Android", "12", Mobile),
        ("Mozilla/5.0 (Linux; U; Android 10; en-US; RMX2020 Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36",
            "UC Browser", "13", "Android", "10", Mobile),
        ("Mozilla/5.0 (Linux; arm_64; Android 14; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 YaBrowser/24.10.5.83.00 SA/3 Mobile Safari/537.36",
            "Yandex Browser", "24", "Android", "14", Mobile),
        ("Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 DuckDuckGo/5",
            "DuckDuckGo", "5", "Android", "14", Mobile),
        ("Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36",
            "Chrome WebView", "131", "Android", "13", Mobile),
        // Android tablets
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Android", "10", Tablet),
        ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Android", "13", Tablet),
        ("Mozilla/5.0 (Linux; Android 9; SM-T510) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Android", "9", Tablet),
        ("Mozilla/5.0 (Linux; Android 11; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Android", "11", Tablet),
        ("Mozilla/5.0 (Linux; Android 4.4.2; SM-T230 Build/KOT49H) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/44.0.2403.133 Safari/537.36",
            "Chrome", "44", "Android", "4.4", Tablet),
        ("Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Safari/537.36",
            "Samsung Internet", "26", "Android", "13", Tablet),
        ("Mozilla/5.0 (Android 14; Tablet; rv:133.0) Gecko/133.0 Firefox/133.0",
            "Firefox", "133", "Android", "14", Tablet),
        ("Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/131.3.1 like Chrome/131.0.6778.108 Safari/537.36",
            "Silk", "131", "Android", "11", Tablet),
        // In-app browsers
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 354.0.0.19.88 (iPhone15,3; iOS 17_5; en_US; en; scale=3.00; 1290x2796; 653134015)",
            "Instagram", "354", "iOS", "17.5", Mobile),
        ("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230901.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 Instagram 356.0.0.41.101 Android (33/13; 420dpi; 1080x2400; Google/google; Pixel 7; panther; panther; en_US; 652164545)",
            "Instagram", "356", "Android", "13", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/475.0.0.37.109;FBBV/640374441;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.5.1;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/642153633]",
            "Facebook", "475", "iOS", "17.5", Mobile),
        ("Mozilla/5.0 (Linux; Android 14; SM-G991B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/491.0.0.58.72;]",
            "Facebook", "491", "Android", "14", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/22G100 Safari/604.1 MetaIAB Facebook",
            "Facebook", "", "iOS", "18.6", Mobile),
        ("Mozilla/5.0 (Linux; Android 16; SM-G990U2 Build/BP2A.250605.031.A3; ) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/144.0.7559.117 Mobile Safari/537.36 MetaIAB Facebook",
            "Facebook", "", "Android", "16", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_37.5.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US FalconTag/",
            "TikTok", "37", "iOS", "18.1", Mobile),
        ("Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36 [Pinterest/Android]",
            "Pinterest", "", "Android", "13", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 LinkedInApp/9.30.1234",
            "LinkedIn", "9", "iOS", "18.1", Mobile),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 Snapchat/12.80.0.45 (like Safari/8617.2.4.10.8, panda)",
            "Snapchat", "12", "Android", "10", Mobile),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
            "Safari WebView", "", "iOS", "18.7", Mobile),
        // Other devices
        ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/52.0.2743.116 Mobile Safari/537.36 Edge/15.15063",
            "Edge", "15", "Windows Phone", "10", Mobile),
        ("Mozilla/5.0 (Linux; Android 9; SHIELD Android TV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome", "131", "Android", "9", Other),
        ("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15",
            "Safari", "13", "", "", Other),
        // Crawlers and nothing at all
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot", "", "", "", Bot),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "bingbot", "", "", "", Bot),
    ];

    #[test]
    fn table_of_real_user_agents() {
        let parser = UserAgentParser::new(100);
        let mut failures = Vec::new();
        for &(ua, browser, version, os, os_version, device) in TABLE {
            let got = parser.parse(ua);
            let want = UserAgentInfo {
                browser: browser.into(),
                browser_version: version.into(),
                os: os.into(),
                os_version: os_version.into(),
                device,
                is_crawler: device == Bot,
            };
            if *got != want {
                failures.push(format!("{ua}\n   got  {got:?}\n   want {want:?}"));
            }
        }
        assert!(TABLE.len() >= 30);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn what_is_not_a_browser_is_empty() {
        let parser = UserAgentParser::new(10);
        let empty = UserAgentInfo {
            browser: String::new(),
            browser_version: String::new(),
            os: String::new(),
            os_version: String::new(),
            device: Other,
            is_crawler: false,
        };
        for ua in ["", "-", "python-requests/2.31.0"] {
            assert_eq!(*parser.parse(ua), empty, "{ua}");
        }
    }

    #[test]
    fn macos_versions_woothee_does_not_know() {
        let parser = UserAgentParser::new(10);
        let info = parser.parse(
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2_1) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        );
        assert_eq!(
            (info.os.as_str(), info.os_version.as_str()),
            ("macOS", "14.2")
        );
    }

    #[test]
    fn repeated_user_agents_come_from_the_cache() {
        let parser = UserAgentParser::new(10);
        let ua = TABLE[0].0;
        let first = parser.parse(ua);
        let second = parser.parse(ua);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(parser.cached(), 1);
        parser.parse(TABLE[1].0);
        assert_eq!(parser.cached(), 2);
    }

    #[test]
    fn the_cache_is_bounded() {
        let parser = UserAgentParser::new(16);
        for i in 0..1000 {
            parser.parse(&format!("Mozilla/5.0 (X11; Linux x86_64) Firefox/{i}.0"));
        }
        assert!(parser.cached() <= 16 * 2, "{} cached", parser.cached());
        // Over-long user agents are parsed but never cached.
        let parser = UserAgentParser::new(16);
        let long = format!("{} {}", TABLE[0].0, "x".repeat(MAX_CACHED_LEN));
        assert_eq!(parser.parse(&long).browser, "Chrome");
        assert_eq!(parser.cached(), 0);
        // A zero capacity still works.
        assert_eq!(UserAgentParser::new(0).parse(TABLE[0].0).browser, "Chrome");
    }

    #[test]
    fn parser_is_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<UserAgentParser>();
        let parser = Arc::new(UserAgentParser::new(100));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let parser = Arc::clone(&parser);
                std::thread::spawn(move || {
                    for &(ua, browser, ..) in TABLE {
                        assert_eq!(parser.parse(ua).browser, browser);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn screen_width_refines_the_device() {
        assert_eq!(refine_device(Desktop, Some(375)), Mobile);
        assert_eq!(refine_device(Desktop, Some(575)), Mobile);
        assert_eq!(refine_device(Mobile, Some(576)), Tablet);
        assert_eq!(refine_device(Mobile, Some(991)), Tablet);
        assert_eq!(refine_device(Tablet, Some(992)), Desktop);
        assert_eq!(refine_device(Other, Some(1920)), Desktop);
        assert_eq!(refine_device(Bot, Some(375)), Bot);
        assert_eq!(refine_device(Bot, Some(1920)), Bot);
        assert_eq!(refine_device(Tablet, None), Tablet);
        assert_eq!(refine_device(Mobile, Some(0)), Mobile);
    }

    #[test]
    fn device_labels() {
        let labels: Vec<_> = [Desktop, Mobile, Tablet, Bot, Other]
            .map(Device::as_str)
            .to_vec();
        assert_eq!(labels, ["desktop", "mobile", "tablet", "bot", "other"]);
    }

    #[test]
    fn short_versions() {
        for (input, want) in [
            ("18.1.1", "18.1"),
            ("10_15_7", "10.15"),
            ("17.0", "17"),
            ("14", "14"),
            ("10.0.1", "10"),
            ("NT 10.0", ""),
            ("amd64", ""),
            ("UNKNOWN", ""),
            ("", ""),
        ] {
            assert_eq!(short_version(input), want, "{input}");
        }
    }
}
