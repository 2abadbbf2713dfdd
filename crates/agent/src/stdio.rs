//! A container's stdio inside its shim: the output goes to the CRI log file and to every attached
//! client; attached clients' input goes to the container's stdin (`stdin: true`) and, for a
//! `tty: true` container, resizes go to its terminal. Clients come through the attach socket
//! `<container dir>/attach.sock`, as conmon's attach socket serves CRI-O's `Attach`; the kubelet API's
//! `/attach` is its only user.
//!
//! The shim cannot start threads (it unshared its PID namespace), so one `poll(2)` loop does it all.
//!
//! Client → shim frames on the socket: `[kind: u8][length: u32 big-endian][payload]`, kind
//! [`FRAME_STDIN`] (bytes for stdin), [`FRAME_RESIZE`] (`"<width> <height>"`) or [`FRAME_CLOSE_STDIN`].
//! Shim → client: the raw output bytes.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Frame kind: stdin bytes.
pub const FRAME_STDIN: u8 = 0;
/// Frame kind: a terminal resize, payload `"<width> <height>"`.
pub const FRAME_RESIZE: u8 = 4;
/// Frame kind: the client is done with stdin (`stdinOnce` closes the container's stdin then).
pub const FRAME_CLOSE_STDIN: u8 = 255;

/// Longest CRI log record; longer lines are split into partial (`P`) records.
const MAX_LINE: usize = 16 * 1024;

/// Size at which a container's log is rotated (the kubelet's `containerLogMaxSize` default, 10 MiB).
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// Log files kept per container, the current one included (`containerLogMaxFiles` default).
pub const LOG_MAX_FILES: usize = 5;

/// A container's log file that rotates as the kubelet's log manager does
/// (`pkg/kubelet/logs/container_log_manager.go`): past `max_bytes`, `log` becomes `log.1` (the older ones
/// shift up, the oldest beyond `max_files` is removed) and writing goes on in a new `log`. Records are
/// never split across files. (Upstream gzips the rotated files except the newest; these stay plain.)
pub struct RotatingLog {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    max_bytes: u64,
    max_files: usize,
}

impl RotatingLog {
    /// Open (append to) the log at `path`.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, max_files: usize) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            max_files,
        })
    }

    fn rotated(&self, n: usize) -> std::path::PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        s.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.max_files.saturating_sub(1).max(1)));
        for n in (1..self.max_files.saturating_sub(1)).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Encode one client → shim frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Splits output into CRI log records (`<RFC 3339 time> <stream> <F|P> <text>`), as containerd writes
/// them for the kubelet.
#[derive(Default)]
pub struct LogLines {
    pending: Vec<u8>,
}

impl LogLines {
    /// Append output; complete lines (and 16 KiB chunks of an overlong one) are written to `log`.
    pub fn push(&mut self, data: &[u8], log: &mut impl Write) {
        self.pending.extend_from_slice(data);
        loop {
            let cut = match self.pending.iter().position(|&b| b == b'\n') {
                Some(i) if i < MAX_LINE => (i, true),
                _ if self.pending.len() >= MAX_LINE => (MAX_LINE, false),
                _ => return,
            };
            let (n, full) = cut;
            let mut line = format!(
                "{} stdout {} ",
                jiff::Timestamp::now(),
                if full { "F" } else { "P" }
            )
            .into_bytes();
            line.extend_from_slice(&self.pending[..n]);
            line.push(b'\n');
            let _ = log.write_all(&line);
            self.pending.drain(..n + usize::from(full));
        }
    }

    /// Write what is left as a last full record (the output ended without a newline).
    pub fn finish(&mut self, log: &mut impl Write) {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            let rest = std::mem::take(&mut self.pending);
            self.push(&rest, log);
        }
    }
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    /// It wrote to stdin (its detaching ends a `stdinOnce` stdin).
    wrote: bool,
}

