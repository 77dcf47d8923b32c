//! The settings are documented in three places besides the code: the README's table, the
//! example TOML file and `--help`. This test keeps all three in step with the settings and with
//! the defaults of the crates that own them ([`holysheep_gateway::config::default_of`]).

use std::collections::BTreeMap;

use clap::CommandFactory;
use holysheep_gateway::Cli;
use holysheep_gateway::config::default_of;

const README: &str = include_str!("../../../README.md");
const EXAMPLE: &str = include_str!("../gateway.example.toml");

/// One row of the README's settings table.
#[derive(Debug)]
struct Row {
    flag: String,
    env: String,
    default: String,
}

/// The rows between the `settings:begin` and `settings:end` markers, by TOML key.
fn readme_rows() -> BTreeMap<String, Row> {
    let start = README
        .find("<!-- settings:begin -->")
        .expect("the README marks its settings table");
    let end = README[start..]
        .find("<!-- settings:end -->")
        .expect("the settings table ends")
        + start;
    let mut rows = BTreeMap::new();
    for line in README[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|cell| cell.trim().trim_matches('`').to_owned())
            .collect();
        assert_eq!(cells.len(), 4, "a row has key, flag, env, default: {line}");
        let row = Row {
            flag: cells[1].clone(),
            env: cells[2].clone(),
            default: cells[3].clone(),
        };
        assert!(rows.insert(cells[0].clone(), row).is_none(), "{line}");
    }
    rows
}

/// The example file's settings, `section.field` to the value as the docs write it.
fn example_values() -> BTreeMap<String, String> {
    let table: toml::Table = EXAMPLE.parse().expect("the example file is TOML");
    let mut values = BTreeMap::new();
    for (section, fields) in table {
        let fields = fields.as_table().expect("every top-level key is a section");
        for (field, value) in fields {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(items) if items.is_empty() => "none".to_owned(),
                other => other.to_string(),
            };
            values.insert(format!("{section}.{field}"), text);
        }
    }
    values
}

#[test]
fn readme_example_file_and_help_agree_with_the_crates_defaults() {
    let rows = readme_rows();
    let example = example_values();
    let command = Cli::command();
    let args: BTreeMap<String, &clap::Arg> = command
        .get_arguments()
        .map(|arg| (arg.get_id().to_string(), arg))
        .collect();

    let readme_keys: Vec<&String> = rows.keys().collect();
    let example_keys: Vec<&String> = example.keys().collect();
    assert_eq!(
        readme_keys, example_keys,
        "the README table and the example file list the same settings"
    );

    for (key, row) in &rows {
        let default = default_of(key).unwrap_or_else(|| panic!("{key} is not a setting"));
        assert_eq!(row.default, default, "README default of {key}");
        assert_eq!(example[key], default, "example file value of {key}");

        let field = key.rsplit('.').next().expect("section.field");
        let arg = args
            .get(field)
            .unwrap_or_else(|| panic!("{key} has no flag"));
        assert_eq!(
            row.flag,
            format!("--{}", arg.get_long().expect("a long flag")),
            "README flag of {key}"
        );
        let env = arg
            .get_env()
            .map(|env| env.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(row.env, env, "README environment variable of {key}");
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        assert!(
            help.contains(&format!("[default: {default}")),
            "--help of {key} shows its default {default:?}: {help}"
        );
    }

    // Every flag of a setting is in the table (the others are the few listed apart).
    let others = ["demo", "config", "check_config", "help", "version"];
    for id in args.keys().filter(|id| !others.contains(&id.as_str())) {
        assert!(
            rows.keys().any(|key| key.ends_with(&format!(".{id}"))),
            "--{id} is missing from the README table"
        );
    }
}
