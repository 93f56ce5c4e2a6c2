//! Provider settings, with the ASP.NET session-state attribute names and defaults.
//!
//! One typed struct ([`ProviderSettings`]) filled from any of three sources, all through
//! [`ProviderSettings::set`], so every source validates the same way and every error
//! names the attribute:
//! - a TOML file ([`ProviderSettings::from_toml`]): attributes under `[sessionState]`,
//!   connection strings under `[connectionStrings]`, application settings under
//!   `[appSettings]`;
//! - the environment ([`ProviderSettings::from_env`]): `SESSIONSTATE_<ATTRIBUTE>`, e.g.
//!   `SESSIONSTATE_CONNECTIONSTRING`;
//! - code: `ProviderSettings::default()` and [`ProviderSettings::set`] or the fields.
//!
//! Durations accept a unit (`90s`, `20m`) or a bare number in ASP.NET's unit: minutes
//! for `timeout`, seconds for `executionTimeout`.
//!
//! `[appSettings]` is ASP.NET's `<appSettings>`: string entries, keys compared without
//! regard to case, filled through [`ProviderSettings::set_app_setting`]. The provider
//! reads two of them: the entry `connectionStringAppSetting` names, and
//! `aspnet:AllowConcurrentRequestsPerSession` (`true`/`false`, as .NET's `bool` parses
//! it), which turns on concurrent requests unless the provider attribute
//! `allowConcurrentRequestsPerSession` is also given: the attribute wins, whichever
//! comes first.

use std::collections::BTreeMap;
use std::time::Duration;

use cookie::SameSite;
use grid_client::{ClientConfig, NearCacheConfig};
use thiserror::Error;

/// A setting that cannot work, named by its attribute.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// The attribute is not one the provider knows.
    #[error("unknown session-state attribute '{0}'")]
    Unknown(String),
    /// The value does not parse or is out of range.
    #[error("session-state attribute '{attribute}': {reason}")]
    Bad {
        /// The attribute.
        attribute: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The configuration file cannot be read or parsed.
    #[error("session-state config file: {0}")]
    File(String),
    /// An `[appSettings]` entry is not text, or is one the provider reads and its value
    /// does not parse.
    #[error("app setting '{key}': {reason}")]
    AppSetting {
        /// The entry's key, as written.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn bad(attribute: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Bad {
        attribute,
        reason: reason.into(),
    }
}

/// Where the grid's connection string comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConnectionSource {
    /// Not configured yet (an error at [`ProviderSettings::validate`]).
    #[default]
    Missing,
    /// `connectionString`: the string itself.
    Inline(String),
    /// `connectionStringEnvironmentVariable`: the variable holding it.
    Environment(String),
    /// `connectionStringElement`: a name in the config file's `[connectionStrings]`.
    Element(String),
    /// `connectionStringAppSetting`: a key in the config file's `[appSettings]`.
    AppSetting(String),
}

/// `clientCacheType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheType {
    /// Bounded by sessions.
    Lru,
    /// Bounded by megabytes.
    LruMaxMemory,
    /// No near cache.
    None,
}

