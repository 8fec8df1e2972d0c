//! Async wake-ups across processes (being written).
fn main() {}
