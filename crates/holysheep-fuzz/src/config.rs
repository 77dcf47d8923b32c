//! The gateway's config loader (`holysheep_gateway::Settings::from_toml`, `Config::validate`).

use holysheep_gateway::{Config, Settings};

const ORIGIN: &str = "fuzz.toml";

/// Reads `data` (when UTF-8) as a config file and checks:
///
/// - loading and validating never panic, whatever the text;
/// - an error names the file it came from;
/// - settings that load are written by `to_toml` as a file that loads to the same settings.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings = match Settings::from_toml(text, ORIGIN) {
        Ok(settings) => settings,
        Err(e) => {
            assert!(
                e.to_string().starts_with(ORIGIN),
                "an error that does not name the file: {e}"
            );
            return;
        }
    };
    let written = settings.to_toml();
    let again = Settings::from_toml(&written, ORIGIN)
        .unwrap_or_else(|e| panic!("to_toml wrote a file that does not load ({e}):\n{written}"));
    // Debug, not PartialEq: a NaN threshold loads and is written back as `nan`.
    assert_eq!(
        format!("{again:?}"),
        format!("{settings:?}"),
        "settings changed through to_toml:\n{written}"
    );
    for demo in [false, true] {
        let config = Config {
            settings: settings.clone(),
            demo,
            ..Config::default()
        };
        if let Err(e) = config.validate() {
            assert!(!e.to_string().is_empty());
        }
    }
}