/// The provider's settings. Defaults are ASP.NET's (and ScaleOut's provider's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// `connectionString` / `connectionStringEnvironmentVariable` /
    /// `connectionStringElement` / `connectionStringAppSetting`: how to reach the grid.
    /// Required; when several are given, the last one set wins (within one file, the
    /// last by key order, since a TOML table does not keep the file's order).
    pub connection: ConnectionSource,
    /// The `[connectionStrings]` table of the config file, for `connectionStringElement`.
    pub connection_strings: BTreeMap<String, String>,
    /// The `[appSettings]` table of the config file (empty by default), for
    /// `connectionStringAppSetting` and `aspnet:AllowConcurrentRequestsPerSession`.
    /// Fill it with [`ProviderSettings::set_app_setting`]: inserting here directly does
    /// not apply `aspnet:AllowConcurrentRequestsPerSession`.
    pub app_settings: BTreeMap<String, String>,
    /// `clientCacheType`: `LRU` (default), `LRU-MaxMemory`, or `None`: the near cache of
    /// sessions.
    pub client_cache_type: CacheType,
    /// `clientCacheCapacity`: sessions for `LRU` (default 100), megabytes for
    /// `LRU-MaxMemory` (default 100); 0 turns the cache off.
    pub client_cache_capacity: Option<u64>,
    /// `handleSessionEnd` (false): register for expirations and revocations and call the
    /// `Session_End` callback, once per ended session across the web farm.
    pub handle_session_end: bool,
    /// `namespace` (default: the application's name): isolates this application's
    /// sessions in the grid.
    pub namespace: Option<String>,
    /// `remoteStores` (none): other sites to pull a missing session from, in order
    /// (names as the grid nodes' `--remote-store`); the session then moves here.
    pub remote_stores: Vec<String>,
    /// `timeout` (20 min): sliding expiry of an idle session.
    pub timeout: Duration,
    /// `allowConcurrentRequestsPerSession` (false): no exclusive lock per request; reads
    /// never wait and the last write wins. The app setting
    /// `aspnet:AllowConcurrentRequestsPerSession` sets it too, unless the attribute has
    /// been set through [`ProviderSettings::set`] (file, environment or code).
    pub allow_concurrent_requests: bool,
    /// Whether `allowConcurrentRequestsPerSession` went through [`ProviderSettings::set`],
    /// so that the app setting yields to it in whatever order the two arrive (a TOML
    /// table's order is not the file's).
    allow_concurrent_attribute_set: bool,
    /// `skipKeepAliveWhenUnused` (false): requests to handlers without session state do
    /// not slide the session's expiry.
    pub skip_keep_alive_when_unused: bool,
    /// `regenerateExpiredSessionId` (true): a request naming an unknown or expired
    /// session gets a new id instead of reusing the one it sent.
    pub regenerate_expired_session_id: bool,
    /// `executionTimeout` (110 s): how long a request may hold its session's lock; a
    /// waiting request takes over a lock older than this.
    pub execution_timeout: Duration,
    /// `requestQueueLimitPerSession` (50): requests of one session allowed to wait for
    /// its lock on this web server; more get 503.
    pub request_queue_limit: u32,
    /// `cookieName` (`ASP.NET_SessionId`).
    pub cookie_name: String,
    /// `cookieSameSite` (`Lax`).
    pub cookie_same_site: SameSite,
    /// `cookieSecure` (false): send the cookie over HTTPS only.
    pub cookie_secure: bool,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            connection: ConnectionSource::Missing,
            connection_strings: BTreeMap::new(),
            app_settings: BTreeMap::new(),
            client_cache_type: CacheType::Lru,
            client_cache_capacity: None,
            handle_session_end: false,
            namespace: None,
            remote_stores: Vec::new(),
            timeout: Duration::from_secs(20 * 60),
            allow_concurrent_requests: false,
            allow_concurrent_attribute_set: false,
            skip_keep_alive_when_unused: false,
            regenerate_expired_session_id: true,
            execution_timeout: Duration::from_secs(110),
            request_queue_limit: 50,
            cookie_name: "ASP.NET_SessionId".into(),
            cookie_same_site: SameSite::Lax,
            cookie_secure: false,
        }
    }
}

/// Every attribute, as written in configuration.
pub const ATTRIBUTES: [&str; 18] = [
    "connectionString",
    "connectionStringEnvironmentVariable",
    "connectionStringElement",
    "connectionStringAppSetting",
    "clientCacheType",
    "clientCacheCapacity",
    "handleSessionEnd",
    "namespace",
    "remoteStores",
    "timeout",
    "allowConcurrentRequestsPerSession",
    "skipKeepAliveWhenUnused",
    "regenerateExpiredSessionId",
    "executionTimeout",
    "requestQueueLimitPerSession",
    "cookieName",
    "cookieSameSite",
    "cookieSecure",
];

