//! Loading and validating the configuration.

// figment's Jail closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]
use super::*;
use figment::Jail;

fn load_err(jail: &mut Jail, var: &str, value: &str) -> String {
    jail.clear_env();
    jail.set_env(var, value);
    Config::load(None).unwrap_err().to_string()
}

#[test]
fn defaults_without_file_or_env() {
    Jail::expect_with(|_| {
        let c = Config::load(None).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.collector.collector_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.query.query_addr.to_string(), "127.0.0.1:8001");
        assert_eq!(c.clickhouse_database, "glimpse");
        Ok(())
    });
}

#[test]
fn env_overrides_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "glimpse.toml",
            "collector_addr = \"0.0.0.0:9000\"\nbatch_max_rows = 7\nsites = [\"a.com\", { domain = \"b.com\" }]\n",
        )?;
        jail.set_env("GLIMPSE_BATCH_MAX_ROWS", "11");
        jail.set_env("GLIMPSE_CLICKHOUSE_PASSWORD", "123");
        jail.set_env("GLIMPSE_CONFIG", "not-a-setting");
        let c = Config::load(Some(Path::new("glimpse.toml"))).unwrap();
        assert_eq!(c.collector.collector_addr.to_string(), "0.0.0.0:9000");
        assert_eq!(c.collector.batch_max_rows, 11);
        assert_eq!(c.clickhouse_password, "123");
        let domains: Vec<_> = c.sites.iter().map(|s| s.domain.as_str()).collect();
        assert_eq!(domains, ["a.com", "b.com"]);
        Ok(())
    });
}

#[test]
fn credentials_in_the_clickhouse_url_become_user_and_password() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "GLIMPSE_CLICKHOUSE_URL",
            "http://glimpse:p%40ss@127.0.0.1:8123",
        );
        let c = Config::load(None).unwrap();
        assert_eq!(c.clickhouse_url.as_deref(), Some("http://127.0.0.1:8123/"));
        assert_eq!(c.clickhouse_user, "glimpse");
        assert_eq!(c.clickhouse_password, "p@ss");
        Ok(())
    });
}

#[test]
fn clickhouse_url_lists_several_servers_with_one_set_of_credentials() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "GLIMPSE_CLICKHOUSE_URL",
            "http://glimpse:p%40ss@10.0.0.1:8123, https://10.0.0.2:8443",
        );
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.clickhouse_url.as_deref(),
            Some("http://10.0.0.1:8123/,https://10.0.0.2:8443/")
        );
        assert_eq!(c.clickhouse_user, "glimpse");
        assert_eq!(c.clickhouse_password, "p@ss");
        let servers = c.clickhouse_servers().unwrap();
        let hosts: Vec<_> = servers
            .urls()
            .iter()
            .map(|u| u.host_str().unwrap())
            .collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2"]);
        // The same credentials on every URL are fine; different ones are refused, unquoted.
        jail.set_env(
            "GLIMPSE_CLICKHOUSE_URL",
            "http://u:same@10.0.0.1:8123,http://u:same@10.0.0.2:8123",
        );
        assert_eq!(Config::load(None).unwrap().clickhouse_password, "same");
        for (list, says) in [
            (
                "http://u:first-secret@10.0.0.1:8123,http://u:other-secret@10.0.0.2:8123",
                "different credentials",
            ),
            (
                "http://10.0.0.1:8123,,http://10.0.0.2:8123",
                "server 2 of the list: empty",
            ),
            (
                "http://10.0.0.1:8123,ftp://u:ftp-secret@x",
                "server 2 of the list: must be",
            ),
            ("http://10.0.0.1:8123,not a url", "server 2 of the list"),
            (
                "http://10.0.0.1:8123,http://10.0.0.1:8123/x",
                "listed twice",
            ),
        ] {
            let err = load_err(jail, "GLIMPSE_CLICKHOUSE_URL", list);
            assert!(
                err.contains("clickhouse_url") && err.contains(says),
                "{list}: {err}"
            );
            assert!(!err.contains("secret"), "a password in the message: {err}");
        }
        Ok(())
    });
}

#[test]
fn secrets_are_read_from_the_file_glimpse_key_file_names() {
    Jail::expect_with(|jail| {
        jail.create_file("password", "s3cret\n")?;
        jail.create_file("url", "https://u:p@ch.example:8443\n")?;
        jail.set_env("GLIMPSE_CLICKHOUSE_PASSWORD_FILE", "password");
        let c = Config::load(None).unwrap();
        assert_eq!(c.clickhouse_password, "s3cret");
        jail.clear_env();
        jail.set_env("GLIMPSE_CLICKHOUSE_URL_FILE", "url");
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.clickhouse_url.as_deref(),
            Some("https://ch.example:8443/")
        );
        assert_eq!(
            (c.clickhouse_user.as_str(), c.clickhouse_password.expose()),
            ("u", "p")
        );
        jail.set_env("GLIMPSE_CLICKHOUSE_URL", "http://127.0.0.1:8123");
        let both = Config::load(None).unwrap_err().to_string();
        assert!(
            both.contains("GLIMPSE_CLICKHOUSE_URL_FILE") && both.contains("not both"),
            "{both}"
        );
        let missing = load_err(jail, "GLIMPSE_CLICKHOUSE_PASSWORD_FILE", "nowhere");
        assert!(
            missing.contains("clickhouse_password") && missing.contains("nowhere"),
            "{missing}"
        );
        Ok(())
    });
}

