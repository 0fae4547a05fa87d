//! The audited libc calls std does not offer: atime updates, open-file-description
//! record locks, the coarse clock, local time, syncfs, statvfs, setsid, geteuid, SIGPIPE,
//! the signal and descriptor calls of the background mount, extended attributes, inode
//! flags and quota project ids (pxar backups and restores), and glibc's malloc tuning
//! of the mount.
//! This is the crate's only module allowed to use `unsafe`; each block is one FFI call
//! on values owned by the caller, checked for its documented error return.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The result of a libc call that returns 0 on success and -1 with `errno` on failure.
fn check_rc(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn utimensat_atime(path: &Path, atime: libc::timespec) -> io::Result<()> {
    utimensat_atime_at(libc::AT_FDCWD, &cpath(path)?, atime)
}

/// Set the atime of `name` relative to `dirfd` (`AT_FDCWD` or an open folder), mtime
/// untouched, a symlink not followed.
fn utimensat_atime_at(dirfd: libc::c_int, name: &CString, atime: libc::timespec) -> io::Result<()> {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    utimensat_at(dirfd, name, [atime, omit])
}

/// The one `utimensat` call: set atime and mtime (`times`, UTIME_NOW/UTIME_OMIT allowed)
/// of `name` relative to `dirfd`, a symlink not followed.
fn utimensat_at(dirfd: libc::c_int, name: &CString, times: [libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: `dirfd` is AT_FDCWD or a descriptor the caller keeps open, `name` a valid
    // NUL-terminated string and `times` an array of two timespecs, all alive for the
    // duration of the call.
    let rc = unsafe {
        libc::utimensat(
            dirfd,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check_rc(rc)
}

/// Set a file's atime to now, leaving mtime alone (PBS's chunk "touch").
pub fn touch_atime(path: &Path) -> io::Result<()> {
    utimensat_atime(
        path,
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    )
}

/// Set a file's atime to `secs` since the epoch, leaving mtime alone.
pub fn set_atime(path: &Path, secs: i64) -> io::Result<()> {
    utimensat_atime(
        path,
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        },
    )
}

/// Try to take an open-file-description record lock on the whole file, without
/// blocking. `Ok(false)` means someone holds a conflicting lock. OFD locks conflict with
/// PBS's classic `fcntl(F_SETLK)` locks and are owned by the open file, not the process.
pub fn ofd_try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if exclusive {
        libc::F_WRLCK as _
    } else {
        libc::F_RDLCK as _
    };
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 0;
    // SAFETY: the fd is open for the lifetime of `file`; `fl` is a valid flock struct.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(test)]
/// Seconds since the epoch from `CLOCK_REALTIME_COARSE`: the clock the kernel stamps
/// `UTIME_NOW` with, so a GC start read from it is never later than a mark's atime.
fn coarse_now() -> i64 {
    coarse_now_ns().0
}

/// `CLOCK_REALTIME_COARSE` as (seconds, nanoseconds).
pub fn coarse_now_ns() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; this clock id exists on every Linux since 2.6.32.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return (d.as_secs() as i64, d.subsec_nanos() as i64);
    }
    (ts.tv_sec, ts.tv_nsec)
}

/// Broken-down local time (honours `TZ`), as prune needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTm {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    pub mday: u32,
    pub hour: u32,
    /// 0..=365
    pub yday: u32,
    /// 0 = Sunday
    pub wday: u32,
}

/// Convert epoch seconds to local time with the C library's rules (like PBS).
pub fn localtime(epoch: i64) -> io::Result<LocalTm> {
    extern "C" {
        fn tzset();
    }
    let t = epoch as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value of this plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: tzset only reads the environment; localtime_r writes into `tm`, which we own.
    let res = unsafe {
        tzset();
        libc::localtime_r(&t, &mut tm)
    };
    if res.is_null() {
        return Err(io::Error::other(format!("localtime({epoch}) failed")));
    }
    Ok(LocalTm {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        mday: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        yday: tm.tm_yday as u32,
        wday: tm.tm_wday as u32,
    })
}