/// The app setting ASP.NET reads for concurrent requests per session.
pub const ALLOW_CONCURRENT_APP_SETTING: &str = "aspnet:AllowConcurrentRequestsPerSession";

/// The sections [`ProviderSettings::from_toml`] knows, for its error about another.
const SECTIONS: &str = "[sessionState], [connectionStrings], [appSettings]";

fn parse_bool(attribute: &'static str, value: &str) -> Result<bool, SettingsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(bad(attribute, format!("'{value}' is not true or false"))),
    }
}

/// A duration with a unit, or a bare number of `unit`.
fn parse_duration(
    attribute: &'static str,
    value: &str,
    unit: Duration,
) -> Result<Duration, SettingsError> {
    let value = value.trim();
    let d = match value.parse::<u32>() {
        Ok(n) => unit * n,
        Err(_) => humantime::parse_duration(value)
            .map_err(|e| bad(attribute, format!("'{value}' is not a duration: {e}")))?,
    };
    if d.is_zero() {
        return Err(bad(attribute, "must be greater than zero"));
    }
    Ok(d)
}

/// An app-setting boolean as .NET's `bool.Parse` reads it: `true` or `false`, any case,
/// surrounding white space ignored (stricter than the attributes' [`parse_bool`]).
fn parse_app_setting_bool(key: &str, value: &str) -> Result<bool, SettingsError> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("true") => Ok(true),
        v if v.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(SettingsError::AppSetting {
            key: key.to_string(),
            reason: format!("'{value}' is not true or false"),
        }),
    }
}

impl ProviderSettings {
    /// Sets one attribute from its configuration text. Attribute names are
    /// case-insensitive.
    pub fn set(&mut self, attribute: &str, value: &str) -> Result<(), SettingsError> {
        let name = ATTRIBUTES
            .iter()
            .find(|a| a.eq_ignore_ascii_case(attribute.trim()))
            .ok_or_else(|| SettingsError::Unknown(attribute.to_string()))?;
        let text = value.trim().to_string();
        match *name {
            "connectionString" => self.connection = ConnectionSource::Inline(text),
            "connectionStringEnvironmentVariable" => {
                self.connection = ConnectionSource::Environment(text)
            }
            "connectionStringElement" => self.connection = ConnectionSource::Element(text),
            "connectionStringAppSetting" => self.connection = ConnectionSource::AppSetting(text),
            "clientCacheType" => {
                self.client_cache_type = match text.to_ascii_lowercase().as_str() {
                    "lru" => CacheType::Lru,
                    "lru-maxmemory" => CacheType::LruMaxMemory,
                    "none" => CacheType::None,
                    _ => return Err(bad(name, format!("'{text}' is not LRU or LRU-MaxMemory"))),
                };
            }
            "clientCacheCapacity" => {
                self.client_cache_capacity = Some(
                    text.parse()
                        .map_err(|_| bad(name, format!("'{text}' is not a whole number")))?,
                );
            }
            "handleSessionEnd" => self.handle_session_end = parse_bool(name, &text)?,
            "namespace" => {
                grid_proto::limits::validate_namespace(&text)
                    .map_err(|e| bad(name, e.to_string()))?;
                self.namespace = Some(text);
            }
            "remoteStores" => {
                self.remote_stores = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "timeout" => self.timeout = parse_duration(name, &text, Duration::from_secs(60))?,
            "allowConcurrentRequestsPerSession" => {
                self.allow_concurrent_requests = parse_bool(name, &text)?;
                self.allow_concurrent_attribute_set = true;
            }
            "skipKeepAliveWhenUnused" => {
                self.skip_keep_alive_when_unused = parse_bool(name, &text)?
            }
            "regenerateExpiredSessionId" => {
                self.regenerate_expired_session_id = parse_bool(name, &text)?
            }
            "executionTimeout" => {
                self.execution_timeout = parse_duration(name, &text, Duration::from_secs(1))?
            }
            "requestQueueLimitPerSession" => {
                self.request_queue_limit = text
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(name, format!("'{text}' is not a positive number")))?
            }
            "cookieName" => {
                let valid = !text.is_empty()
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !valid {
                    return Err(bad(name, "use letters, digits, '_', '-' or '.'"));
                }
                self.cookie_name = text;
            }
            "cookieSameSite" => {
                self.cookie_same_site = match text.to_ascii_lowercase().as_str() {
                    "lax" => SameSite::Lax,
                    "strict" => SameSite::Strict,
                    "none" => SameSite::None,
                    _ => return Err(bad(name, format!("'{text}' is not Lax, Strict or None"))),
                }
            }
            "cookieSecure" => self.cookie_secure = parse_bool(name, &text)?,
            _ => unreachable!("every attribute is matched above"),
        }
        Ok(())
    }