#[test]
fn clickhouse_ca_cert_must_be_a_pem_file_with_a_certificate() {
    Jail::expect_with(|jail| {
        jail.create_file("empty.pem", "nothing here\n")?;
        let error = load_err(jail, "GLIMPSE_CLICKHOUSE_CA_CERT", "empty.pem");
        assert!(
            error.contains("clickhouse_ca_cert") && error.contains("empty.pem"),
            "{error}"
        );
        let error = load_err(jail, "GLIMPSE_CLICKHOUSE_CA_CERT", "missing.pem");
        assert!(
            error.contains("clickhouse_ca_cert") && error.contains("missing.pem"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn the_salt_key_is_a_long_secret_also_read_from_a_file() {
    Jail::expect_with(|jail| {
        assert!(Config::load(None).unwrap().collector.salt_key.is_none());
        let key = "k".repeat(32);
        jail.set_env("GLIMPSE_SALT_KEY", &key);
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.collector.salt_key.as_ref().map(|k| k.expose()),
            Some(key.as_str())
        );
        assert!(!format!("{c:?}").contains(&key), "the key is never printed");
        jail.set_env("GLIMPSE_SALT_KEY", "short");
        let error = Config::load(None).unwrap_err().to_string();
        assert!(
            error.contains("salt_key") && error.contains("32"),
            "{error}"
        );
        assert!(!error.contains("short"), "{error}");
        jail.clear_env();
        jail.create_file("salt.key", &format!("{key}\n"))?;
        jail.set_env("GLIMPSE_SALT_KEY_FILE", "salt.key");
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.collector.salt_key.as_ref().map(|k| k.expose()),
            Some(key.as_str())
        );
        Ok(())
    });
}

#[test]
fn clickhouse_cluster_is_a_plain_name_and_needs_a_url() {
    Jail::expect_with(|jail| {
        assert_eq!(Config::load(None).unwrap().clickhouse_cluster, None);
        jail.set_env("GLIMPSE_CLICKHOUSE_URL", "http://127.0.0.1:8123");
        jail.set_env("GLIMPSE_CLICKHOUSE_CLUSTER", "glimpse_2x2");
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.clickhouse_cluster.as_ref().map(ClusterName::as_str),
            Some("glimpse_2x2")
        );
        for bad in ["", "two words", "x;DROP", "9lives", "a-b"] {
            jail.set_env("GLIMPSE_CLICKHOUSE_CLUSTER", bad);
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error.contains("clickhouse_cluster") && error.contains("letters, digits"),
                "{bad:?}: {error}"
            );
        }
        jail.clear_env();
        let error = load_err(jail, "GLIMPSE_CLICKHOUSE_CLUSTER", "glimpse");
        assert!(
            error.contains("clickhouse_cluster") && error.contains("needs clickhouse_url"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn sites_from_comma_separated_env() {
    Jail::expect_with(|jail| {
        jail.set_env("GLIMPSE_SITES", "a.com, b.org,");
        let c = Config::load(None).unwrap();
        let domains: Vec<_> = c.sites.iter().map(|s| s.domain.as_str()).collect();
        assert_eq!(domains, ["a.com", "b.org"]);
        jail.set_env("GLIMPSE_SITES", "solo.net");
        let c = Config::load(None).unwrap();
        assert_eq!(c.sites[0].domain, "solo.net");
        Ok(())
    });
}

#[test]
fn bad_values_name_the_setting() {
    Jail::expect_with(|jail| {
        let err = load_err(jail, "GLIMPSE_COLLECTOR_ADDR", "nope");
        assert!(err.contains("collector_addr"), "{err}");
        assert!(err.contains("GLIMPSE_"), "{err}");
        let err = load_err(jail, "GLIMPSE_BATCH_MAX_ROWS", "0");
        assert!(err.contains("batch_max_rows"), "{err}");
        let err = load_err(jail, "GLIMPSE_BATCH_MAX_ROWS", "many");
        assert!(err.contains("batch_max_rows"), "{err}");
        let err = load_err(jail, "GLIMPSE_SITES", "Example.com/x");
        assert!(err.contains("sites"), "{err}");
        let err = load_err(jail, "GLIMPSE_SITES", "a.com,a.com");
        assert!(err.contains("twice"), "{err}");
        let err = load_err(jail, "GLIMPSE_CLICKHOUSE_URL", "ftp://x");
        assert!(err.contains("clickhouse_url"), "{err}");
        jail.clear_env();
        jail.create_file(
            "tz.toml",
            "[[sites]]\ndomain = \"a.com\"\ntimezone = \"Mars/Olympus\"\n",
        )?;
        let err = Config::load(Some(Path::new("tz.toml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timezone") && err.contains("Mars/Olympus"),
            "{err}"
        );
        let err = load_err(jail, "GLIMPSE_CLICKHOUSE_DATABASE", "x;drop");
        assert!(err.contains("clickhouse_database"), "{err}");
        Ok(())
    });
}

#[test]
fn unknown_file_keys_are_rejected_by_name() {
    Jail::expect_with(|jail| {
        jail.create_file("glimpse.toml", "colector_addr = \"0.0.0.0:9000\"\n")?;
        let err = Config::load(Some(Path::new("glimpse.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("colector_addr"), "{err}");
        Ok(())
    });
}

#[test]
fn tracker_paths_are_checked() {
    Jail::expect_with(|jail| {
        jail.set_env("GLIMPSE_SCRIPT_PATH", "/s/a.js");
        jail.set_env("GLIMPSE_EVENT_PATH", "/s/e");
        let c = Config::load(None).unwrap();
        assert_eq!(
            (
                c.collector.script_path.as_str(),
                c.collector.event_path.as_str()
            ),
            ("/s/a.js", "/s/e")
        );
        for (var, value) in [
            ("GLIMPSE_SCRIPT_PATH", "s.js"),
            ("GLIMPSE_SCRIPT_PATH", "/s/a"),
            ("GLIMPSE_EVENT_PATH", "/health"),
            ("GLIMPSE_EVENT_PATH", "/js/script.engagement.js"),
        ] {
            let err = load_err(jail, var, value);
            assert!(err.contains(&var[8..].to_lowercase()), "{err}");
        }
        Ok(())
    });
}

#[test]
fn tracker_ids_map_to_configured_sites() {
    Jail::expect_with(|jail| {
        let uuid = "3F1C1A4E-7D2B-4C55-9A0E-2B7F5C8D9E01";
        jail.set_env("GLIMPSE_SITES", "a.com,b.org");
        jail.set_env("GLIMPSE_UMAMI_WEBSITES", format!("{uuid}=a.com"));
        jail.set_env("GLIMPSE_MATOMO_SITES", "1=a.com, 2 = b.org");
        let c = Config::load(None).unwrap();
        assert_eq!(c.collector.umami_websites[&uuid.to_lowercase()], "a.com");
        assert_eq!(c.collector.matomo_sites["2"], "b.org");
        jail.create_file(
            "t.toml",
            &format!(
                "sites = [\"a.com\"]\n[umami_websites]\n\"{uuid}\" = \"a.com\"\n[matomo_sites]\n7 = \"a.com\"\n"
            ),
        )?;
        jail.clear_env();
        let c = Config::load(Some(Path::new("t.toml"))).unwrap();
        assert_eq!(c.collector.matomo_sites["7"], "a.com");
        assert_eq!(c.collector.umami_websites.len(), 1);
        for (var, value, key) in [
            ("GLIMPSE_MATOMO_SITES", "1=c.net", "matomo_sites"),
            ("GLIMPSE_MATOMO_SITES", "one=a.com", "matomo_sites"),
            ("GLIMPSE_MATOMO_SITES", "1", "matomo_sites"),
            (
                "GLIMPSE_UMAMI_WEBSITES",
                "not-a-uuid=a.com",
                "umami_websites",
            ),
        ] {
            jail.clear_env();
            jail.set_env("GLIMPSE_SITES", "a.com");
            jail.set_env(var, value);
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains(key), "{value}: {err}");
        }
        Ok(())
    });
}

#[test]
fn client_ip_header_is_parsed_once() {
    use crate::proxies::ClientIpHeader;
    Jail::expect_with(|jail| {
        assert_eq!(
            Config::load(None).unwrap().client_ip_header,
            ClientIpHeader::XForwardedFor
        );
        jail.set_env("GLIMPSE_CLIENT_IP_HEADER", "CF-Connecting-IP");
        let c = Config::load(None).unwrap();
        assert_eq!(c.client_ip_header.name(), "cf-connecting-ip");
        jail.clear_env();
        jail.create_file("h.toml", "client_ip_header = \"forwarded\"\n")?;
        let c = Config::load(Some(Path::new("h.toml"))).unwrap();
        assert_eq!(c.client_ip_header, ClientIpHeader::Forwarded);
        let err = load_err(jail, "GLIMPSE_CLIENT_IP_HEADER", "not a header");
        assert!(err.contains("client_ip_header"), "{err}");
        Ok(())
    });
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::load(Some(Path::new("/nonexistent/glimpse.toml")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/glimpse.toml"), "{err}");
}

#[test]
fn example_file_parses_and_documents_every_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../glimpse.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    Jail::expect_with(|_| {
        Config::load(Some(&example)).unwrap();
        Ok(())
    });
    for key in Config::keys() {
        assert!(
            text.contains(&format!("{key} =")),
            "glimpse.example.toml does not document `{key}`"
        );
    }
}

#[test]
fn the_clickhouse_password_never_shows_in_debug_output() {
    Jail::expect_with(|jail| {
        jail.set_env("GLIMPSE_CLICKHOUSE_PASSWORD", "s3cret-value");
        let c = Config::load(None).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret-value"), "{printed}");
        assert!(
            printed.contains("clickhouse_password: \"***\""),
            "{printed}"
        );
        assert_eq!(c.clickhouse_password.expose(), "s3cret-value");
        Ok(())
    });
}

#[test]
fn settings_are_grouped_by_service_but_the_file_stays_flat() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "glimpse.toml",
            "batch_max_rows = 7\nquery_max_connections = 9\nclickhouse_database = \"x\"\n",
        )?;
        let c = Config::load(Some(Path::new("glimpse.toml"))).unwrap();
        assert_eq!(c.collector.batch_max_rows, 7);
        assert_eq!(c.query.query_max_connections, 9);
        assert_eq!(c.clickhouse_database, "x");
        assert!(Config::keys().contains("batch_max_rows"));
        assert!(!Config::keys().contains("collector"));
        Ok(())
    });
}

#[test]
fn mail_settings_are_checked_and_the_smtp_url_is_a_secret() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "GLIMPSE_SMTP_URL",
            "smtps://glimpse:s3cret-mail@mail.example:465",
        );
        jail.set_env("GLIMPSE_SMTP_FROM", "stats@example.com");
        let c = Config::load(None).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret-mail"), "{printed}");
        assert_eq!(
            c.query.smtp_url.as_ref().map(|s| s.expose()),
            Some("smtps://glimpse:s3cret-mail@mail.example:465")
        );
        assert_eq!(c.query.smtp_from.as_deref(), Some("stats@example.com"));
        jail.set_env(
            "GLIMPSE_SMTP_URL",
            "http://glimpse:s3cret-mail@mail.example",
        );
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("smtp_url"), "{err}");
        assert!(!err.contains("s3cret-mail"), "{err}");
        jail.set_env("GLIMPSE_SMTP_URL", "smtp://localhost:25");
        jail.set_env("GLIMPSE_SMTP_FROM", "not an address");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("smtp_from"), "{err}");
        jail.set_env("GLIMPSE_SMTP_FROM", "stats@example.com");
        jail.set_env("GLIMPSE_DASHBOARD_URL", "https://stats.example.com/");
        let c = Config::load(None).unwrap();
        assert_eq!(
            c.query.dashboard_url.as_deref(),
            Some("https://stats.example.com/")
        );
        jail.set_env("GLIMPSE_DASHBOARD_URL", "ftp://stats.example.com");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("dashboard_url"), "{err}");
        Ok(())
    });
}

