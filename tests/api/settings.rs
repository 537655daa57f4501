//! The settings tables of `docs/API.md` and the README say what `stockroom --help` does: every
//! flag listed exists, with the environment variable and the default the table gives.

use std::collections::HashMap;
use std::process::Command;

/// Each flag of `--help`: (its environment variable, its default), from lines like
/// `--flag <FLAG>` followed by `… [env: NAME=] [default: VALUE]`.
fn help_flags() -> HashMap<String, (Option<String>, Option<String>)> {
    let output = Command::new(env!("CARGO_BIN_EXE_stockroom"))
        .arg("--help")
        .output()
        .expect("run --help");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let mut flags = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(flag) = trimmed.strip_prefix("--") {
            let name = flag.split_whitespace().next().unwrap_or_default();
            current = Some(format!("--{name}"));
            flags.insert(format!("--{name}"), (None, None));
            continue;
        }
        let Some(flag) = &current else { continue };
        let bracket = |key: &str| {
            let start = trimmed.find(&format!("[{key}: "))? + key.len() + 3;
            let end = trimmed[start..].find(']')? + start;
            Some(trimmed[start..end].trim_end_matches('=').to_owned())
        };
        if let Some(entry) = flags.get_mut(flag) {
            entry.0 = entry.0.take().or_else(|| bracket("env"));
            entry.1 = entry.1.take().or_else(|| bracket("default"));
        }
    }
    flags
}

/// Rows of the markdown tables headed `| flag | env | default | meaning |` in `text`: flags,
/// environment variables and defaults (a row may hold two, as `a` / `b`).
fn documented(text: &str) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| flag | env | default |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || line.starts_with("| ---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let strip = |cell: &str| -> Vec<String> {
            cell.split(" / ")
                .map(|part| part.trim().trim_matches('`').to_owned())
                .collect()
        };
        let (flags, envs, defaults) = (strip(cells[1]), strip(cells[2]), strip(cells[3]));
        for (i, flag) in flags.iter().enumerate() {
            let env = envs.get(i).cloned().unwrap_or_default();
            let default = defaults.get(i).cloned().unwrap_or_default();
            rows.push((flag.clone(), env, default));
        }
    }
    rows
}

#[test]
fn documented_settings_match_the_binary() {
    let help = help_flags();
    for file in ["docs/API.md", "README.md"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("the document");
        let rows = documented(&text);
        assert!(
            rows.len() > 30,
            "{file}: found only {} settings rows",
            rows.len()
        );
        for (flag, env, default) in rows {
            let Some((help_env, help_default)) = help.get(&flag) else {
                // The contract's flags that are not built yet say so in their row.
                assert!(
                    text.lines()
                        .any(|l| l.contains(&format!("`{flag}`"))
                            && l.contains("not implemented yet")),
                    "{file}: {flag} is documented but `stockroom --help` does not know it"
                );
                continue;
            };
            if !env.starts_with('…') && !env.is_empty() {
                assert_eq!(
                    help_env.as_deref(),
                    Some(env.as_str()),
                    "{file}: {flag}'s variable"
                );
            }
            match help_default {
                Some(value) => assert_eq!(value, &default, "{file}: {flag}'s default"),
                None => assert!(
                    matches!(default.as_str(), "unset" | "false"),
                    "{file}: {flag} documents default {default:?}; --help shows none"
                ),
            }
        }
    }
}