/// What the loop serves.
pub struct Stdio {
    /// The container's output: a pipe's read end, or a terminal's master.
    pub output: std::fs::File,
    /// The container's stdin (the pipe's write end, or the terminal's master); `None` without `stdin`.
    pub stdin: Option<std::fs::File>,
    /// The output is a terminal master (resizes apply to it).
    pub tty: bool,
    /// Close stdin after the first client that wrote to it detaches (`stdinOnce`).
    pub stdin_once: bool,
}

/// Serve until the container's output ends (every process holding it is gone).
pub fn serve(mut io: Stdio, listener: Option<UnixListener>, log: &mut impl Write) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut lines = LogLines::default();
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    if let Some(l) = &listener {
        let _ = l.set_nonblocking(true);
    }
    loop {
        let (ready_out, ready_listener, ready_clients) = {
            let mut fds = vec![PollFd::new(io.output.as_fd(), PollFlags::POLLIN)];
            if let Some(l) = &listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            for c in &clients {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let any = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let out = any(&fds[0]);
            let lst = listener.is_some() && any(&fds[1]);
            let skip = 1 + usize::from(listener.is_some());
            let cl: Vec<bool> = fds[skip..].iter().map(any).collect();
            (out, lst, cl)
        };
        let mut gone = Vec::new();
        for (i, ready) in ready_clients.iter().enumerate() {
            if !*ready || i >= clients.len() {
                continue;
            }
            let c = &mut clients[i];
            match c.stream.read(&mut buf) {
                Ok(0) | Err(_) => gone.push(i),
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    while c.inbuf.len() >= 5 {
                        let len =
                            u32::from_be_bytes([c.inbuf[1], c.inbuf[2], c.inbuf[3], c.inbuf[4]]) as usize;
                        if c.inbuf.len() < 5 + len {
                            break;
                        }
                        let kind = c.inbuf[0];
                        let payload: Vec<u8> = c.inbuf[5..5 + len].to_vec();
                        c.inbuf.drain(..5 + len);
                        match kind {
                            FRAME_STDIN => {
                                c.wrote = true;
                                if let Some(s) = io.stdin.as_mut()
                                    && s.write_all(&payload).is_err()
                                {
                                    io.stdin = None;
                                }
                            }
                            FRAME_RESIZE if io.tty => resize(&io.output, &payload),
                            FRAME_CLOSE_STDIN if io.stdin_once && !io.tty => io.stdin = None,
                            _ => {}
                        }
                    }
                }
            }
        }
        for i in gone.into_iter().rev() {
            let c = clients.remove(i);
            if c.wrote && io.stdin_once && !io.tty {
                io.stdin = None;
            }
        }
        if ready_out {
            match io.output.read(&mut buf) {
                // EIO: a terminal whose every slave is closed.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    lines.push(&buf[..n], log);
                    clients.retain_mut(|c| c.stream.write_all(&buf[..n]).is_ok());
                }
            }
        }
        if ready_listener && let Some(l) = &listener {
            while let Ok((s, _)) = l.accept() {
                // Blocking, but a client that stalls the container's output for a second is dropped.
                let _ = s.set_nonblocking(false);
                let _ = s.set_write_timeout(Some(std::time::Duration::from_secs(1)));
                clients.push(Client {
                    stream: s,
                    inbuf: Vec::new(),
                    wrote: false,
                });
            }
        }
    }
    lines.finish(log);
}

