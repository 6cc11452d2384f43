//! The paths a conversion reads and writes, checked before any work. Inputs: readable regular
//! files. OUT: a regular file or a new name (not a directory, not a device such as /dev/null),
//! in a directory where a file can be created, and never one of the files the run reads
//! (compared by canonical path, so a symlink is caught, and by device and inode, so a hard
//! link is too).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// Checks that OUT can be written: it is a regular file or does not exist yet, and its
/// directory exists and takes a new file (tried with a probe file, removed at once, so a
/// read-only or full location fails now rather than after the conversion). The error is one
/// line naming OUT.
pub fn check_location(out: &Path) -> Result<(), String> {
    let name = out.display();
    if let Ok(meta) = std::fs::metadata(out) {
        if meta.is_dir() {
            return Err(format!("{name}: is a directory; OUT must be a file path"));
        }
        if !meta.is_file() {
            return Err(format!(
                "{name}: is not a regular file (a device, pipe or socket); the output is \
                 written beside OUT and renamed onto it, which would replace it"
            ));
        }
    }
    let Some(file_name) = out.file_name() else {
        return Err(format!("{name}: does not end in a file name"));
    };
    let dir = parent_dir(out);
    if !dir.is_dir() {
        return Err(format!(
            "{name}: directory {} does not exist",
            dir.display()
        ));
    }
    let mut probe_name = file_name.to_os_string();
    probe_name.push(format!(".probe-{}", std::process::id()));
    let probe = dir.join(probe_name);
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "{name}: cannot create a file in {}: {e}",
            dir.display()
        )),
    }
}

/// Checks that OUT is none of `inputs` (the files this run reads; those that do not exist are
/// skipped). The error is one line naming OUT and the input.
pub fn check_not_an_input(out: &Path, inputs: &[PathBuf]) -> Result<(), String> {
    let out_meta = std::fs::metadata(out).ok();
    // OUT may not exist yet: its directory's canonical path and its name.
    let out_path = match (out.canonicalize(), out.file_name()) {
        (Ok(p), _) => Some(p),
        (Err(_), Some(file_name)) => parent_dir(out)
            .canonicalize()
            .ok()
            .map(|d| d.join(file_name)),
        (Err(_), None) => None,
    };
    for input in inputs {
        let same_path = match (&out_path, input.canonicalize()) {
            (Some(o), Ok(i)) => *o == i,
            _ => false,
        };
        let same_file = match (&out_meta, std::fs::metadata(input)) {
            (Some(o), Ok(i)) => same_inode(o, &i),
            _ => false,
        };
        if same_path || same_file {
            let how = if same_path { "is" } else { "is a hard link to" };
            return Err(format!(
                "{}: {how} {}, an input of this conversion; writing OUT would replace it \
                 (choose another output path)",
                out.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// Checks that an input given by `option` (e.g. `--calib`) is a regular file this process can
/// open for reading. The error is one line naming the option and the path.
pub fn check_readable_file(path: &Path, option: &str) -> Result<(), String> {
    let fail = |what: String| Err(format!("{option} {}: {what}", path.display()));
    match std::fs::metadata(path) {
        Err(e) => return fail(e.to_string()),
        Ok(m) if m.is_dir() => return fail("is a directory, not a text file".into()),
        Ok(m) if !m.is_file() => return fail("is not a regular file".into()),
        Ok(_) => {}
    }
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(e) => fail(e.to_string()),
    }
}

/// The directory a path names a file in ("." for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(unix)]
fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_inode(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_may_not_be_an_input_by_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("model.safetensors");
        std::fs::write(&input, b"weights").unwrap();
        let inputs = vec![input.clone()];
        // The same path, spelled another way.
        let dotted = dir.path().join(".").join("model.safetensors");
        let e = check_not_an_input(&dotted, &inputs).unwrap_err();
        assert!(e.contains("an input of this conversion"), "{e}");
        // A symlink to it, and a hard link to it.
        let link = dir.path().join("link.gguf");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        assert!(check_not_an_input(&link, &inputs).is_err());
        let hard = dir.path().join("hard.gguf");
        std::fs::hard_link(&input, &hard).unwrap();
        let e = check_not_an_input(&hard, &inputs).unwrap_err();
        assert!(e.contains("is a hard link to"), "{e}");
        // A new file beside it, and an input that does not exist, are fine.
        let new = dir.path().join("out.gguf");
        let absent = dir.path().join("tokenizer_config.json");
        assert!(check_not_an_input(&new, &[input, absent]).is_ok());
    }

    #[test]
    fn inputs_must_be_readable_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_readable_file(dir.path(), "--calib").unwrap_err();
        assert!(e.starts_with("--calib ") && e.ends_with("is a directory, not a text file"));
        let e = check_readable_file(&dir.path().join("none.txt"), "--eval-text").unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        let text = dir.path().join("t.txt");
        std::fs::write(&text, "text").unwrap();
        check_readable_file(&text, "--calib").unwrap();
    }

    #[test]
    fn out_must_be_a_regular_file_in_a_writable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_location(dir.path()).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_location(Path::new("/dev/null")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = check_location(&dir.path().join("no/such/out.gguf")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        // /proc takes no new files, whoever runs the test.
        let e = check_location(Path::new("/proc/athena-out.gguf")).unwrap_err();
        assert!(e.contains("cannot create a file in /proc"), "{e}");
        let out = dir.path().join("out.gguf");
        check_location(&out).unwrap();
        std::fs::write(&out, b"old").unwrap();
        check_location(&out).unwrap();
        // The probe is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
