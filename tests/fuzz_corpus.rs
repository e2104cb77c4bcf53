//! Replays every fuzz input kept in the repository through the fuzz targets' code, on
//! stable Rust: the seeds (`finstream_broker::fuzzing::seeds`), the minimized corpora in
//! `fuzz/corpus/<target>/`, and the crashes found so far in `fuzz/regressions/<target>/`
//! (each was a bug; each must now pass). `scripts/fuzz.sh` runs the fuzzers themselves.

use std::path::Path;

fn run(target: &str, data: &[u8]) {
    match target {
        "frames" => finstream_broker::fuzzing::frames(data),
        "request" => finstream_broker::fuzzing::request(bytes::Bytes::copy_from_slice(data)),
        "record_batch" => finstream_broker::fuzzing::record_batch(data),
        "csv_file" => finstream_producer::fuzzing::csv_file(data),
        "description" => finstream_producer::fuzzing::description(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

const TARGETS: [&str; 5] = [
    "frames",
    "request",
    "record_batch",
    "csv_file",
    "description",
];

#[test]
fn seeds_are_accepted_by_the_broker() {
    let seeds = finstream_broker::fuzzing::seeds();
    assert!(seeds.len() >= 20, "{} seeds", seeds.len());
    for (target, name, data) in &seeds {
        run(target, data);
        if *target == "record_batch" {
            assert!(
                finstream_broker::batch::validate(data, 1 << 20).is_ok(),
                "seed {name} is a valid batch"
            );
        }
    }
}

#[test]
fn kept_corpora_and_regressions_replay_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        for target in TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                eprintln!("{kind}/{target}/{}", entry.file_name().to_string_lossy());
                run(target, &data);
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no corpus under {}", root.display());
}

/// Writes the seeds as files for the fuzzers: `FUZZ_SEEDS_DIR=dir cargo test --test
/// fuzz_corpus -- --ignored` (scripts/fuzz.sh does it).
#[test]
#[ignore = "a tool for scripts/fuzz.sh, not a check"]
fn write_seeds() {
    let dir = std::env::var("FUZZ_SEEDS_DIR").expect("FUZZ_SEEDS_DIR");
    for (target, name, data) in finstream_broker::fuzzing::seeds() {
        let d = Path::new(&dir).join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    }
    for (name, data) in [
        ("sample", &b"Date,Description,Amount\n2024-01-02,Coffee Shop 42,3.50\n2024-01-03,\"Rent, March\",-900\n"[..]),
        ("bom-crlf", &b"\xef\xbb\xbfDescription,Amount\r\nPAYPAL *SHOP1,12\r\n"[..]),
    ] {
        let d = Path::new(&dir).join("csv_file");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
        let d = Path::new(&dir).join("description");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), data).unwrap();
    }
}