fn resize(master: &impl AsFd, payload: &[u8]) {
    let text = String::from_utf8_lossy(payload);
    let mut it = text.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
    if let (Some(w), Some(h)) = (it.next(), it.next()) {
        let _ = rustix::termios::tcsetwinsize(
            master,
            rustix::termios::Winsize {
                ws_row: h,
                ws_col: w,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        );
    }
}

/// Bind the attach socket in `dir` (replacing a stale one); `None` when it cannot be bound (e.g. a path
/// over the 108-byte limit of a socket address): the container then runs without attach.
pub fn listen(dir: &Path) -> Option<UnixListener> {
    let p = dir.join("attach.sock");
    let _ = std::fs::remove_file(&p);
    UnixListener::bind(&p).ok()
}

/// The parts of the container's stdio the shim keeps, and the ends the init gets.
pub struct Ends {
    /// The shim's side.
    pub shim: Stdio,
    /// The init's stdin, stdout and stderr.
    pub child: [OwnedFd; 3],
}

/// Make the container's stdio: a terminal (`tty`), or pipes; stdin connected only with `stdin`
/// (otherwise `/dev/null`).
///
/// # Errors
/// When a pipe or terminal cannot be made.
pub fn make(stdin: bool, stdin_once: bool, tty: bool) -> std::io::Result<Ends> {
    if tty {
        let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        cloexec(&pty.master)?;
        cloexec(&pty.slave)?;
        let master = std::fs::File::from(pty.master);
        let slave = pty.slave;
        let child = [slave.try_clone()?, slave.try_clone()?, slave];
        return Ok(Ends {
            shim: Stdio {
                stdin: if stdin { Some(master.try_clone()?) } else { None },
                output: master,
                tty: true,
                stdin_once,
            },
            child,
        });
    }
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let (child_in, shim_in) = if stdin {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        (r, Some(std::fs::File::from(w)))
    } else {
        (std::fs::File::open("/dev/null")?.into(), None)
    };
    Ok(Ends {
        shim: Stdio {
            output: std::fs::File::from(out_r),
            stdin: shim_in,
            tty: false,
            stdin_once,
        },
        child: [child_in, out_w.try_clone()?, out_w],
    })
}

/// Mark `fd` close-on-exec (openpty's are not): only the ends handed over as fds 0-2 reach the
/// container, and no copy of a stdin pipe's write end keeps it from seeing EOF.
///
/// # Errors
/// When fcntl fails.
pub fn cloexec(fd: &impl AsFd) -> std::io::Result<()> {
    use nix::fcntl::{F_SETFD, FdFlag, fcntl};
    fcntl(fd.as_fd(), F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_cri_records_split_at_16k() {
        let mut l = LogLines::default();
        let mut out = Vec::new();
        l.push(b"hel", &mut out);
        assert!(out.is_empty(), "a partial line waits");
        l.push(b"lo\nwor", &mut out);
        let s = String::from_utf8_lossy(&out).into_owned();
        assert!(s.ends_with(" stdout F hello\n") && s.lines().count() == 1, "{s}");
        l.push(&vec![b'x'; MAX_LINE + 10], &mut out);
        let s = String::from_utf8_lossy(&out).into_owned();
        assert!(
            s.lines().nth(1).is_some_and(|r| r.contains(" stdout P wor")),
            "{s}"
        );
        l.finish(&mut out);
        let s = String::from_utf8_lossy(&out).into_owned();
        assert!(
            s.lines()
                .last()
                .is_some_and(|r| r.contains(" stdout F xxxxxxxxxx") && r.ends_with("xxxxxxxxxx"))
        );
    }

    #[test]
    fn logs_rotate_at_their_size_keeping_five_files() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("log");
        let mut log = RotatingLog::open(&p, 100, 5).expect("open");
        let mut lines = LogLines::default();
        for i in 0..40 {
            lines.push(
                format!("line {i:02} of the container's output\n").as_bytes(),
                &mut log,
            );
        }
        let current = std::fs::read_to_string(&p).expect("log");
        assert!(
            current.len() <= 100 && current.ends_with("line 39 of the container's output\n"),
            "{current}"
        );
        assert!(
            std::fs::read_to_string(dir.path().join("log.1"))
                .expect("log.1")
                .contains("line 38")
        );
        assert!(dir.path().join("log.4").exists() && !dir.path().join("log.5").exists());
        for f in ["log", "log.1", "log.2", "log.3", "log.4"] {
            let text = std::fs::read_to_string(dir.path().join(f)).expect("read");
            assert!(
                text.lines().all(|l| l.contains(" stdout F line ")),
                "whole records: {text}"
            );
        }
    }

    #[test]
    fn frames_carry_kind_and_length() {
        assert_eq!(
            frame(FRAME_RESIZE, b"80 24"),
            [4, 0, 0, 0, 5, b'8', b'0', b' ', b'2', b'4']
        );
    }
}
