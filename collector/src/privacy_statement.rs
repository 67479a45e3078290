//! The privacy disclosure, generated from the live configuration, so an operator's policy says
//! exactly what this installation does: what is collected, what happens to the IP address, how
//! long data is kept, which signals are honoured, where data lives, and visitors' rights.
//! Shown by `glimpse privacy-statement --site S` and on the collector's `/privacy` page.

use glimpse_core::config::{Config, VisitorDataDetail};
use glimpse_core::site::Site;

/// The statement for `site`, as paragraphs of plain text (no markup).
pub fn paragraphs(config: &Config, site: &Site) -> Vec<String> {
    let link = |path: &str| match &config.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => path.to_string(),
    };
    let mut out = Vec::new();
    out.push(format!(
        "We count visits to {} with Glimpse, a self-hosted web analytics tool, to learn which \
         pages are read and how visitors find them. It sets no cookies to recognise you, builds \
         no profile of you, and does not follow you across websites or from one day to the next.",
        site.current_domain()
    ));

    let geo = glimpse_core::geoip::Source::of(config);
    let place = if geo.is_some() {
        "the country, region and city your IP address belongs to (looked up in memory and then \
         discarded)"
    } else {
        "no location information"
    };
    out.push(format!(
        "For each page view or event we record: the time; the page address without its query \
         string; the site you came from, reduced to its address without query string; campaign \
         tags in the link you followed (utm_source, utm_medium, utm_campaign, utm_term, \
         utm_content); your browser and its major version, operating system and version, device \
         type (desktop, mobile or tablet) and screen width; {place}; and the names and \
         properties of events the site defines (such as a sign-up)."
    ));

    // The database's licence may ask for credit wherever its results are used (DB-IP Lite).
    if let Some(credit) = geo
        .as_ref()
        .and_then(glimpse_core::geoip::Source::attribution)
    {
        out.push(format!("{} ({}).", credit.text, credit.url));
    }

    let ip = if config.collector.store_ip_prefix {
        format!(
            "We store only the first {v4} of the 32 bits of an IPv4 address{v4_words} (and the \
             first {v6} of the 128 bits of an IPv6 address); the rest of your address is never \
             stored.",
            v4 = config.collector.ipv4_prefix_length,
            v4_words = match config.collector.ipv4_prefix_length {
                8 => " (its first quarter)",
                16 => " (its first half)",
                24 => " (its first three quarters)",
                _ => "",
            },
            v6 = config.collector.ipv6_prefix_length,
        )
    } else {
        "We do not store your IP address, not even in part.".to_string()
    };
    out.push(format!(
        "{ip} Your browser's full identification string (user agent) is not stored either. To \
         count how many different people visit, a pseudonymous code is computed from your IP \
         address and user agent with a secret key that is replaced every day at midnight UTC \
         and destroyed after at most 48 hours; after that, nobody — including us — can link \
         your visits on different days to each other or to you."
    ));

    out.push(format!(
        "Records are deleted automatically {} days after they were made. Aggregated counts of \
         visits we did not record (for example from bots or from visitors who opted out) are \
         kept for the same time and contain nothing about the visitor.",
        site.retention_days
    ));

    let mut honoured = Vec::new();
    let mut ignored = Vec::new();
    for (on, name) in [
        (
            config.collector.honor_dnt,
            "the Do Not Track setting of your browser",
        ),
        (config.collector.honor_gpc, "Global Privacy Control"),
    ] {
        if on {
            honoured.push(name.to_string());
        } else {
            ignored.push(name);
        }
    }
    if config.collector.honor_opt_out_cookie {
        honoured.push(format!("an opt-out you set at {}", link("/opt-out")));
    } else {
        ignored.push("the opt-out page");
    }
    if !honoured.is_empty() {
        out.push(format!(
            "Nothing is recorded about visits from browsers that send {}.",
            join_or(&honoured)
        ));
    }
    if !ignored.is_empty() {
        out.push(format!(
            "This installation does not act on {}.",
            join_or(&ignored.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        ));
    }

    out.push(format!(
        "The data is kept {} and is not shared with or sold to anyone.",
        config
            .data_location
            .as_deref()
            .unwrap_or("on servers we operate ourselves")
    ));

    let shown = match config.collector.visitor_data_detail {
        VisitorDataDetail::Summary => {
            "That page shows, for each site, how many page views and other events were \
             recorded on which days, and what kinds of data are stored with them; it does not \
             show which pages you viewed, where you came from or at what time, because everyone \
             who uses the same internet connection with the same browser version (your \
             household, your office, your mobile network) is given the same page and would see \
             it too."
        }
        VisitorDataDetail::Full => {
            "That page lists each recorded event with its page, the site that sent you, your \
             browser and place, and the minute it happened. Be aware that everyone who uses the \
             same internet connection with the same browser version (your household, your \
             office, your mobile network) is given the same page and can see this list too."
        }
    };
    let mut rights = format!(
        "You can see what was recorded about your visits today and yesterday (the only days on \
         which your visits can be linked at all), download it, and have it erased, from the \
         browser you used, at {}. {shown} Older records cannot be attributed to you, by design.",
        link("/privacy/my-data")
    );
    if let Some(contact) = &config.privacy_contact {
        rights.push_str(&format!(" Questions and requests: {contact}."));
    }
    out.push(rights);
    out
}

