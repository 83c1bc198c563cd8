//! The one file writer of the state directory: private (0600) files, and
//! the one public (0644) file, [`super::operator_hint`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// `<name>.<pid>.<n>.tmp` beside `path`: unique to this process and write.
fn temp_name(path: &Path) -> PathBuf {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Removes `<name>.<pid>.<n>.tmp` files of processes that are gone (a
/// writer killed between create and rename).
fn sweep_dead_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('.') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u64>()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably, readable by root
/// only: a 0600 temp file of this writer's own beside it, fsync, rename,
/// directory fsync. A reader sees the old content or the new, never a torn
/// write; concurrent writers never share a temp file.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// As [`write_private`], readable by anyone (0644): for the file that holds
/// no secret and that a user other than root reads.
pub(super) fn write_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        sweep_dead_temps(dir, name);
    }
    let tmp = temp_name(path);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask cannot widen it (nor narrow a public one): explicit.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_write_has_its_own_temp_and_leaves_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let a = temp_name(&path);
        let b = temp_name(&path);
        assert_ne!(a, b);
        let pid = std::process::id();
        let a = a.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            a.starts_with(&format!("x.json.{pid}.")) && a.ends_with(".tmp"),
            "{a}"
        );
        // Writers in several threads at once (two hooks' processes, or a
        // hook and the CLI), private and public alike: every write lands
        // whole and none fails (the hint's old writer shared one temp).
        type Writer = fn(&Path, &[u8]) -> std::io::Result<()>;
        for (write, name, want) in [
            (write_private as Writer, "x.json", 0o600),
            (write_public as Writer, "operator-hint.json", 0o644),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            std::thread::scope(|s| {
                for t in 0..8 {
                    let path = &path;
                    s.spawn(move || {
                        for i in 0..20 {
                            write(path, format!("{t}-{i}").as_bytes()).unwrap();
                        }
                    });
                }
            });
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.ends_with("-19"), "{name}: {text}");
            let names: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from(name)]);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{name}");
        }
    }

    #[test]
    fn a_dead_writers_temp_is_swept_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.json");
        // pid 0 never names a process in /proc; ours is alive.
        let dead = dir.path().join("journal.json.0.7.tmp");
        let live = dir
            .path()
            .join(format!("journal.json.{}.99.tmp", std::process::id()));
        let other = dir.path().join("cli-credentials.json.0.1.tmp");
        for f in [&dead, &live, &other] {
            fs::write(f, b"partial").unwrap();
        }
        write_private(&path, b"{}").unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(
            other.exists(),
            "another name's temp is not this write's business"
        );
    }
}
