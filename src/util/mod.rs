//! What every layer shares and nothing of the datastore: the error type and its two
//! mappings, digests, time, task ids, and the audited libc calls.

pub mod digest;
pub mod error;
pub mod sys;
pub mod time;
pub mod upid;