/// The statement as one plain-text block.
pub fn text(config: &Config, site: &Site) -> String {
    paragraphs(config, site).join("\n\n")
}

/// The statement as an HTML page (every value escaped).
pub fn html(config: &Config, site: &Site) -> String {
    let body: String = paragraphs(config, site)
        .iter()
        .map(|p| format!("<p>{}</p>\n", html_escape::encode_text(p)))
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Analytics and your privacy</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;\
         padding:0 1rem;line-height:1.55}}</style></head>\n<body>\n<h1>Analytics on {}</h1>\n{body}</body></html>\n",
        html_escape::encode_text(site.current_domain())
    )
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Config, Site) {
        let site = Site::new("example.com");
        let config = Config {
            sites: vec![site.clone()],
            data_dir: "/nonexistent/glimpse-data".into(),
            ..Config::default()
        };
        (config, site)
    }

    #[test]
    fn defaults_promise_what_the_defaults_do() {
        let (config, site) = setup();
        let t = text(&config, &site);
        assert!(t.contains("We do not store your IP address, not even in part."));
        assert!(t.contains("deleted automatically 180 days"));
        assert!(t.contains("no location information"));
        assert!(t.contains("Do Not Track"));
        assert!(t.contains("Global Privacy Control"));
        assert!(t.contains("an opt-out you set at /opt-out"));
        assert!(t.contains("/privacy/my-data"));
        assert!(t.contains("on servers we operate ourselves"));
        assert!(!t.contains("does not act on"));
    }

    #[test]
    fn every_setting_is_reflected() {
        let (mut config, mut site) = setup();
        config.collector.store_ip_prefix = true;
        config.collector.ipv4_prefix_length = 16;
        config.collector.ipv6_prefix_length = 48;
        config.geoip_db = Some("/x.mmdb".into());
        config.collector.honor_dnt = false;
        config.public_url = Some("https://stats.example.com/".into());
        config.data_location = Some("in Frankfurt, Germany".into());
        config.privacy_contact = Some("privacy@example.com".into());
        site.retention_days = 30;
        let t = text(&config, &site);
        assert!(
            t.contains("first 16 of the 32 bits of an IPv4 address (its first half)"),
            "{t}"
        );
        assert!(t.contains("first 48 of the 128 bits"));
        assert!(t.contains("country, region and city"));
        assert!(t.contains("deleted automatically 30 days"));
        assert!(t.contains("does not act on the Do Not Track setting"));
        assert!(!t.contains("browsers that send the Do Not Track"));
        assert!(t.contains("https://stats.example.com/opt-out"));
        assert!(t.contains("https://stats.example.com/privacy/my-data"));
        assert!(t.contains("kept in Frankfurt, Germany"));
        assert!(t.contains("privacy@example.com"));

        config.collector.ipv4_prefix_length = 24;
        assert!(text(&config, &site).contains("(its first three quarters)"));
        config.collector.honor_gpc = false;
        config.collector.honor_opt_out_cookie = false;
        let t = text(&config, &site);
        assert!(t.contains("does not act on the Do Not Track setting of your browser, Global Privacy Control or the opt-out page"), "{t}");
    }

    #[test]
    fn the_visitor_data_page_is_described_with_its_risk() {
        let (mut config, site) = setup();
        let t = text(&config, &site);
        assert!(t.contains("does not show which pages you viewed"), "{t}");
        assert!(
            t.contains("same internet connection with the same browser"),
            "{t}"
        );
        config.collector.visitor_data_detail = VisitorDataDetail::Full;
        let t = text(&config, &site);
        assert!(t.contains("lists each recorded event with its page"), "{t}");
        assert!(t.contains("can see this list too"), "{t}");
    }

    #[test]
    fn the_installed_database_is_named_with_the_credit_its_licence_asks_for() {
        use crate::ingest::geo::test_dbs::{write, Kind};
        let data = tempfile::tempdir().unwrap();
        let (mut config, site) = setup();
        config.data_dir = data.path().to_path_buf();
        let t = text(&config, &site);
        assert!(t.contains("no location information"), "{t}");
        assert!(!t.contains("IP geolocation"), "{t}");

        let dir = glimpse_core::geoip::default_dir(data.path());
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, Kind::IpLocationCountry);
        let t = text(&config, &site);
        assert!(t.contains("country, region and city"), "{t}");
        assert!(
            t.contains("IP geolocation from RIR data by the NRO (nro.net), CC BY 4.0 (https://www.nro.net)."),
            "{t}"
        );
        write(&dir, Kind::IpLocationCityV4);
        write(&dir, Kind::IpLocationCityV6);
        let t = text(&config, &site);
        assert!(
            t.contains("IP geolocation by DB-IP (https://db-ip.com)."),
            "{t}"
        );
        assert!(!t.contains("NRO"), "{t}");
        // A configured MaxMind database without a credit in its type: none.
        config.geoip_db = Some(write(data.path(), Kind::MaxMindCity));
        let t = text(&config, &site);
        assert!(t.contains("country, region and city"), "{t}");
        assert!(!t.contains("IP geolocation"), "{t}");
    }

    #[test]
    fn html_is_escaped() {
        let (mut config, site) = setup();
        config.data_location = Some("<script>alert(1)</script>".into());
        let page = html(&config, &site);
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;"));
    }
}