/// Flush the whole filesystem holding `file` (PBS's default "filesystem" sync level).
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: the fd is open for the lifetime of `file`.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    check_rc(rc)
}

/// Filesystem sizes for `df`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    /// Mounted read-only (`ST_RDONLY`): a read-only disk, snapshot or bind mount.
    pub read_only: bool,
}

pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c = cpath(path)?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid path and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FsStats {
        blocks: st.f_blocks as u64,
        bfree: st.f_bfree as u64,
        bavail: st.f_bavail as u64,
        files: st.f_files as u64,
        ffree: st.f_ffree as u64,
        bsize: st.f_bsize as u32,
        namelen: st.f_namemax as u32,
        frsize: st.f_frsize as u32,
        read_only: st.f_flag & libc::ST_RDONLY != 0,
    })
}

/// Start a new session, detaching from the controlling terminal (the background mount).
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no memory preconditions.
    let rc = unsafe { libc::setsid() };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Bound what glibc's allocator keeps of freed memory, in a long-running threaded
/// server (the mount): at most `arena_max` arenas (by default up to 8 per core, each
/// keeping its own free memory); blocks of `mmap_threshold` bytes or more mmapped, so
/// freed ones go back to the system; and at most `trim_threshold` free bytes kept at the
/// top of a heap for reuse. Fixed thresholds also turn off glibc's dynamic ones, which,
/// once a large block is freed, rise to its size so that later chunk-sized buffers come
/// from the heap and stay there. Call it before threads start. A no-op without glibc.
pub fn bound_malloc(arena_max: i32, mmap_threshold: i32, trim_threshold: i32) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value, name) in [
        (libc::M_ARENA_MAX, arena_max, "M_ARENA_MAX"),
        (libc::M_MMAP_THRESHOLD, mmap_threshold, "M_MMAP_THRESHOLD"),
        (libc::M_TRIM_THRESHOLD, trim_threshold, "M_TRIM_THRESHOLD"),
    ] {
        // SAFETY: mallopt only sets allocator parameters and has no memory
        // preconditions; it returns 1 on success and 0 for a rejected value.
        if unsafe { libc::mallopt(param, value) } != 1 {
            return Err(io::Error::other(format!(
                "mallopt({name}, {value}) refused"
            )));
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (arena_max, mmap_threshold, trim_threshold);
    Ok(())
}

/// Let a closed stdout end the process quietly, as for any Unix filter (`| head`),
/// instead of Rust's default of ignoring SIGPIPE and panicking in `println!`.
pub fn default_sigpipe() {
    // SAFETY: installing SIG_DFL for SIGPIPE has no memory preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn sigset(signals: &[i32]) -> io::Result<libc::sigset_t> {
    // SAFETY: an all-zero `sigset_t` is a valid value; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, owned sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is a valid, owned sigset_t; a bad signal number is reported.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// Block `signals` in the calling thread and in every thread it spawns afterwards, so
/// that `wait_signal` can take them synchronously (the foreground mount).
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is a valid sigset_t; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Wait for one of `signals` (which must be blocked) and return it.
pub fn wait_signal(signals: &[i32]) -> io::Result<i32> {
    let set = sigset(signals)?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` and `sig` are valid for the duration of the call.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 {
        Ok(sig)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Send `signal` to this process.
pub fn signal_self(signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory preconditions; getpid cannot fail.
    let rc = unsafe { libc::kill(libc::getpid(), signal) };
    check_rc(rc)
}

/// Point descriptor `fd` at /dev/null (a background mount detaching from the pipe its
/// parent reads).
pub fn redirect_to_null(fd: i32) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: `null` is open for the duration of the call; dup2 atomically replaces `fd`.
    let rc = unsafe { libc::dup2(null.as_raw_fd(), fd) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Open `path` (relative) beneath the directory `dir` with `openat2`, following no
/// symlink in any component and never leaving `dir` (`RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`): a symlink anywhere gives ELOOP, `..` out of `dir` EXDEV.
/// `O_CLOEXEC` is always added. Linux 5.6 or newer.
pub fn open_beneath(dir: &File, path: &Path, flags: i32, mode: u32) -> io::Result<File> {
    use std::os::unix::io::FromRawFd;
    let c = cpath(path)?;
    // SAFETY: an all-zero `open_how` is a valid value of this plain C struct.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        how.mode = mode as u64;
    }
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    // SAFETY: `dir` is an open descriptor for the duration of the call, `c` a valid
    // NUL-terminated path and `how` a valid `open_how` of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative return of openat2 is a new descriptor that we now own.
    Ok(unsafe { File::from_raw_fd(rc as i32) })
}

/// Extended attributes are read from an open file or, for what is not opened (symlinks,
/// devices, FIFOs, sockets), from a path whose last component is not followed.
#[derive(Debug, Clone, Copy)]
pub enum XattrSource<'a> {
    File(&'a File),
    NoFollow(&'a Path),
}

/// Call `get(buf)` (a listxattr/getxattr-style call returning a length or -1) with a
/// buffer grown to the size it asks for; a value that grows between the size query and
/// the read is retried. `Ok(None)` for ENODATA (no such attribute).
fn read_sized(mut get: impl FnMut(&mut [u8]) -> isize) -> io::Result<Option<Vec<u8>>> {
    // Most values and name lists are short: a first call into a small buffer, and the
    // size query only when it is too small (a backup makes this call for every file).
    let mut size = 1024;
    for _ in 0..9 {
        let mut buf = vec![0u8; size];
        let got = get(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => {}
            Some(libc::ENODATA) => return Ok(None),
            _ => return Err(e),
        }
        let want = get(&mut []);
        if want < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        size = want as usize;
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}

/// The names of a file's extended attributes (every namespace the caller may list).
pub fn list_xattrs(src: XattrSource) -> io::Result<Vec<Vec<u8>>> {
    let raw = match src {
        XattrSource::File(f) => read_sized(|buf| {
            // SAFETY: the fd is open for the lifetime of `f`; `buf` is valid for writes
            // of `buf.len()` bytes (an empty buffer asks for the size, nothing written).
            unsafe { libc::flistxattr(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
        })?,
        XattrSource::NoFollow(p) => {
            let c = cpath(p)?;
            read_sized(|buf| {
                // SAFETY: `c` is a valid NUL-terminated path; `buf` as above.
                unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
            })?
        }
    };
    Ok(raw
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// The value of one extended attribute; `Ok(None)` when the file has none of that name.
pub fn get_xattr(src: XattrSource, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = xattr_name(name)?;
    match src {
        XattrSource::File(f) => read_sized(|buf| {
            // SAFETY: the fd is open for the lifetime of `f`; `n` is a valid C string;
            // `buf` is valid for writes of `buf.len()` bytes.
            unsafe {
                libc::fgetxattr(
                    f.as_raw_fd(),
                    n.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            }
        }),
        XattrSource::NoFollow(p) => {
            let c = cpath(p)?;
            read_sized(|buf| {
                // SAFETY: `c` and `n` are valid C strings; `buf` as above.
                unsafe {
                    libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
            })
        }
    }
}

/// `lsetxattr`: set an extended attribute of `path` itself (never a symlink's target).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = xattr_name(name)?;
    // SAFETY: `c` and `n` are valid NUL-terminated strings and `value` a readable buffer
    // of the length passed, all alive for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check_rc(rc)
}

/// `fsetxattr`: set an extended attribute of an open file or folder.
pub fn set_xattr_fd(file: &File, name: &[u8], value: &[u8]) -> io::Result<()> {
    let n = xattr_name(name)?;
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: `file` is an open descriptor, `n` a valid NUL-terminated string and `v` a
    // readable buffer of `len` bytes, all alive for the call.
    check_rc(unsafe { libc::fsetxattr(file.as_raw_fd(), n.as_ptr(), v, len, 0) })
}

fn xattr_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))
}

/// `mknod`: a device node, FIFO or socket at `path` with `mode` (type and permission
/// bits) and device number `dev`.
pub fn mknod(path: &Path, mode: u32, major: u64, minor: u64) -> io::Result<()> {
    let c = cpath(path)?;
    let dev = libc::makedev(major as u32, minor as u32);
    // SAFETY: `c` is a valid NUL-terminated path; mknod takes plain values otherwise.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    check_rc(rc)
}

/// Set atime and mtime of `path` itself (a symlink is not followed) to `secs` +
/// `nanos` (the time pxar stores).
pub fn set_times(path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    utimensat_at(libc::AT_FDCWD, &cpath(path)?, [t, t])
}

/// `set_times` of an open file (`futimens`): no path walked.
pub fn set_times_fd(file: &File, secs: i64, nanos: u32) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: `file` is an open descriptor for the duration of the call and `times` an
    // array of two timespecs.
    let rc = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
    check_rc(rc)
}

/// What a folder entry is, from `d_type` (`Unknown` when the file system does not say:
/// ask `stat_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Dir,
    File,
    Symlink,
    Other,
    Unknown,
}

/// The entries of the opened folder `dir` (without `.` and `..`), read from its own
/// descriptor (a duplicate of it, so `dir` stays open): no path is resolved again.
pub fn read_dir_fd(dir: &File) -> io::Result<Vec<(std::ffi::OsString, EntryType)>> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one we own.
    let fd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor of a folder that we own; on success the stream owns
    // it (closedir closes it), on failure we close it ourselves.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut out = Vec::new();
    let result = loop {
        // readdir signals the end and errors both by NULL; errno tells them apart.
        // SAFETY: errno is thread-local; resetting it is always allowed.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a valid open directory stream used by this thread only.
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: a non-NULL entry is valid until the next readdir on this stream; its
        // name is NUL-terminated within d_name.
        let (name, d_type) = unsafe {
            let e = &*ent;
            let name = std::ffi::CStr::from_ptr(e.d_name.as_ptr());
            (name.to_bytes().to_vec(), e.d_type)
        };
        if name == b"." || name == b".." {
            continue;
        }
        let t = match d_type {
            libc::DT_DIR => EntryType::Dir,
            libc::DT_REG => EntryType::File,
            libc::DT_LNK => EntryType::Symlink,
            libc::DT_UNKNOWN => EntryType::Unknown,
            _ => EntryType::Other,
        };
        out.push((std::ffi::OsStr::from_bytes(&name).to_os_string(), t));
    };
    // SAFETY: `stream` is open; closedir closes it and the descriptor it owns.
    unsafe { libc::closedir(stream) };
    result.map(|()| out)
}

/// `lstat` of `name` inside the opened folder `dir` (a symlink is not followed): what
/// GC and listings need.
#[derive(Debug, Clone, Copy)]
pub struct StatAt {
    pub mode: u32,
    pub size: u64,
    pub atime: i64,
    pub atime_nsec: i64,
}

impl StatAt {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

pub fn stat_at(dir: &File, name: &std::ffi::OsStr) -> io::Result<StatAt> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))?;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `c` a valid NUL-terminated name, `st` a valid out-pointer.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(StatAt {
        mode: st.st_mode,
        size: st.st_size as u64,
        atime: st.st_atime,
        atime_nsec: st.st_atime_nsec,
    })
}

