//! Every file written for a user goes through [`AtomicFile`] (docs/reliability.md, "Outputs
//! are atomic"), as the Python package's `butterfly_onnx.atomic`: the data goes to a
//! temporary file in the target's folder, is fsynced, and only then takes the target's name.
//! A crash, a kill, Ctrl-C or a full disk leaves the previous file byte-identical and no
//! temporary file behind.
//!
//! On Linux the temporary file is anonymous (`O_TMPFILE`): it has no name until
//! [`AtomicFile::commit`] links it in, so even SIGKILL leaves nothing. Elsewhere (or on a
//! file system without `O_TMPFILE`) it is `.NAME.<pid>.<n>.tmp`, removed when the
//! `AtomicFile` is dropped uncommitted.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file in `path`'s folder that becomes `path` (or another name in the same
/// folder) on [`commit`](AtomicFile::commit). Dropped uncommitted, it leaves no trace.
pub struct AtomicFile {
    file: File,
    target: PathBuf,
    /// `None`: anonymous (`O_TMPFILE`); else the temporary file's name.
    named: Option<PathBuf>,
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn temp_name(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    folder_of(target).join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

impl AtomicFile {
    /// Start writing what will become `path`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<AtomicFile> {
        let target = path.as_ref().to_path_buf();
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            if Path::new("/proc/self/fd").is_dir() {
                let opened = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_TMPFILE)
                    .mode(0o666)
                    .open(folder_of(&target));
                match opened {
                    Ok(file) => return Ok(AtomicFile { file, target, named: None }),
                    // The file system or kernel has no O_TMPFILE: a named temporary file.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        loop {
            let name = temp_name(&target);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            match options.open(&name) {
                Ok(file) => return Ok(AtomicFile { file, target, named: Some(name) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The path given to [`create`](AtomicFile::create).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// fsync the data and name it `path` (default: the target; it must be in the same
    /// folder), replacing any file there atomically. Returns the path written.
    pub fn commit(mut self, path: Option<&Path>) -> io::Result<PathBuf> {
        let target = path.map_or_else(|| self.target.clone(), Path::to_path_buf);
        self.file.flush()?;
        self.file.sync_all()?;
        match self.named.take() {
            Some(name) => {
                if let Err(e) = std::fs::rename(&name, &target) {
                    let _ = std::fs::remove_file(&name);
                    return Err(e);
                }
            }
            None => self.link(&target)?,
        }
        if let Ok(folder) = File::open(folder_of(&target)) {
            let _ = folder.sync_all(); // the rename itself durable; best effort
        }
        Ok(target)
    }

    #[cfg(target_os = "linux")]
    fn link(&self, target: &Path) -> io::Result<()> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let source = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd())).expect("no NUL");
        let link = |to: &Path| -> io::Result<()> {
            let to = CString::new(to.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
            // SAFETY: both are valid NUL-terminated strings; AT_SYMLINK_FOLLOW names the open
            // file the /proc link points to (std's hard_link would link the symlink itself).
            let done = unsafe {
                libc::linkat(libc::AT_FDCWD, source.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
            };
            if done == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        match link(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let name = temp_name(target);
                link(&name)?;
                std::fs::rename(&name, target).inspect_err(|_| {
                    let _ = std::fs::remove_file(&name);
                })
            }
            Err(e) => Err(e),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn link(&self, _target: &Path) -> io::Result<()> {
        unreachable!("anonymous temporary files exist only on Linux")
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(name) = self.named.take() {
            let _ = std::fs::remove_file(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_on_commit_and_leaves_nothing_on_drop() {
        let dir = std::env::temp_dir().join(format!("butterfly-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.csv");
        for text in ["one", "two"] {
            let mut file = AtomicFile::create(&path).unwrap();
            file.write_all(text.as_bytes()).unwrap();
            file.commit(None).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"three").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let other = AtomicFile::create(&path).unwrap();
        assert_eq!(other.commit(Some(&dir.join("other.csv"))).unwrap(), dir.join("other.csv"));
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["other.csv", "out.csv"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
