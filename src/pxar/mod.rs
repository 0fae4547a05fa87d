//! The pxar archive format alone (spec §7): knows no datastore and no FUSE. The decoder
//! reads through `util::ReadAt` (the store's `IndexReader` in practice), the encoder
//! writes into any `std::io::Write` (backup's chunker in practice).

pub mod acl;
pub mod catalog;
pub mod decoder;
pub mod encoder;
pub mod format;
