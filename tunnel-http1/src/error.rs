//! The one error type. Each message names what was wrong and, where it helps, the offending
//! text (escaped and cut short by `text::shown`: it is the caller's). Every error is a leaf
//! with no `source()`, as `tunnel/src/errors.rs` asks: the call sites log the message alone.

use std::fmt;

use thiserror::Error;

use crate::{MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS};

/// Why a request could not be framed safely. The connection is to be reset.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("a {0} longer than {max} bytes", max = .0.max())]
    TooLong(Unit),
    #[error("more than {MAX_HEADERS} fields in a {0}")]
    TooManyFields(Unit),
    #[error("a bare LF (a line ending without CR) in a {0}")]
    BareLf(Unit),
    #[error("a bare CR (a CR not followed by LF) in a {0}")]
    BareCr(Unit),
    #[error("a request that is not HTTP/1.0 or HTTP/1.1: '{0}'")]
    NotHttp1(String),
    #[error("a malformed request line '{0}'")]
    RequestLine(String),
    #[error("whitespace between the header name and the colon in '{0}'")]
    WhitespaceBeforeColon(String),
    #[error("a field line that starts with whitespace (obsolete line folding): '{0}'")]
    ObsFold(String),
    #[error("a field line without a colon: '{0}'")]
    NoColon(String),
    #[error("an invalid header name '{0}'")]
    FieldName(String),
    #[error("an invalid character in the value of '{0}'")]
    FieldValue(String),
    #[error("a malformed {0}")]
    Malformed(Unit),
    #[error("an invalid Content-Length '{0}'")]
    ContentLength(String),
    #[error("conflicting Content-Length values {0} and {1}")]
    ConflictingLengths(u64, u64),
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    #[error("a Transfer-Encoding other than a single 'chunked': '{0}'")]
    NotChunked(String),
    #[error("more than one Transfer-Encoding field")]
    TransferEncodingRepeated,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("an invalid chunk size in '{0}'")]
    ChunkSize(String),
    #[error("an invalid chunk extension in '{0}'")]
    ChunkExtension(String),
    #[error("a chunk's data not followed by CRLF")]
    ChunkDataEnd,
}

/// The part of a request an error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Head,
    ChunkLine,
    Trailers,
}

impl Unit {
    /// The most bytes it may take.
    pub(crate) fn max(self) -> usize {
        match self {
            Unit::Head | Unit::Trailers => MAX_HEAD,
            Unit::ChunkLine => MAX_CHUNK_LINE,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Head => "request head",
            Unit::ChunkLine => "chunk-size line",
            Unit::Trailers => "trailer section",
        })
    }
}
