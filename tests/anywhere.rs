//! The binary outside the repository: with no `data/` in the working directory it uses the
//! reference scaler built into it (byte for byte what `data/scaler.json` gives), and
//! `all-in-one` with no CSV loads a generated sample; shell completions and man pages.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(120);

fn run(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = output_with_timeout(
        Command::new(finstream_bin()).args(args).current_dir(cwd),
        WAIT,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn produce_outside_the_repository_uses_the_built_in_reference_scaler() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BinaryBroker::start(&dir.path().join("data-dir"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let parity = root.join("tests/data/parity");
    let input = parity.join("cleaning_parity_in.csv");
    let csv = input.to_str().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let b = broker.addr.as_str();
    let (ok, _, err) = run(
        empty.path(),
        &[
            "produce",
            "--bootstrap-servers",
            b,
            "--topic",
            "anywhere",
            "--csv",
            csv,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("built-in reference scaler"),
        "the log says which scaler: {err}"
    );
    let scaler = root.join("data/scaler.json");
    let args = [
        "produce",
        "--bootstrap-servers",
        b,
        "--topic",
        "in-repo",
        "--csv",
        csv,
        "--scaler",
        scaler.to_str().unwrap(),
    ];
    let (ok, _, err) = run(empty.path(), &args);
    assert!(ok, "{err}");
    let read = |topic: &str| kcat(&["-C", "-b", b, "-t", topic, "-e", "-q", "-f", "%s\n"], b"").1;
    let (built_in, from_file) = (read("anywhere"), read("in-repo"));
    let want = std::fs::read_to_string(parity.join("cleaning_parity_out.jsonl")).unwrap();
    assert_eq!(built_in, want, "the reference output, byte for byte");
    assert_eq!(built_in, from_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_with_no_csv_loads_a_generated_sample() {
    let empty = tempfile::tempdir().unwrap();
    let db = TestDb::new("anywhere").await;
    let args = [
        "all-in-one",
        "--database-url",
        &db.url,
        "--data-dir",
        "fs-data",
        "--listen",
        "127.0.0.1:0",
    ];
    let (ok, out, err) = run(empty.path(), &args);
    assert!(ok, "{out}{err}");
    assert!(err.contains("loading a generated sample"), "{err}");
    assert!(empty.path().join("fs-data/generated-sample.csv").is_file());
    let client = db.client().await;
    assert_eq!(count_rows(&client, "transactions").await, 1_000);
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef finstream"),
        ("fish", "complete -c finstream"),
    ] {
        let (ok, out, err) = run(here, &["completions", shell]);
        assert!(
            ok && out.contains(marker) && out.contains("all-in-one"),
            "{shell}: {err}"
        );
    }
    let (ok, out, _) = run(here, &["man"]);
    assert!(
        ok && out.starts_with(".ie") || out.contains(".TH finstream"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(here, &["man", "--out-dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    for page in [
        "finstream.1",
        "finstream-broker.1",
        "finstream-all-in-one.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}");
    }
}
