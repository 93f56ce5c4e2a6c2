use super::*;

fn err(s: &str) -> String {
    s.parse::<ClientConfig>().unwrap_err().to_string()
}

#[test]
fn full_string_parses_with_any_key_case() {
    let cfg: ClientConfig = "BootstrapGateways=10.0.0.1:7000, node2 ,[::1]:7300; maxrequestretries=5;\
        EVENTCONNECTIONCOUNT=8;maxPoolSize=16;useSecure=false;authToken=s3cret;connectTimeout=250ms;requestTimeout=3000;"
        .parse()
        .unwrap();
    assert_eq!(
        cfg.gateways,
        vec![
            Gateway {
                host: "10.0.0.1".into(),
                port: 7000
            },
            Gateway {
                host: "node2".into(),
                port: DEFAULT_PORT
            },
            Gateway {
                host: "::1".into(),
                port: 7300
            },
        ]
    );
    assert_eq!(cfg.max_request_retries, 5);
    assert_eq!(cfg.event_connection_count, 8);
    assert_eq!(cfg.max_pool_size, 16);
    assert_eq!(cfg.auth_token.as_deref(), Some("s3cret"));
    assert_eq!(cfg.connect_timeout, Duration::from_millis(250));
    assert_eq!(cfg.request_timeout, Duration::from_secs(3));
    assert_eq!(cfg.gateways[2].to_string(), "[::1]:7300");
}

#[test]
fn defaults_apply() {
    let cfg: ClientConfig = "bootstrapGateways=localhost".parse().unwrap();
    assert_eq!(cfg.max_request_retries, 2);
    assert_eq!(cfg.max_pool_size, 4);
    assert_eq!(cfg.event_connection_count, 4);
    assert!(!cfg.use_secure);
    assert_eq!(cfg.gateways[0].port, 7210);
}

#[test]
fn errors_name_the_key() {
    assert!(err("").contains("bootstrapGateways"));
    assert!(err("maxPoolSize=2").contains("bootstrapGateways"));
    assert!(err("bootstrapGateways=a;colour=blue").contains("'colour'"));
    assert!(err("bootstrapGateways=a;maxRequestRetries=many").contains("maxRequestRetries"));
    assert!(err("bootstrapGateways=a;maxPoolSize=0").contains("maxPoolSize"));
    assert!(err("bootstrapGateways=a;eventConnectionCount=65").contains("eventConnectionCount"));
    assert!(err("bootstrapGateways=a:99999").contains("bootstrapGateways"));
    assert!(err("bootstrapGateways=a:0").contains("bootstrapGateways"));
    assert!(err("bootstrapGateways=::1").contains("brackets"));
    assert!(err("bootstrapGateways=,").contains("bootstrapGateways"));
    assert!(err("bootstrapGateways=a;useSecure=maybe").contains("useSecure"));
    assert!(err("bootstrapGateways=a;useSecure=true").contains("useSecure"));
    assert!(err("bootstrapGateways=a;authToken=").contains("authToken"));
    assert!(err("bootstrapGateways=a;requestTimeout=soon").contains("requestTimeout"));
    assert!(err("bootstrapGateways=a;connectTimeout=0").contains("connectTimeout"));
    assert!(err("bootstrapGateways=a;bootstrapgateways=b").contains("more than once"));
    assert!(err("bootstrapGateways=a;justakey").contains("key=value"));
}

#[test]
fn near_cache_settings_parse_in_any_order_with_their_defaults() {
    let parse = |s: &str| s.parse::<ClientConfig>().unwrap().near_cache;
    assert_eq!(
        parse("bootstrapGateways=a"),
        NearCacheConfig::Lru { max_objects: 100 }
    );
    assert_eq!(
        parse("clientCacheCapacity=5;bootstrapGateways=a;clientCacheType=lru"),
        NearCacheConfig::Lru { max_objects: 5 }
    );
    assert_eq!(
        parse("bootstrapGateways=a;clientCacheType=LRU-MaxMemory"),
        NearCacheConfig::LruMaxMemory {
            max_bytes: 100 << 20
        }
    );
    assert_eq!(
        parse("bootstrapGateways=a;clientCacheType=LRU-MaxMemory;clientCacheCapacity=2"),
        NearCacheConfig::LruMaxMemory { max_bytes: 2 << 20 }
    );
    assert_eq!(
        parse("bootstrapGateways=a;clientCacheType=None"),
        NearCacheConfig::Off
    );
    assert_eq!(
        parse("bootstrapGateways=a;clientCacheCapacity=0"),
        NearCacheConfig::Off
    );
    assert!(err("bootstrapGateways=a;clientCacheType=MRU").contains("clientCacheType"));
    assert!(err("bootstrapGateways=a;clientCacheCapacity=-1").contains("clientCacheCapacity"));
}