#[test]
fn a_collector_on_a_cluster_needs_one_source_of_salts() {
    Jail::expect_with(|jail| {
        jail.set_env("GLIMPSE_CLICKHOUSE_URL", "http://ch1:8123,http://ch2:8123");
        // One server: each collector's own salt_dir is the single-machine setup.
        assert!(Config::load(None).unwrap().validate_for_collector().is_ok());
        jail.set_env("GLIMPSE_CLICKHOUSE_CLUSTER", "glimpse");
        // Loading succeeds (the query service and admin commands share the file)...
        let config = Config::load(None).unwrap();
        // ...but a collector refuses it, saying what to set.
        let error = config.validate_for_collector().unwrap_err().to_string();
        assert!(
            error.contains("salt_key")
                && error.contains("GLIMPSE_SALT_KEY")
                && error.contains("salt_dir_shared = true"),
            "{error}"
        );
        jail.set_env("GLIMPSE_SALT_DIR_SHARED", "true");
        let config = Config::load(None).unwrap();
        assert!(config.collector.salt_dir_shared);
        assert!(config.validate_for_collector().is_ok());
        jail.set_env("GLIMPSE_SALT_DIR_SHARED", "false");
        jail.set_env("GLIMPSE_SALT_KEY", "k".repeat(32));
        assert!(Config::load(None).unwrap().validate_for_collector().is_ok());
        Ok(())
    });
}