    /// Sets one `[appSettings]` entry, replacing one whose key differs only in case (as
    /// ASP.NET's case-insensitive `appSettings` does). The entry
    /// `aspnet:AllowConcurrentRequestsPerSession` must be `true` or `false` and sets
    /// `allow_concurrent_requests`, unless `allowConcurrentRequestsPerSession` was set
    /// (before or after): the attribute takes precedence.
    pub fn set_app_setting(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        if key.eq_ignore_ascii_case(ALLOW_CONCURRENT_APP_SETTING) {
            let allow = parse_app_setting_bool(key, value)?;
            if !self.allow_concurrent_attribute_set {
                self.allow_concurrent_requests = allow;
            }
        }
        self.app_settings
            .retain(|k, _| !k.eq_ignore_ascii_case(key));
        self.app_settings.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// The `[appSettings]` entry under `key`, compared without regard to case.
    pub fn app_setting(&self, key: &str) -> Option<&str> {
        self.app_settings
            .get(key)
            .or_else(|| {
                self.app_settings
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .map(String::as_str)
    }

    /// Settings from a TOML document: attributes under `[sessionState]` (strings, numbers
    /// or booleans), connection strings under `[connectionStrings]`, app settings under
    /// `[appSettings]` (strings; two keys differing only in case are an error, since
    /// ASP.NET would read them as one).
    pub fn from_toml(text: &str) -> Result<Self, SettingsError> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| SettingsError::File(e.to_string()))?;
        let mut settings = Self::default();
        for (section, value) in &doc {
            let table = value.as_table().ok_or_else(|| {
                SettingsError::File(format!("'{section}' must be a table ([{section}])"))
            })?;
            match section.as_str() {
                "sessionState" => {
                    for (key, value) in table {
                        let text = match value {
                            toml::Value::String(s) => s.clone(),
                            toml::Value::Integer(n) => n.to_string(),
                            toml::Value::Boolean(b) => b.to_string(),
                            other => {
                                return Err(SettingsError::File(format!(
                                "sessionState.{key}: expected a string, number or boolean, not {}",
                                other.type_str()
                            )))
                            }
                        };
                        settings.set(key, &text)?;
                    }
                }
                "connectionStrings" => {
                    for (name, value) in table {
                        let cs = value.as_str().ok_or_else(|| {
                            SettingsError::File(format!(
                                "connectionStrings.{name} must be a string"
                            ))
                        })?;
                        settings
                            .connection_strings
                            .insert(name.clone(), cs.to_string());
                    }
                }
                "appSettings" => {
                    for (key, value) in table {
                        let text = value.as_str().ok_or_else(|| SettingsError::AppSetting {
                            key: key.clone(),
                            reason: format!(
                                "must be a string (write it in quotes), not {}",
                                value.type_str()
                            ),
                        })?;
                        if let Some(other) = settings
                            .app_settings
                            .keys()
                            .find(|k| k.eq_ignore_ascii_case(key))
                        {
                            return Err(SettingsError::AppSetting {
                                key: key.clone(),
                                reason: format!(
                                    "'{other}' differs only in case; ASP.NET reads them as one"
                                ),
                            });
                        }
                        settings.set_app_setting(key, text)?;
                    }
                }
                other => {
                    return Err(SettingsError::File(format!(
                        "unknown section [{other}] (known: {SECTIONS})"
                    )))
                }
            }
        }
        Ok(settings)
    }

    /// Settings from `SESSIONSTATE_<ATTRIBUTE>` environment variables over `self`
    /// (`SESSIONSTATE_CONNECTIONSTRINGAPPSETTING` and `SESSIONSTATE_CONNECTIONSTRINGELEMENT`
    /// name entries of the file's tables, so call this on the settings
    /// [`ProviderSettings::from_toml`] returned).
    pub fn from_env(self) -> Result<Self, SettingsError> {
        self.from_vars(|var| std::env::var(var).ok())
    }

    /// [`ProviderSettings::from_env`] over any variable lookup, so tests need not touch
    /// the process environment.
    pub fn from_vars(
        mut self,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        for attribute in ATTRIBUTES {
            let var = format!("SESSIONSTATE_{}", attribute.to_ascii_uppercase());
            if let Some(value) = lookup(&var) {
                self.set(attribute, &value)?;
            }
        }
        Ok(self)
    }

    /// The grid client configuration: the connection string, resolved from its source,
    /// with the near-cache settings applied.
    pub fn client_config(&self) -> Result<ClientConfig, SettingsError> {
        let (attribute, text) = match &self.connection {
            ConnectionSource::Missing => {
                return Err(bad(
                    "connectionString",
                    "set connectionString, connectionStringEnvironmentVariable, \
                     connectionStringElement or connectionStringAppSetting",
                ))
            }
            ConnectionSource::Inline(cs) => ("connectionString", cs.clone()),
            ConnectionSource::Environment(var) => (
                "connectionStringEnvironmentVariable",
                std::env::var(var).map_err(|_| {
                    bad(
                        "connectionStringEnvironmentVariable",
                        format!("environment variable {var} is not set"),
                    )
                })?,
            ),
            ConnectionSource::Element(name) => (
                "connectionStringElement",
                self.connection_strings.get(name).cloned().ok_or_else(|| {
                    bad(
                        "connectionStringElement",
                        format!("no connection string named '{name}' in [connectionStrings]"),
                    )
                })?,
            ),
            ConnectionSource::AppSetting(key) => (
                "connectionStringAppSetting",
                self.app_setting(key).map(str::to_string).ok_or_else(|| {
                    bad(
                        "connectionStringAppSetting",
                        format!("no entry named '{key}' in [appSettings]"),
                    )
                })?,
            ),
        };
        let mut config: ClientConfig = text.parse().map_err(|e| bad(attribute, format!("{e}")))?;
        config.near_cache = self.near_cache();
        Ok(config)
    }

    /// The near cache `clientCacheType` and `clientCacheCapacity` describe.
    pub fn near_cache(&self) -> NearCacheConfig {
        match (self.client_cache_type, self.client_cache_capacity) {
            (CacheType::None, _) | (_, Some(0)) => NearCacheConfig::Off,
            (CacheType::Lru, n) => NearCacheConfig::Lru {
                max_objects: n.unwrap_or(100),
            },
            (CacheType::LruMaxMemory, mb) => NearCacheConfig::LruMaxMemory {
                max_bytes: mb.unwrap_or(100).saturating_mul(1 << 20),
            },
        }
    }

    /// The namespace: `namespace`, or the application's name.
    pub fn namespace_or(&self, app_name: &str) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| app_name.to_string())
    }

    /// Checks the settings that depend on each other; the error names the attribute.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.client_config()?;
        if self.cookie_same_site == SameSite::None && !self.cookie_secure {
            return Err(bad(
                "cookieSameSite",
                "None needs cookieSecure=true (browsers refuse it otherwise)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
