//! `ithn-dist --help` and every subcommand's `--help` describe every option (issue 2, acceptance 5).
//! Walks the real clap command tree of the library and runs the real binary's `--help`.

use clap::CommandFactory;
use ithn_dist::cli::Cli;

fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>, all: &mut Vec<String>) {
    all.push(path.to_string());
    if cmd.get_about().is_none() && path.contains(' ') {
        missing.push(format!("{path}: subcommand has no description"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path}: option `{id}` has no help text"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        walk(sub, &format!("{path} {}", sub.get_name()), missing, all);
    }
}

#[test]
fn every_option_of_every_subcommand_is_described() {
    let cmd = Cli::command();
    let (mut missing, mut all) = (vec![], vec![]);
    walk(&cmd, "ithn-dist", &mut missing, &mut all);
    assert!(missing.is_empty(), "undocumented: {missing:#?}");
    assert!(
        all.len() > 2,
        "the command tree is suspiciously small: {all:?}"
    );
}

#[test]
fn help_runs_for_every_subcommand() {
    let cmd = Cli::command();
    let (mut missing, mut all) = (vec![], vec![]);
    walk(&cmd, "ithn-dist", &mut missing, &mut all);
    for path in all {
        let mut args: Vec<&str> = path.split(' ').skip(1).collect();
        args.push("--help");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
            .args(&args)
            .output()
            .expect("run ithn-dist");
        assert!(out.status.success(), "{path} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Usage:"),
            "{path} --help printed no usage:\n{text}"
        );
    }
}

/// Logging is set up once for every command, not only for those that run on ranks: with
/// `--log-dir`, even `config show` opens this rank's JSON log (before, only train, evaluate,
/// drill and world did, and `prepare`'s log lines were dropped).
#[test]
fn every_command_sets_up_logging() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .arg("--log-dir")
        .arg(&logs)
        .args(["config", "show", "--config"])
        .arg(&config)
        .output()
        .expect("run ithn-dist");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.join("rank-0.jsonl").is_file(),
        "no log file in {logs:?}"
    );
}