/// Set the atime of `name` in the opened folder `dir` to now, mtime untouched (a
/// symlink is not followed): the chunk "touch" without resolving a path.
pub fn touch_atime_at(dir: &File, name: &std::ffi::OsStr) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))?;
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    };
    utimensat_atime_at(dir.as_raw_fd(), &c, now)
}

/// `FS_IOC_GETFLAGS` = `_IOR('f', 1, long)`: the inode flags (`lsattr`). The kernel
/// reads and writes an `int` whatever the macro says.
const FS_IOC_GETFLAGS: u64 = 0x8008_6601;
/// `FS_IOC_SETFLAGS` = `_IOW('f', 2, long)`.
const FS_IOC_SETFLAGS: u64 = 0x4008_6602;
/// `FS_IOC_FSGETXATTR` = `_IOR('X', 31, struct fsxattr)`.
const FS_IOC_FSGETXATTR: u64 = 0x801c_581f;

/// The kernel's `struct fsxattr` (linux/fs.h), 28 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<FsXattr>() == 28);

/// The inode flags of an open file or folder (`FS_*_FL`, as `lsattr` shows them).
/// File systems without them fail with ENOTTY, ENOTSUP, EINVAL or ENOSYS.
pub fn get_inode_flags(file: &File) -> io::Result<u32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: the fd is open for the lifetime of `file`; FS_IOC_GETFLAGS writes one
    // `int` to the pointer, which points at `flags`, alive for the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_GETFLAGS as libc::Ioctl,
            &mut flags as *mut libc::c_int,
        )
    };
    check_rc(rc)?;
    Ok(flags as u32)
}

