//! Reading metadata costs about as much memory as the metadata holds (issue 33: a header of
//! millions of small keys took ten times its size). Its own test binary, so that no other test
//! allocates while the resident memory is measured.

use std::io::{BufWriter, Write};

use athena_gguf::{GgufFile, Value};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn a_million_small_keys_cost_at_most_twice_their_bytes() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("no /proc: resident memory cannot be measured here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.gguf");
    let n = 1_000_000u64;
    {
        let mut w = BufWriter::new(std::fs::File::create(&path).unwrap());
        w.write_all(b"GGUF").unwrap();
        w.write_all(&3u32.to_le_bytes()).unwrap();
        w.write_all(&0u64.to_le_bytes()).unwrap();
        w.write_all(&n.to_le_bytes()).unwrap();
        for i in 0..n {
            let key = format!("k.{i:07}");
            w.write_all(&(key.len() as u64).to_le_bytes()).unwrap();
            w.write_all(key.as_bytes()).unwrap();
            w.write_all(&0u32.to_le_bytes()).unwrap(); // u8
            w.write_all(&[(i % 251) as u8]).unwrap();
        }
        w.flush().unwrap();
    }
    let before = rss_bytes();
    let file = GgufFile::open(&path).unwrap();
    let after = rss_bytes();
    let header = file.data_offset;
    assert_eq!(file.metadata_len(), n as usize);
    assert_eq!(
        file.get("k.0999999"),
        Some(&Value::U8((999_999 % 251) as u8))
    );
    assert_eq!(file.get("k.1000000"), None);
    assert_eq!(file.keys().nth(5), Some("k.0000005"));
    let cost = after.saturating_sub(before);
    println!(
        "{n} keys, {header} bytes of header: {cost} bytes resident ({:.2}x)",
        cost as f64 / header as f64
    );
    // The mapped header itself (1x) and 20 bytes per 22-byte key.
    assert!(
        cost <= 2 * header,
        "reading {header} bytes of metadata took {cost} bytes"
    );
}
