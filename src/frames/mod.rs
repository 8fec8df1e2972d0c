//! Frame channels: the newest whole frame (an image, a sensor block) from one writer to
//! any number of readers, through a segment, without locks: [`FrameWriter`] and
//! [`FrameReader`]. The layout and its protocol (a seqlock per buffer, N buffers) are in
//! `layout.rs`; the README's "Frames" section shows the use.

mod layout;
mod reader;
mod writer;

pub use reader::{Frame, FrameReader};
pub use writer::FrameWriter;
