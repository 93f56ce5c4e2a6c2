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
