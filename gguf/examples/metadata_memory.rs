//! How much memory reading a GGUF file's metadata costs: writes a file of N small keys (each a
//! 9-byte name and a u8 value, 22 bytes on disk) and reads it, printing the reader process's
//! peak resident memory against the metadata bytes.
//!
//!   cargo run --release -p athena-gguf --example metadata_memory -- write /tmp/keys.gguf 8000000
//!   cargo run --release -p athena-gguf --example metadata_memory -- read /tmp/keys.gguf
//!
//! Reading runs in its own process so its peak is the reader's alone (the peak includes the
//! mapped file pages the parser touched).

use std::io::{BufWriter, Write};
use std::path::Path;

use athena_gguf::GgufFile;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn write(path: &Path, n: u64) -> std::io::Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&0u64.to_le_bytes())?;
    w.write_all(&n.to_le_bytes())?;
    for i in 0..n {
        let key = format!("k.{i:07}");
        w.write_all(&(key.len() as u64).to_le_bytes())?;
        w.write_all(key.as_bytes())?;
        w.write_all(&0u32.to_le_bytes())?; // u8
        w.write_all(&[(i % 251) as u8])?;
    }
    w.flush()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("write"), Some(path)) => {
            let n = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or(8_000_000);
            write(Path::new(path), n).expect("writing the file");
        }
        (Some("read"), Some(path)) => {
            let before = status_kib("VmRSS:");
            let start = std::time::Instant::now();
            let file = GgufFile::open(Path::new(path)).expect("a valid file");
            let secs = start.elapsed().as_secs_f64();
            let keys = file.metadata_len();
            let probe = file.get("k.0000007").and_then(|v| v.as_u64());
            let peak = status_kib("VmHWM:");
            let bytes = file.data_offset;
            println!(
                "{keys} keys, {:.1} MB of header; peak RSS {:.1} MB ({:.1} MB before open) = {:.2}x the header; open {secs:.2} s; probe {probe:?}",
                bytes as f64 / 1e6,
                peak as f64 * 1024.0 / 1e6,
                before as f64 * 1024.0 / 1e6,
                peak as f64 * 1024.0 / bytes as f64,
            );
        }
        _ => eprintln!("usage: metadata_memory write FILE [N] | read FILE"),
    }
}
