//! `grid-node --config FILE`: the node's flags in a TOML file, one key per flag without
//! its dashes (`site = "east"`, `geo-listen = "10.0.0.5:7300"`, `remote-store =
//! ["west=10.0.1.5:7300"]`). The file's settings come first on the command line, so
//! flags given there override them (and repeatable flags add to them). A key that is not
//! a flag is an error naming it.

use anyhow::{bail, Context};

/// Flags that take no value: `true` writes the flag, `false` nothing.
const SWITCHES: [&str; 1] = ["fault-injection"];

/// The arguments `text` stands for.
pub fn args_from_toml(text: &str) -> anyhow::Result<Vec<String>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut args = Vec::new();
    for (key, value) in &table {
        if key == "config" || key.starts_with('-') {
            bail!("'{key}' is not a setting of the config file");
        }
        let flag = format!("--{key}");
        let mut push = |v: &toml::Value| -> anyhow::Result<()> {
            match v {
                toml::Value::Boolean(b) if SWITCHES.contains(&key.as_str()) => {
                    if *b {
                        args.push(flag.clone());
                    }
                }
                toml::Value::String(s) => args.extend([flag.clone(), s.clone()]),
                toml::Value::Integer(n) => args.extend([flag.clone(), n.to_string()]),
                toml::Value::Boolean(b) => args.extend([flag.clone(), b.to_string()]),
                other => bail!(
                    "'{key}': expected a string, number or boolean, not {}",
                    other.type_str()
                ),
            }
            Ok(())
        };
        match value {
            toml::Value::Array(items) => {
                for item in items {
                    push(item)?;
                }
            }
            single => push(single)?,
        }
    }
    Ok(args)
}

/// The command line with `--config FILE` replaced by the file's settings (placed first,
/// so the command line's own flags override them).
pub fn expand(argv: Vec<String>) -> anyhow::Result<Vec<String>> {
    let mut rest = Vec::new();
    let mut path = None;
    let mut iter = argv.into_iter();
    let program = iter.next().unwrap_or_else(|| "grid-node".into());
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            path = Some(iter.next().context("--config needs a file")?);
        } else if let Some(p) = arg.strip_prefix("--config=") {
            path = Some(p.to_string());
        } else {
            rest.push(arg);
        }
    }
    let mut args = vec![program];
    if let Some(path) = path {
        let text = std::fs::read_to_string(&path).with_context(|| format!("--config {path}"))?;
        args.extend(args_from_toml(&text).with_context(|| format!("--config {path}"))?);
    }
    args.extend(rest);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_flags_and_arrays_repeat() {
        let args = args_from_toml(
            r#"
            site = "east"
            geo-listen = "127.0.0.1:7300"
            remote-store = ["west=127.0.0.1:7400", "north=127.0.0.1:7500"]
            partitions = 32
            fault-injection = true
            evict-on-low-memory = false
            "#,
        )
        .unwrap();
        let text = args.join(" ");
        for want in [
            "--site east",
            "--geo-listen 127.0.0.1:7300",
            "--remote-store west=127.0.0.1:7400 --remote-store north=127.0.0.1:7500",
            "--partitions 32",
            "--evict-on-low-memory false",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(args.contains(&"--fault-injection".to_string()));
    }

    #[test]
    fn command_line_flags_come_after_the_file() {
        let path = std::env::temp_dir().join(format!("grid-node-config-{}", std::process::id()));
        std::fs::write(&path, "site = \"east\"\n").unwrap();
        let argv = [
            "grid-node",
            "--config",
            path.to_str().unwrap(),
            "--site",
            "west",
        ]
        .map(String::from)
        .to_vec();
        let args = expand(argv).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(args, ["grid-node", "--site", "east", "--site", "west"]);
        assert!(args_from_toml("site = [[1]]").is_err());
        assert!(args_from_toml("nonsense").is_err());
    }
}
