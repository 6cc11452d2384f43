//! Signals, handled the same way by every binary (each calls [`install`] first thing in `main`):
//!
//! - SIGINT and SIGTERM end the process with exit status 130 and 143 (128 + the signal number,
//!   what a shell reports for a process killed by them), after an optional cleanup callback
//!   (athena-convert deletes its temp and spill files). While [`defer_interrupts`] is on
//!   (athena-run generating), the first one only sets [`interrupted`] and the program stops at
//!   its next check; a second one ends it at once.
//! - SIGBUS, which a read of a memory-mapped file raises when the file was truncated after it was
//!   mapped, becomes the one-line error `<program>: <file>: file changed while being read` and
//!   exit status 1, instead of a silent crash.
//! - SIGPIPE gets its default action back (the Rust runtime ignores it): `athena-verify f | head`
//!   ends quietly, like any Unix tool, rather than panicking on the next print.
//!
//! Built on libc's `sigaction` (already a dependency) rather than the `signal-hook` crate: the
//! SIGBUS handler needs the raw `SA_SIGINFO` handler anyway (to tell a fault from a `kill -BUS`),
//! and the interrupt side is a self-pipe and a thread, the same few lines `ctrlc` and
//! `signal-hook` are built from, so one small file serves both without a new dependency.
//!
//! A signal handler may only call async-signal-safe functions. The SIGBUS handler therefore uses
//! messages prepared when a path is registered, `stat(2)` to find which registered file changed
//! size, `write(2)` and `_exit(2)`; the SIGINT/SIGTERM handler only records the signal and
//! writes one byte to a pipe. The cleanup callback and `exit` run on an ordinary thread that
//! reads the pipe.

use std::path::Path;

/// Exit status after SIGINT.
pub const EXIT_SIGINT: u8 = 130;
/// Exit status after SIGTERM.
pub const EXIT_SIGTERM: u8 = 143;

/// The exit status for a run ended by signal `sig` (128 + its number, as shells report it).
pub fn exit_status(sig: i32) -> u8 {
    (128 + sig.clamp(0, 127)) as u8
}

/// Installs the handlers (once per process; later calls only register more paths).
/// `program` prefixes the SIGBUS message; `mapped` are the files the program maps (their sizes
/// now tell the handler later which one changed).
pub fn install(program: &str, mapped: &[&Path]) {
    imp::install(program, None);
    for path in mapped {
        watch_mapped(path);
    }
}

/// [`install`], with `cleanup` run before the process exits on SIGINT or SIGTERM (on an
/// ordinary thread, so it may lock and allocate). athena-convert:
/// `athena::signals::install_with_cleanup("athena-convert", &[&model], athena::container::temp_files::remove_all);`
pub fn install_with_cleanup(program: &str, mapped: &[&Path], cleanup: fn()) {
    imp::install(program, Some(cleanup));
    for path in mapped {
        watch_mapped(path);
    }
}

/// Registers one more file the program maps (for example a --reference model found after the
/// options are read). Its size is recorded now. At most 16 files; later ones are named only in
/// the message for a fault no registered file explains.
pub fn watch_mapped(path: &Path) {
    imp::watch(path);
}

/// While on, the first SIGINT or SIGTERM only sets [`interrupted`] (a second one still ends the
/// process): for a loop that stops cleanly at its next check.
pub fn defer_interrupts(on: bool) {
    imp::defer(on);
}

/// The first SIGINT or SIGTERM received, if any.
pub fn interrupted() -> Option<i32> {
    imp::interrupted()
}

