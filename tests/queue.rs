//! Message queues across processes (being written).
fn main() {}
