//! The datastore's file formats as pure bytes <-> types, with no file system: DataBlobs,
//! fixed and dynamic indexes, manifests, names (namespace, group, snapshot, archive) and
//! notes. Everything here parses untrusted bytes and is what fuzzing targets.

pub mod archive;
pub mod blob;
pub mod blob_read;
pub mod blob_write;
pub mod index;
pub mod manifest;
pub mod names;
pub mod notes;
