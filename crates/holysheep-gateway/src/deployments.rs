//! Several upstreams: the `[[deployments]]` and `[fallbacks]` tables of the TOML file, checked
//! and turned into a [`Router`] (`holysheep-router`).
//!
//! ```toml
//! [[deployments]]
//! name = "team-a"                      # shown in logs; default: its base URL
//! base_url = "https://api.holysheep.ai/v1"
//! api_key_env = "HOLYSHEEP_API_KEY_A"  # the variable holding its key; default: HOLYSHEEP_API_KEY
//! weight = 2                           # default 1
//! models = ["gpt-4.1", "claude-sonnet-4.5"]   # default: every model
//!
//! [fallbacks]
//! "gpt-4.1" = ["claude-sonnet-4.5", "deepseek-v3.2"]
//! ```
//!
//! They exist in the file only (a list of tables has no flag), and keys never do: a deployment
//! names the environment variable that holds its key. With no `[[deployments]]`, the one
//! upstream of `[client]` is used as before. Each deployment gets a client configured by
//! `[client]` (but its own base URL and key) and a pool limit of its own configured by `[pool]`;
//! `[router]` tunes balancing and health.

use std::collections::BTreeMap;
use std::time::Duration;

use holysheep::router::{Deployment, HealthConfig, Router};
use serde::{Deserialize, Serialize};

use crate::config::{API_KEY_ENV, Config, ConfigError, Settings};

/// One `[[deployments]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSettings {
    /// Shown in logs and `/readyz` failures; default: its base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its OpenAI-compatible base URL.
    pub base_url: String,
    /// The environment variable that holds its key; default: `HOLYSHEEP_API_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Its share of traffic against the others of a model; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The models it serves; default: every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

/// The largest weight a deployment may have.
pub const MAX_WEIGHT: u32 = 1000;

/// Rejects deployments and fallbacks that cannot work, naming the entry.
pub(crate) fn validate(settings: &Settings) -> Result<(), ConfigError> {
    for (i, d) in settings.deployments.iter().enumerate() {
        let which = d
            .name
            .clone()
            .unwrap_or_else(|| format!("deployments[{i}]"));
        if !d.base_url.starts_with("http://") && !d.base_url.starts_with("https://") {
            return Err(ConfigError::new(format!(
                "deployment {which}: base_url must start with http:// or https://"
            )));
        }
        if let Some(weight) = d.weight
            && !(1..=MAX_WEIGHT).contains(&weight)
        {
            return Err(ConfigError::new(format!(
                "deployment {which}: weight must be between 1 and {MAX_WEIGHT}, not {weight}"
            )));
        }
    }
    if !settings.fallbacks.is_empty() && settings.deployments.is_empty() {
        return Err(ConfigError::new(
            "[fallbacks] needs [[deployments]]: fallbacks are served by the router".to_owned(),
        ));
    }
    for (model, then) in &settings.fallbacks {
        if then.iter().any(|m| m == model) {
            return Err(ConfigError::new(format!(
                "fallbacks.\"{model}\" lists the model itself"
            )));
        }
    }
    Ok(())
}

/// The key of a deployment: from the variable it names, else the gateway's upstream key.
fn key_of(d: &DeploymentSettings, config: &Config) -> Result<Option<String>, ConfigError> {
    match &d.api_key_env {
        None => Ok(config.api_key.as_ref().map(|k| k.expose().to_owned())),
        Some(name) if name == API_KEY_ENV => {
            Ok(config.api_key.as_ref().map(|k| k.expose().to_owned()))
        }
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_owned())),
            _ => Err(ConfigError::new(format!(
                "deployment {}: its key variable {name} is not set",
                d.name.as_deref().unwrap_or(&d.base_url)
            ))),
        },
    }
}