#[cfg(unix)]
mod imp {
    use std::ffi::CString;
    use std::io::IsTerminal;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicPtr, AtomicUsize, Ordering};
    use std::sync::{Mutex, Once};

    use libc::{c_int, c_void};

    const SLOTS: usize = 16;

    /// A registered file: its path for stat(2), its size when registered, and the message that
    /// names it. Filled before `path` is published; never freed (a few per process).
    struct Slot {
        path: AtomicPtr<libc::c_char>,
        size: AtomicI64,
        msg: AtomicPtr<u8>,
        msg_len: AtomicUsize,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Slot = Slot {
        path: AtomicPtr::new(std::ptr::null_mut()),
        size: AtomicI64::new(-1),
        msg: AtomicPtr::new(std::ptr::null_mut()),
        msg_len: AtomicUsize::new(0),
    };
    static SLOT: [Slot; SLOTS] = [EMPTY; SLOTS];
    static USED: AtomicUsize = AtomicUsize::new(0);
    /// The message when no registered file explains a fault (names them all).
    static FALLBACK: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
    static FALLBACK_LEN: AtomicUsize = AtomicUsize::new(0);

    static RECEIVED: AtomicI32 = AtomicI32::new(0);
    static DEFERRING: AtomicBool = AtomicBool::new(false);
    static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

    /// Program name, whether stderr is a terminal, the cleanup callback and the paths (for the
    /// fallback message): ordinary state, touched outside handlers only.
    struct State {
        program: String,
        terminal: bool,
        cleanup: Option<fn()>,
        paths: Vec<String>,
    }
    static STATE: Mutex<State> = Mutex::new(State {
        program: String::new(),
        terminal: false,
        cleanup: None,
        paths: Vec::new(),
    });
    static INSTALLED: Once = Once::new();

    fn state() -> std::sync::MutexGuard<'static, State> {
        STATE.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message the handler can write as is; never freed.
    fn leak(message: String) -> (*mut u8, usize) {
        let bytes: &'static mut [u8] = Box::leak(message.into_bytes().into_boxed_slice());
        (bytes.as_mut_ptr(), bytes.len())
    }

    fn message(state: &State, names: &str) -> String {
        // On a terminal a progress bar may be half drawn: start on a clean line.
        let clear = if state.terminal { "\r\x1b[2K" } else { "" };
        format!(
            "{clear}{}: {names}: file changed while being read\n",
            state.program
        )
    }

    fn publish_fallback(state: &State) {
        let names = if state.paths.is_empty() {
            "a memory-mapped file".to_string()
        } else {
            state.paths.join(" or ")
        };
        let (ptr, len) = leak(message(state, &names));
        FALLBACK_LEN.store(len, Ordering::Release);
        FALLBACK.store(ptr, Ordering::Release);
    }

    pub fn install(program: &str, cleanup: Option<fn()>) {
        {
            let mut s = state();
            s.program = program.to_string();
            s.terminal = std::io::stderr().is_terminal();
            if cleanup.is_some() {
                s.cleanup = cleanup;
            }
            publish_fallback(&s);
        }
        INSTALLED.call_once(|| {
            // SAFETY: plain libc calls with valid arguments; the handlers only use
            // async-signal-safe functions and atomics (see the module documentation).
            unsafe {
                let mut fds = [0 as c_int; 2];
                if libc::pipe(fds.as_mut_ptr()) == 0 {
                    for fd in fds {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                    // The handler's write must never block, even on a full pipe.
                    let flags = libc::fcntl(fds[1], libc::F_GETFL);
                    libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
                    let read_fd = fds[0];
                    if std::thread::Builder::new()
                        .name("signals".into())
                        .spawn(move || watch_pipe(read_fd))
                        .is_ok()
                    {
                        PIPE_WRITE.store(fds[1], Ordering::SeqCst);
                        set_handler(libc::SIGINT, on_interrupt as *const () as usize, 0);
                        set_handler(libc::SIGTERM, on_interrupt as *const () as usize, 0);
                    }
                }
                set_handler(
                    libc::SIGBUS,
                    on_sigbus as *const () as usize,
                    libc::SA_SIGINFO | libc::SA_ONSTACK,
                );
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
        });
    }

    unsafe fn set_handler(sig: c_int, handler: usize, flags: c_int) {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }

    pub fn watch(path: &Path) {
        let mut s = state();
        s.paths.push(path.display().to_string());
        publish_fallback(&s);
        let index = USED.load(Ordering::Acquire);
        if index >= SLOTS {
            return;
        }
        let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
            return;
        };
        let size = std::fs::metadata(path).map_or(-1, |m| m.len() as i64);
        let (msg, msg_len) = leak(message(&s, &path.display().to_string()));
        let slot = &SLOT[index];
        slot.size.store(size, Ordering::Release);
        slot.msg.store(msg, Ordering::Release);
        slot.msg_len.store(msg_len, Ordering::Release);
        slot.path.store(cpath.into_raw(), Ordering::Release);
        USED.store(index + 1, Ordering::Release);
    }

    pub fn defer(on: bool) {
        DEFERRING.store(on, Ordering::SeqCst);
    }

    pub fn interrupted() -> Option<i32> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(sig),
        }
    }

    /// The thread that acts on SIGINT/SIGTERM outside the handler.
    fn watch_pipe(fd: c_int) {
        let mut deferred_one = false;
        loop {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a valid buffer.
            let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast::<c_void>(), 1) };
            if n != 1 {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return;
            }
            if DEFERRING.load(Ordering::SeqCst) && !deferred_one {
                deferred_one = true;
                continue;
            }
            let cleanup = state().cleanup;
            if let Some(cleanup) = cleanup {
                cleanup();
            }
            std::process::exit(super::exit_status(byte as i32) as i32);
        }
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    unsafe fn errno() -> *mut c_int {
        libc::__errno_location()
    }

    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    unsafe fn errno() -> *mut c_int {
        libc::__error()
    }

    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    )))]
    unsafe fn errno() -> *mut c_int {
        static mut SCRATCH: c_int = 0;
        std::ptr::addr_of_mut!(SCRATCH)
    }

    extern "C" fn on_interrupt(sig: c_int) {
        // SAFETY: errno is thread-local; saved and restored around write(2), which is
        // async-signal-safe, as are the atomics.
        unsafe {
            let saved = *errno();
            let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            let fd = PIPE_WRITE.load(Ordering::SeqCst);
            if fd >= 0 {
                let byte = sig as u8;
                libc::write(fd, (&byte as *const u8).cast::<c_void>(), 1);
            }
            *errno() = saved;
        }
    }

    unsafe fn write_all(ptr: *const u8, len: usize) {
        let mut done = 0;
        while done < len {
            let n = libc::write(2, ptr.add(done).cast::<c_void>(), len - done);
            if n <= 0 {
                return;
            }
            done += n as usize;
        }
    }

    extern "C" fn on_sigbus(sig: c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
        // SAFETY: only stat(2), write(2), signal(2), raise(3) and _exit(2), all async-signal-safe,
        // on memory prepared before the handler was installed or published with Release.
        unsafe {
            // Not a fault (kill -BUS): the default action.
            if info.is_null() || (*info).si_code <= 0 {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
                return;
            }
            let used = USED.load(Ordering::Acquire).min(SLOTS);
            for slot in &SLOT[..used] {
                let path = slot.path.load(Ordering::Acquire);
                if path.is_null() {
                    continue;
                }
                let mut st: libc::stat = std::mem::zeroed();
                let gone = libc::stat(path, &mut st) != 0;
                if gone || st.st_size as i64 != slot.size.load(Ordering::Acquire) {
                    write_all(
                        slot.msg.load(Ordering::Acquire),
                        slot.msg_len.load(Ordering::Acquire),
                    );
                    libc::_exit(1);
                }
            }
            let fallback = FALLBACK.load(Ordering::Acquire);
            if !fallback.is_null() {
                write_all(fallback, FALLBACK_LEN.load(Ordering::Acquire));
            }
            libc::_exit(1);
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use std::path::Path;

    pub fn install(_program: &str, _cleanup: Option<fn()>) {}
    pub fn watch(_path: &Path) {}
    pub fn defer(_on: bool) {}
    pub fn interrupted() -> Option<i32> {
        None
    }
}
