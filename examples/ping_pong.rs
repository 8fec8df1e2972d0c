//! Two processes ping-pong a counter through one segment under the lock.
//!
//! `cargo run --example ping_pong` starts the "ping" side, which creates the segment and
//! re-executes itself as the "pong" side. Each side waits for its turn (byte 8), bumps
//! the counter (bytes 0..8) and hands the turn over, under `LockMode::Fast`.

use std::time::{Duration, Instant};

use qshm::{AccessMode, LockMode, SharedMemory};

const ROUNDS: u64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pong") {
        return play(&args[2], 1);
    }
    let key = format!("ping-pong-{}", std::process::id());
    let mut shm = SharedMemory::new(&key).with_lock_mode(LockMode::Fast);
    shm.create(64, AccessMode::ReadWrite)?;
    let mut pong = std::process::Command::new(std::env::current_exe()?)
        .args(["pong", &key])
        .spawn()?;
    play(&key, 0)?;
    pong.wait()?;
    shm.detach()?; // last user: the segment is destroyed
    println!("done: {ROUNDS} round trips");
    Ok(())
}

/// Play side `me` (0 = ping, 1 = pong) until the counter reaches 2 * ROUNDS.
fn play(key: &str, me: u8) -> Result<(), Box<dyn std::error::Error>> {
    let mut shm = SharedMemory::new(key).with_lock_mode(LockMode::Fast);
    shm.attach(AccessMode::ReadWrite)?;
    let name = if me == 0 { "ping" } else { "pong" };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let mut data = shm.lock()?;
            let count = u64::from_ne_bytes(data[..8].try_into()?);
            if count >= 2 * ROUNDS {
                return Ok(());
            }
            if data[8] == me {
                println!("{name}: {count} -> {}", count + 1);
                data[..8].copy_from_slice(&(count + 1).to_ne_bytes());
                data[8] = 1 - me;
            }
        }
        if Instant::now() > deadline {
            return Err("the other side stopped answering".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
