//! `SharedMemory::open_or_create`: how long the call takes when it creates (nobody has the
//! key) and when it attaches (another process holds the segment), beside `create` and
//! `attach` alone, which it replaces when no race happens: the price of asking once.
//! Per key type and lock mode, 4 KiB; only the call is timed (the detach after it is not).

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qshm::{AccessMode, Opened};

use crate::locks::{self, CYCLE_FLAVOURS, Flavour};
use crate::{Runner, interleaved, key};

pub const METRIC: &str = "open_or_create_us";

const SIZE: usize = 4096;

/// What is timed.
#[derive(Clone, Copy)]
enum Call {
    /// `open_or_create` on a key nobody has: it creates.
    Creates,
    /// `create` alone, the same way.
    CreateAlone,
    /// `open_or_create` on a key another process holds: it attaches.
    Attaches,
    /// `attach` alone, the same way.
    AttachAlone,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Creates => "open_or_create, creates",
            Call::CreateAlone => "create alone",
            Call::Attaches => "open_or_create, attaches",
            Call::AttachAlone => "attach alone",
        }
    }
}

/// `runs` runs of `calls` calls of each flavour and call, interleaved.
pub fn measure(runs: usize, calls: usize) {
    let mut runners: Vec<Runner> = Vec::new();
    for f in CYCLE_FLAVOURS {
        for call in [
            Call::Creates,
            Call::CreateAlone,
            Call::Attaches,
            Call::AttachAlone,
        ] {
            runners.push((
                format!("{}: {}", f.name, call.name()),
                Box::new(move || run(f, call, calls)),
            ));
        }
    }
    interleaved(METRIC, None, runs, "us", runners);
}

/// Microseconds per call, over `calls` calls.
fn run(f: Flavour, call: Call, calls: usize) -> f64 {
    let holder = match call {
        Call::Attaches | Call::AttachAlone => Some(Holder::start(f)),
        _ => None,
    };
    let mut spent = Duration::ZERO;
    for _ in 0..calls {
        let k = match &holder {
            Some(h) => h.key.clone(),
            None => key("ooc"),
        };
        let mut shm = locks::handle(&k, f);
        let t = Instant::now();
        let opened = match call {
            Call::Creates | Call::Attaches => shm
                .open_or_create(SIZE, AccessMode::ReadWrite)
                .expect("open_or_create"),
            Call::CreateAlone => shm
                .create(SIZE, AccessMode::ReadWrite)
                .map(|()| Opened::Created)
                .expect("create"),
            Call::AttachAlone => shm
                .attach(AccessMode::ReadWrite)
                .map(|()| Opened::Attached)
                .expect("attach"),
        };
        spent += t.elapsed();
        let expected = match call {
            Call::Creates | Call::CreateAlone => Opened::Created,
            _ => Opened::Attached,
        };
        assert_eq!(opened, expected, "{} {}", f.name, call.name());
        shm.detach().expect("detach");
    }
    drop(holder);
    spent.as_secs_f64() * 1e6 / calls as f64
}

/// Another process holding a segment (created, no lock taken) until dropped.
struct Holder {
    key: String,
    child: Child,
}

impl Holder {
    fn start(f: Flavour) -> Holder {
        let key = key("oochold");
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "child",
                "ooc-hold",
                &key,
                if f.kind.is_system_v() { "sysv" } else { "posix" },
            ])
            .args([if f.mode == qshm::LockMode::Fast {
                "fast"
            } else {
                "qt"
            }])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let mut ready = [0u8; 1];
        use std::io::Read as _;
        child
            .stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut ready)
            .expect("the holder created its segment");
        Holder { key, child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: it detaches (destroys) and exits
        let _ = self.child.wait();
    }
}

/// The holder child: `ooc-hold KEY sysv|posix qt|fast`: create, say so (one byte), hold
/// until stdin closes.
pub fn child(args: &[String]) {
    let kind = if args[1] == "sysv" {
        qshm::KeyType::SystemV
    } else {
        qshm::KeyType::PosixRealtime
    };
    let mode = if args[2] == "fast" {
        qshm::LockMode::Fast
    } else {
        qshm::LockMode::QtCompatible
    };
    let mut shm = qshm::SharedMemory::with_key_type(&args[0], kind).with_lock_mode(mode);
    shm.create(SIZE, AccessMode::ReadWrite).expect("holder create");
    let mut out = std::io::stdout();
    out.write_all(b"!").and_then(|()| out.flush()).expect("tell");
    let mut rest = Vec::new();
    use std::io::Read as _;
    let _ = std::io::stdin().read_to_end(&mut rest);
    shm.detach().expect("holder detach");
}
