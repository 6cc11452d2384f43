//! `athena::signals` in a child process (this test binary run again with one test selected and
//! an environment variable saying which part to play): a memory-mapped file truncated under the
//! reader gives the one-line "file changed while being read" and exit status 1; SIGTERM and
//! SIGINT give 143 and 130 after the cleanup callback; a deferred interrupt only sets the flag.
//! The binaries' own handling (athena-run, athena-eval, athena-verify) is tested end to end in
//! tests/run_cli.rs.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use athena::signals;

const ROLE: &str = "ATHENA_SIGNALS_TEST_ROLE";
const FILE: &str = "ATHENA_SIGNALS_TEST_FILE";

/// Runs this test binary again, only `test`, as `role` with `file`.
fn child(test: &str, role: &str, file: &Path) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(FILE, file)
        .output()
        .unwrap()
}

fn role() -> Option<(String, PathBuf)> {
    Some((
        std::env::var(ROLE).ok()?,
        PathBuf::from(std::env::var_os(FILE)?),
    ))
}

#[test]
fn a_mapped_file_truncated_under_the_reader_is_a_one_line_error() {
    if let Some((role, path)) = role() {
        assert_eq!(role, "sigbus");
        let other = path.with_extension("other");
        std::fs::write(&other, [0u8; 100]).unwrap();
        signals::install("sigbus-test", &[&other, &path]);
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the test truncates the file on purpose; the handler turns the fault into
        // an exit.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let sum: u64 = map[..4096].iter().map(|&b| b as u64).sum();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        // Touch a page past the new end: SIGBUS.
        // SAFETY: an in-bounds read of the mapping (the file behind it is what changed).
        let byte = unsafe { std::ptr::read_volatile(&map[3 * 4096]) };
        println!("read {byte} after truncation ({sum}): no SIGBUS");
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapped.gguf");
    std::fs::write(&path, vec![7u8; 4 * 4096]).unwrap();
    let out = child(
        "a_mapped_file_truncated_under_the_reader_is_a_one_line_error",
        "sigbus",
        &path,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with(&format!(
            "sigbus-test: {}: file changed while being read\n",
            path.display()
        )),
        "{stderr:?}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("changed while being read"))
            .count(),
        1
    );
}

#[test]
fn sigterm_and_sigint_exit_143_and_130_after_the_cleanup() {
    if let Some((role, path)) = role() {
        fn cleanup() {
            athena::container::temp_files::remove_all();
        }
        athena::container::temp_files::register(&path);
        signals::install_with_cleanup("signal-test", &[], cleanup);
        let sig = if role == "term" {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        // SAFETY: sending a signal to this process.
        unsafe { libc::kill(libc::getpid(), sig) };
        std::thread::sleep(std::time::Duration::from_secs(30));
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    for (role, code) in [("term", 143), ("int", 130)] {
        let temp = dir.path().join(format!("out.gguf.tmp-{role}"));
        std::fs::write(&temp, b"partial").unwrap();
        let out = child(
            "sigterm_and_sigint_exit_143_and_130_after_the_cleanup",
            role,
            &temp,
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{role}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!temp.exists(), "{role}: the cleanup did not run");
    }
}

#[test]
fn a_deferred_interrupt_only_sets_the_flag_and_a_second_one_exits() {
    if let Some((role, _)) = role() {
        assert_eq!(role, "defer");
        signals::install("defer-test", &[]);
        signals::defer_interrupts(true);
        // SAFETY: sending a signal to this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
        let start = std::time::Instant::now();
        while signals::interrupted().is_none() && start.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Give the signal thread time to act (it must not exit).
        std::thread::sleep(std::time::Duration::from_millis(200));
        println!("flag {:?}", signals::interrupted());
        // SAFETY: sending a signal to this process.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        std::thread::sleep(std::time::Duration::from_secs(30));
        std::process::exit(0);
    }
    let out = child(
        "a_deferred_interrupt_only_sets_the_flag_and_a_second_one_exits",
        "defer",
        Path::new("-"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("flag Some(2)"), "{stdout}");
    assert_eq!(out.status.code(), Some(143), "{stdout}");
}