/// Replace the inode flags of an open file or folder (`chattr`); IMMUTABLE and
/// APPEND need CAP_LINUX_IMMUTABLE.
pub fn set_inode_flags(file: &File, flags: u32) -> io::Result<()> {
    let value = flags as libc::c_int;
    // SAFETY: the fd is open for the lifetime of `file`; FS_IOC_SETFLAGS reads one
    // `int` from the pointer, which points at `value`, alive for the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_SETFLAGS as libc::Ioctl,
            &value as *const libc::c_int,
        )
    };
    check_rc(rc)
}

/// The quota project id of an open file or folder (`lsattr -p`), from
/// FS_IOC_FSGETXATTR; file systems without it fail with ENOTTY, ENOTSUP or EINVAL.
pub fn get_project_id(file: &File) -> io::Result<u32> {
    let mut fsx = FsXattr::default();
    // SAFETY: the fd is open for the lifetime of `file`; FS_IOC_FSGETXATTR writes one
    // `struct fsxattr` (28 bytes, the layout of `FsXattr`) to the pointer, alive for
    // the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_FSGETXATTR as libc::Ioctl,
            &mut fsx as *mut FsXattr,
        )
    };
    check_rc(rc)?;
    Ok(fsx.projid)
}

/// The file system type (`f_type`, the superblock magic) of an open file.
pub fn fs_magic(file: &File) -> io::Result<i64> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the lifetime of `file`; `st` is a valid out-pointer.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    check_rc(rc)?;
    Ok(st.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atime_can_be_set_and_touched_without_changing_mtime() {
        let dir = std::env::temp_dir().join(format!("pbsfs-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        let mtime = std::fs::metadata(&f).unwrap().mtime();
        set_atime(&f, 1_000_000).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().atime(), 1_000_000);
        touch_atime(&f).unwrap();
        let md = std::fs::metadata(&f).unwrap();
        assert!(md.atime() >= coarse_now() - 5);
        assert_eq!(md.mtime(), mtime);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ofd_locks_conflict_between_open_files_of_one_process() {
        let dir = std::env::temp_dir().join(format!("pbsfs-ofd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lock");
        std::fs::write(&p, b"").unwrap();
        let a = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        assert!(ofd_try_lock(&a, false).unwrap());
        assert!(ofd_try_lock(&b, false).unwrap());
        assert!(!ofd_try_lock(&b, true).unwrap());
        drop(a);
        assert!(ofd_try_lock(&b, true).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn xattrs_of_a_plain_file_are_listed_and_absent_ones_are_none() {
        let dir = std::env::temp_dir().join(format!("pbsfs-xattr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        // Whatever the file system adds (security.selinux, ...), no user attribute.
        let names = list_xattrs(XattrSource::File(&f)).unwrap();
        assert!(names.iter().all(|n| !n.starts_with(b"user.")), "{names:?}");
        assert_eq!(
            get_xattr(XattrSource::File(&f), b"user.none").unwrap(),
            None
        );
        assert_eq!(
            get_xattr(XattrSource::NoFollow(&p), b"user.none").unwrap(),
            None
        );
        let gone = dir.join("gone");
        let e = list_xattrs(XattrSource::NoFollow(&gone)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
