use std::time::Duration;

use super::*;

#[test]
fn defaults_are_asp_net_s() {
    let s = ProviderSettings::default();
    assert_eq!(s.timeout, Duration::from_secs(20 * 60));
    assert_eq!(s.execution_timeout, Duration::from_secs(110));
    assert_eq!(s.request_queue_limit, 50);
    assert_eq!(s.near_cache(), NearCacheConfig::Lru { max_objects: 100 });
    assert!(!s.handle_session_end && !s.allow_concurrent_requests);
    assert!(s.regenerate_expired_session_id && !s.skip_keep_alive_when_unused);
    assert!(s.validate().is_err(), "a connection string is required");
}

#[test]
fn toml_with_a_connection_string_element() {
    let s = ProviderSettings::from_toml(
        r#"
        [sessionState]
        connectionStringElement = "grid"
        namespace = "shop"
        timeout = 30
        executionTimeout = "5s"
        handleSessionEnd = true
        clientCacheType = "LRU-MaxMemory"
        clientCacheCapacity = 8
        remoteStores = "east, west"

        [connectionStrings]
        grid = "bootstrapGateways=127.0.0.1:7210"
        "#,
    )
    .unwrap();
    assert_eq!(s.timeout, Duration::from_secs(30 * 60), "bare minutes");
    assert_eq!(s.execution_timeout, Duration::from_secs(5));
    assert!(s.handle_session_end);
    assert_eq!(s.remote_stores, vec!["east", "west"]);
    assert_eq!(s.namespace_or("app"), "shop");
    let client = s.client_config().unwrap();
    assert_eq!(
        client.near_cache,
        NearCacheConfig::LruMaxMemory { max_bytes: 8 << 20 }
    );
    assert_eq!(client.gateways[0].port, 7210);
}

#[test]
fn every_bad_setting_names_its_attribute() {
    let mut s = ProviderSettings::default();
    for (attribute, value) in [
        ("timeout", "0"),
        ("timeout", "soon"),
        ("executionTimeout", "-1"),
        ("handleSessionEnd", "maybe"),
        ("requestQueueLimitPerSession", "0"),
        ("clientCacheType", "MRU"),
        ("cookieSameSite", "sometimes"),
        ("cookieName", "has space"),
        ("namespace", ""),
    ] {
        let err = s.set(attribute, value).unwrap_err().to_string();
        assert!(err.contains(attribute), "{attribute}={value}: {err}");
    }
    assert!(matches!(
        s.set("colour", "blue"),
        Err(SettingsError::Unknown(_))
    ));
    s.set("connectionString", "bootstrapGateways=a;colour=blue")
        .unwrap();
    let err = s.validate().unwrap_err().to_string();
    assert!(
        err.contains("connectionString") && err.contains("colour"),
        "{err}"
    );
    s.set("connectionStringElement", "missing").unwrap();
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("connectionStringElement"));
    let err = ProviderSettings::from_toml("[sessionState]\ntimeout = [1]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeout"), "{err}");
}

#[test]
fn same_site_none_needs_secure_cookies() {
    let mut s = ProviderSettings::default();
    s.set("connectionString", "bootstrapGateways=a").unwrap();
    s.set("cookieSameSite", "None").unwrap();
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("cookieSecure"));
    s.set("cookieSecure", "true").unwrap();
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn environment_variables_override() {
    // A variable name no other test uses; set before reading, in this test only.
    std::env::set_var("SESSIONSTATE_REQUESTQUEUELIMITPERSESSION", "7");
    let s = ProviderSettings::default().from_env().unwrap();
    std::env::remove_var("SESSIONSTATE_REQUESTQUEUELIMITPERSESSION");
    assert_eq!(s.request_queue_limit, 7);
}

#[test]
fn connection_string_from_an_app_setting() {
    let s = ProviderSettings::from_toml(
        r#"
        [sessionState]
        connectionStringAppSetting = "GridConnection"

        [appSettings]
        gridconnection = "bootstrapGateways=127.0.0.1:7211"
        other = "kept"
        "#,
    )
    .unwrap();
    assert_eq!(
        s.connection,
        ConnectionSource::AppSetting("GridConnection".into())
    );
    assert_eq!(s.app_settings["other"], "kept");
    // Keys compare without regard to case, as ASP.NET's appSettings do.
    assert_eq!(s.client_config().unwrap().gateways[0].port, 7211);
}

