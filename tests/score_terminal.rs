//! `orchestra repl` in a real pseudo-terminal, typed at as a user would: an
//! expression, a multi-line function, Tab completion, a streamed generation, Ctrl-C
//! during a long evaluation, Ctrl-D to leave.

mod score_support;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use score_support::*;

struct Terminal {
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
    child: std::process::Child,
}

impl Terminal {
    fn spawn(args: &[&str], home: &std::path::Path) -> Terminal {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty fills two fresh descriptors; the size struct outlives the call.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestra"));
        cmd.args(args)
            .env("ORCHESTRA_HOME", home)
            .env("RUST_LOG", "error")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session
        // with the pty as its controlling terminal, so Ctrl-C reaches the REPL.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("orchestra runs");
        let master = std::fs::File::from(master);
        let screen: Arc<Mutex<String>> = Arc::default();
        let mut reader = master.try_clone().unwrap();
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal {
            master,
            screen,
            child,
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits until `text` appears on the screen after what was already seen.
    fn expect(&self, text: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let screen = self.screen.lock().unwrap();
                if let Some(i) = screen[from.min(screen.len())..].find(text) {
                    return from + i + text.len();
                }
                if Instant::now() > deadline {
                    panic!(
                        "`{text}` never appeared; the screen shows:\n{}",
                        &screen[from.min(screen.len())..]
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn seen(&self) -> usize {
        self.screen.lock().unwrap().len()
    }
}

#[test]
fn a_user_at_the_terminal_edits_completes_streams_cancels_and_leaves() {
    let path = write_score("terminal", &score_with("return \"ok\""));
    let home = test_dir("terminal_home");
    let mut t = Terminal::spawn(&["repl", path.to_str().unwrap(), "--no-history"], &home);
    let mut at = t.expect("(version 1)", 0);
    at = t.expect("> ", at);

    t.type_keys("1 + 2\r");
    at = t.expect("\r\n3\r\n", at);

    for line in ["function twice(s)\r", "  return s .. s\r", "end\r"] {
        t.type_keys(line);
        std::thread::sleep(Duration::from_millis(50));
    }
    at = t.expect(">> ", at);
    t.type_keys("twice('ab')\r");
    at = t.expect("\"abab\"", at);

    t.type_keys("band.colt\t");
    at = t.expect("band.coltrane", at);
    t.type_keys(":generate('hi')\r");
    at = t.expect(script("coltrane"), at);
    at = t.expect("finish_reason = \"stop\"", at);

    // A long evaluation that streams; Ctrl-C stops it and the REPL stays.
    t.type_keys("for i = 1, 20000 do band.ella:generate('x') end\r");
    at = t.expect("Moonlight", at);
    let before = t.seen();
    t.type_keys("\x03");
    at = t.expect("[cancelled]", at.max(before));
    t.type_keys("40 + 2\r");
    at = t.expect("\r\n42\r\n", at);

    t.type_keys("\x04");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = t.child.try_wait().unwrap() {
            assert!(status.success(), "the REPL left cleanly: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the REPL did not leave on Ctrl-D"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = at;
}
