//! Message queues: a bounded single-producer single-consumer queue of messages in a
//! segment, lock-free and crash-aware ([`Producer`], [`Consumer`]). The layout and
//! protocol are in `layout.rs`, what both ends share in `end.rs`; the README's "Message
//! queues" section shows the use.

mod consumer;
mod end;
mod layout;
mod producer;

pub use consumer::Consumer;
pub use producer::Producer;
