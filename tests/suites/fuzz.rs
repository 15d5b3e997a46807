//! A bounded, seeded fuzz run over every parser that reads untrusted input
//! (`image_replication_operator::fuzzing`): the seeds, the regression inputs under
//! `tests/fuzz/regressions/<target>/`, then mutations of them. Deterministic: the same seed gives
//! the same inputs, so a failure here reproduces. `FUZZ_ITERATIONS` (default 3000 per target) and
//! `FUZZ_SEED` widen or change the run; `cargo +nightly fuzz run <target>` in `fuzz/` runs the
//! same targets coverage-guided.
//!
//! A panic prints the target and the input, and writes the input to
//! `target/fuzz-failures/<target>-<n>`: copy it into `tests/fuzz/regressions/<target>/` with
//! the fix.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use image_replication_operator::fuzzing::{Target, targets};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Bytes that matter to the parsers: delimiters of JSON, XML, references, headers, globs,
/// digits and units.
const INTERESTING: &[u8] = b"\0\"\\{}[]:,<>/&;=@?*-.+ \t\r\n0123456789eEkKMGTiImshd%";
const TOKENS: &[&str] = &[
    "null",
    "true",
    "-1",
    "1e309",
    "18446744073709551616",
    "\"\"",
    "[]",
    "{}",
    "&amp;",
    "&#x0;",
    "<![CDATA[",
    "<!--",
    "**",
    "\\u0000",
    "sha256:",
    "https://",
    "[::1]",
    "%00",
    "\u{fffd}",
    "\u{10ffff}",
];
const MAX_LEN: usize = 1 << 16;

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                v.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64) + 1);
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // Repeat a slice (deep nesting, long runs).
                let i = rng.below(len);
                let n = rng.below((len - i).min(32)) + 1;
                let piece = v[i..i + n].to_vec();
                for _ in 0..rng.below(64) + 1 {
                    if v.len() + n > MAX_LEN {
                        break;
                    }
                    v.splice(i..i, piece.iter().copied());
                }
            }
            5 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
            6 if !corpus.is_empty() => {
                // Splice with another input.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => v.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/regressions")
        .join(target);
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            out.push(std::fs::read(p).unwrap());
        }
    }
    out
}

fn show(input: &[u8]) -> String {
    let s = String::from_utf8_lossy(&input[..input.len().min(2000)]);
    format!("{s:?} ({} bytes)", input.len())
}

/// Run `t` on `input`; on a panic save the input and return the failure.
fn run_one(t: &Target, input: &[u8], n: usize) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| (t.run)(input))) {
        Ok(()) => Ok(()),
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{}-{n}", t.name));
            let _ = std::fs::write(&path, input);
            Err(format!(
                "{}: panicked ({why}) on {} — saved to {}",
                t.name,
                show(input),
                path.display()
            ))
        }
    }
}

#[test]
fn every_parser_survives_seeds_regressions_and_mutations() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_ef01);
    // The panics are caught and reported with their input; keep the default hook quiet.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut runs = 0usize;
    for t in targets() {
        let mut corpus: Vec<Vec<u8>> = t.seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
        corpus.extend(regressions(t.name));
        corpus.push(Vec::new());
        for (n, input) in corpus.iter().enumerate() {
            runs += 1;
            if let Err(f) = run_one(t, input, n) {
                failures.push(f);
            }
        }
        let mut rng = Rng(seed ^ (t.name.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for n in 0..iterations {
            let base = corpus[rng.below(corpus.len())].clone();
            let input = mutate(&mut rng, &base, &corpus);
            runs += 1;
            if let Err(f) = run_one(t, &input, corpus.len() + n) {
                failures.push(f);
                break; // one input per target is enough to act on
            }
        }
    }
    std::panic::set_hook(hook);
    println!("fuzz: {} targets, {runs} inputs, seed {seed:#x}", targets().len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_libfuzzer_crate_has_a_binary_for_every_target() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for t in targets() {
        let src = root.join("fuzz_targets").join(format!("{}.rs", t.name));
        let code = std::fs::read_to_string(&src).unwrap_or_else(|_| panic!("{} missing", src.display()));
        assert!(
            code.contains(&format!("fuzzing::run(\"{}\"", t.name)),
            "{}",
            src.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "fuzz/Cargo.toml lacks [[bin]] {}",
            t.name
        );
    }
}