/// The router over the configured deployments, `None` without any. `client` gives each
/// deployment's client its `[client]` settings, `pool` its own pool limit of `[pool]`.
pub(crate) fn router(
    config: &Config,
    client: impl Fn() -> holysheep::client::Builder,
    pool: impl Fn() -> holysheep::pool_limit::PoolLimitLayer,
) -> Result<Option<Router>, ConfigError> {
    let s = &config.settings;
    if s.deployments.is_empty() {
        return Ok(None);
    }
    let mut builder = Router::builder();
    for d in &s.deployments {
        let mut c = client().base_url(d.base_url.clone());
        if let Some(key) = key_of(d, config)? {
            c = c.api_key(key);
        }
        let mut deployment = Deployment::from_client(c)
            .name(d.name.clone().unwrap_or_else(|| d.base_url.clone()))
            .models(d.models.iter().cloned())
            .pool_limit(pool());
        if let Some(weight) = d.weight {
            deployment = deployment.weight(weight);
        }
        builder = builder.deployment(deployment);
    }
    for (model, then) in &s.fallbacks {
        builder = builder.fallback(model.clone(), then.iter().cloned());
    }
    let r = &s.router;
    let mut health = HealthConfig::default();
    if let Some(n) = r.eject_after_failures {
        health = health.consecutive_failures(n);
    }
    if let Some(ms) = r.ejection_ms {
        health = health.base_ejection(Duration::from_millis(ms));
    }
    builder = builder.health(health).first_byte_timeout(
        r.first_byte_timeout_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis),
    );
    builder
        .build()
        .map(Some)
        .map_err(|e| ConfigError::new(format!("{e}")))
}

/// The `[[deployments]]` and `[fallbacks]` of `settings` as TOML, for `--check-config`; empty
/// without any.
pub(crate) fn to_toml(settings: &Settings) -> String {
    #[derive(Serialize)]
    struct Routing<'a> {
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        deployments: &'a [DeploymentSettings],
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        fallbacks: &'a BTreeMap<String, Vec<String>>,
    }
    toml::to_string(&Routing {
        deployments: &settings.deployments,
        fallbacks: &settings.fallbacks,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, "test.toml")
    }

    #[test]
    fn deployments_and_fallbacks_parse_and_print_back() {
        let s = settings(
            r#"
            [[deployments]]
            name = "a"
            base_url = "https://a.example/v1"
            weight = 3
            models = ["gpt-4.1"]

            [[deployments]]
            base_url = "https://b.example/v1"
            api_key_env = "KEY_B"

            [fallbacks]
            "gpt-4.1" = ["claude-sonnet-4.5", "deepseek-v3.2"]
            "#,
        )
        .unwrap();
        assert_eq!(s.deployments.len(), 2);
        assert_eq!(s.deployments[0].weight, Some(3));
        assert_eq!(s.deployments[1].api_key_env.as_deref(), Some("KEY_B"));
        assert_eq!(
            s.fallbacks["gpt-4.1"],
            ["claude-sonnet-4.5", "deepseek-v3.2"]
        );
        validate(&s).unwrap();
        // `--check-config` writes them back as a file that loads to the same settings.
        let again = settings(&s.to_toml()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn the_routing_example_file_is_valid() {
        let s = settings(include_str!("../routing.example.toml")).unwrap();
        assert_eq!(s.deployments.len(), 3);
        assert_eq!(s.fallbacks.len(), 2);
        assert_eq!(s.router.first_byte_timeout_ms, Some(5000));
        validate(&s).unwrap();
    }

    #[test]
    fn keys_never_come_from_the_file() {
        let error = settings(
            r#"
            [[deployments]]
            base_url = "https://a.example/v1"
            api_key = "sk-secret"
            "#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("api_key"), "{error}");
    }

    #[test]
    fn bad_entries_are_named() {
        let s = settings(
            r#"
            [[deployments]]
            name = "a"
            base_url = "a.example/v1"
            "#,
        )
        .unwrap();
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("deployment a")
        );
        let s = settings(
            r#"
            [[deployments]]
            base_url = "https://a.example/v1"
            weight = 0
            "#,
        )
        .unwrap();
        assert!(validate(&s).unwrap_err().to_string().contains("weight"));
        let s = settings("[fallbacks]\n\"gpt-4.1\" = [\"deepseek-v3.2\"]\n").unwrap();
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .contains("[[deployments]]")
        );
        let s = settings(
            r#"
            [[deployments]]
            base_url = "https://a.example/v1"
            [fallbacks]
            "gpt-4.1" = ["gpt-4.1"]
            "#,
        )
        .unwrap();
        assert!(validate(&s).unwrap_err().to_string().contains("itself"));
    }

    #[test]
    fn a_missing_key_variable_is_an_error() {
        let s = settings(
            r#"
            [[deployments]]
            name = "b"
            base_url = "https://b.example/v1"
            api_key_env = "HOLYSHEEP_TEST_SURELY_UNSET_KEY_VARIABLE"
            "#,
        )
        .unwrap();
        let config = Config {
            settings: s,
            ..Config::default()
        };
        let error = router(
            &config,
            holysheep::client::HolySheepClient::builder,
            Default::default,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("HOLYSHEEP_TEST_SURELY_UNSET_KEY_VARIABLE")
        );
    }
}