#[test]
fn a_missing_app_setting_names_the_entry_and_the_table() {
    let mut s = ProviderSettings::from_toml("[appSettings]\nother = \"x\"").unwrap();
    s.set("connectionStringAppSetting", "GridConnection")
        .unwrap();
    let err = s.validate().unwrap_err().to_string();
    assert!(
        err.contains("connectionStringAppSetting")
            && err.contains("'GridConnection'")
            && err.contains("[appSettings]"),
        "{err}"
    );
}

#[test]
fn the_last_connection_source_set_wins() {
    let mut s = ProviderSettings::default();
    s.set_app_setting("grid", "bootstrapGateways=127.0.0.1:7212")
        .unwrap();
    s.set("connectionString", "bootstrapGateways=127.0.0.1:7213")
        .unwrap();
    s.set("connectionStringAppSetting", "grid").unwrap();
    assert_eq!(s.client_config().unwrap().gateways[0].port, 7212);
    s.set("connectionString", "bootstrapGateways=127.0.0.1:7213")
        .unwrap();
    assert_eq!(s.client_config().unwrap().gateways[0].port, 7213);
}

#[test]
fn app_setting_name_from_the_environment() {
    let s = ProviderSettings::from_toml("[appSettings]\nfromEnv = \"bootstrapGateways=h:7214\"")
        .unwrap()
        .from_vars(|var| {
            (var == "SESSIONSTATE_CONNECTIONSTRINGAPPSETTING").then(|| "fromEnv".into())
        })
        .unwrap();
    assert_eq!(s.connection, ConnectionSource::AppSetting("fromEnv".into()));
    assert_eq!(s.client_config().unwrap().gateways[0].port, 7214);
}

#[test]
fn the_app_setting_alone_allows_concurrent_requests() {
    let s = ProviderSettings::from_toml(
        "[appSettings]\n\"aspnet:AllowConcurrentRequestsPerSession\" = \" TRUE \"",
    )
    .unwrap();
    assert!(s.allow_concurrent_requests);
}

#[test]
fn the_attribute_wins_over_the_app_setting_in_either_order() {
    let attribute_first = r#"
        [sessionState]
        allowConcurrentRequestsPerSession = false

        [appSettings]
        "aspnet:AllowConcurrentRequestsPerSession" = "true"
        "#;
    let app_setting_first = r#"
        [appSettings]
        "aspnet:AllowConcurrentRequestsPerSession" = "true"

        [sessionState]
        allowConcurrentRequestsPerSession = false
        "#;
    // A TOML table does not keep the file's order (it iterates by key), so the file
    // alone cannot show order independence; the calls below take both orders.
    for text in [attribute_first, app_setting_first] {
        let s = ProviderSettings::from_toml(text).unwrap();
        assert!(!s.allow_concurrent_requests, "{text}");
    }
    // The same through code, in both orders.
    let mut s = ProviderSettings::default();
    s.set("allowConcurrentRequestsPerSession", "false").unwrap();
    s.set_app_setting(ALLOW_CONCURRENT_APP_SETTING, "true")
        .unwrap();
    assert!(!s.allow_concurrent_requests);
    let mut s = ProviderSettings::default();
    s.set_app_setting(ALLOW_CONCURRENT_APP_SETTING, "false")
        .unwrap();
    s.set("allowConcurrentRequestsPerSession", "true").unwrap();
    assert!(s.allow_concurrent_requests);
}

#[test]
fn bad_app_settings_name_their_key() {
    for (text, key) in [
        // .NET's bool.Parse takes true or false only, not the attributes' yes/1.
        (
            "[appSettings]\n\"aspnet:AllowConcurrentRequestsPerSession\" = \"yes\"",
            "aspnet:AllowConcurrentRequestsPerSession",
        ),
        (
            "[appSettings]\n\"aspnet:AllowConcurrentRequestsPerSession\" = true",
            "aspnet:AllowConcurrentRequestsPerSession",
        ),
        ("[appSettings]\nretries = 3", "retries"),
        ("[appSettings]\nGrid = \"a\"\ngrid = \"b\"", "grid"),
    ] {
        let err = ProviderSettings::from_toml(text).unwrap_err();
        assert!(
            matches!(&err, SettingsError::AppSetting { key: k, .. } if k == key),
            "{text}: {err:?}"
        );
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
}
