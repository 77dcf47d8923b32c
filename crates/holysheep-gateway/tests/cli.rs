//! The `holysheep-gateway` binary's configuration as an operator meets it: flags, environment
//! variables and a TOML file, checked with `--check-config` in a child process whose environment
//! the test sets (the test process's own environment is never touched).

use std::process::{Command, Output};

fn gateway(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_holysheep-gateway"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        "[cache]\nttl_secs = 10\nmax_entry_bytes = 2048\n[retry]\nmax_retries = 1\n\
         deadline_secs = 9\n",
    )
    .expect("the file is written");
    let file = file.to_str().expect("a UTF-8 path");

    let out = gateway(
        &["--check-config", "--config", file, "--max-retries", "2"],
        &[
            ("HOLYSHEEP_CACHE_TTL", "20"),
            ("HOLYSHEEP_MAX_RETRIES", "5"),
            ("HOLYSHEEP_RETRY_DEADLINE_SECS", "30"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let settings: toml::Table = text.parse().expect("the output is TOML");
    let value = |section: &str, key: &str| settings[section].get(key).cloned();
    // A flag beats the environment and the file.
    assert_eq!(value("retry", "max_retries"), Some(2.into()), "{text}");
    // The environment beats the file.
    assert_eq!(value("cache", "ttl_secs"), Some(20.into()), "{text}");
    assert_eq!(value("retry", "deadline_secs"), Some(30.into()), "{text}");
    // The file beats the default.
    assert_eq!(
        value("cache", "max_entry_bytes"),
        Some(2048.into()),
        "{text}"
    );
    // What nothing sets is shown with its crate's default.
    assert_eq!(value("pool", "max_in_flight"), None, "{text}");
    assert!(text.contains("# max_in_flight: default, 100"), "{text}");
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let out = gateway(
        &["--check-config"],
        &[("HOLYSHEEP_LISTEN", ""), ("HOLYSHEEP_CACHE_TTL", "")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("# listen: default, 127.0.0.1:8080"));
}

#[test]
fn secrets_come_from_the_environment_and_are_never_printed() {
    let out = gateway(
        &["--check-config"],
        &[
            ("HOLYSHEEP_API_KEY", "sk-upstream-secret"),
            ("HOLYSHEEP_GATEWAY_KEYS", "key-one,key-two"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("sk-upstream-secret"), "{all}");
    assert!(!all.contains("key-one"), "{all}");
    // There is no flag that takes a secret.
    let out = gateway(&["--check-config", "--api-key", "sk-x"], &[]);
    assert!(!out.status.success());
}

#[test]
fn bad_values_stop_the_start_and_say_which() {
    for (args, env, says) in [
        (
            vec!["--check-config", "--client-read-timeout-secs", "0"],
            vec![],
            "client.read_timeout_secs",
        ),
        (
            vec!["--check-config"],
            vec![("HOLYSHEEP_CACHE_TTL", "soon")],
            "--cache-ttl",
        ),
        (
            vec!["--check-config", "--cache-key-scheme", "seed"],
            vec![],
            "python-compat",
        ),
        (
            vec!["--check-config", "--listen", "0.0.0.0:8080"],
            vec![],
            "HOLYSHEEP_GATEWAY_KEYS",
        ),
        // Out of range, not only zero: a year-long queue wait, a zero backoff, a TTL of
        // thirty thousand years.
        (
            vec!["--check-config", "--pool-queue-timeout-ms", "31536000000"],
            vec![],
            "pool.queue_timeout_ms",
        ),
        (
            vec!["--check-config"],
            vec![("HOLYSHEEP_RETRY_BASE_MS", "0")],
            "retry.base_ms",
        ),
        (
            vec!["--check-config", "--cache-ttl", "999999999999"],
            vec![],
            "cache.ttl_secs",
        ),
    ] {
        let out = gateway(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_unknown_file_key_is_named_with_its_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "[pool]\nmax_inflight = 3\n").expect("the file is written");
    let out = gateway(
        &["--check-config", "--config", file.to_str().expect("UTF-8")],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("max_inflight") && err.contains("line 2"),
        "{err}"
    );
}
