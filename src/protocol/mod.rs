//! The v1 wire protocol: what a client may send, what the server answers, and the codes both
//! sides rely on. Pure data and (de)serialization; no I/O, no state. `docs/protocol.md` is the
//! human-readable contract for the same types.

mod client;
mod codes;
mod data;
mod names;
mod server;

pub use client::{DecodeError, HistoryOrder, Request, RequestId, Resume, decode_request};
pub use codes::{CloseCode, ErrorCode, ProtocolError};
pub use data::{DataError, MAX_DATA_DEPTH, MAX_NUMBER_CHARS, check_data};
pub use names::{MAX_NAME_LEN, NAME_RULE, name_rule, valid_name};
pub use server::{
    PresenceParts, ServerFrame, encode, encode_direct, encode_message, encode_message_id,
    message_parts, message_parts_id, message_ts, presence_parts,
};
