//! [`Status`] and [`Code`]: the outcome of a call, with gRPC's names and meanings.

use std::fmt;

/// A status code, numbered and named exactly as gRPC's, so users already know them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Code {
    /// Not an error; returned on success.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error that fits no other code.
    Unknown = 2,
    /// The caller gave an invalid argument (e.g. a payload that does not decode).
    InvalidArgument = 3,
    /// The deadline expired before the operation completed.
    DeadlineExceeded = 4,
    /// A requested entity (for RPC: the method) was not found.
    NotFound = 5,
    /// The entity a caller tried to create already exists.
    AlreadyExists = 6,
    /// The caller lacks permission for the operation.
    PermissionDenied = 7,
    /// A resource (in-flight calls, frame size, quota) is exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted, typically due to a concurrency issue.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation (or codec, or protocol version) is not implemented or supported.
    Unimplemented = 12,
    /// An internal invariant broke (e.g. a handler panicked).
    Internal = 13,
    /// The service is currently unavailable; a safe call may be retried.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The caller has no valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a wire byte; unknown values map to [`Code::Unknown`], as gRPC does.
    pub fn from_u8(v: u8) -> Code {
        Code::ALL.get(v as usize).copied().unwrap_or(Code::Unknown)
    }

    /// The gRPC name, e.g. `DEADLINE_EXCEEDED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// A one-line human-readable meaning of the code.
    pub fn description(self) -> &'static str {
        match self {
            Code::Ok => "the call succeeded",
            Code::Cancelled => "the call was cancelled, usually by its caller",
            Code::Unknown => "an error that fits no other code",
            Code::InvalidArgument => "the request was invalid (e.g. its payload did not decode)",
            Code::DeadlineExceeded => "the call's deadline expired before it completed",
            Code::NotFound => "the method (or another requested entity) does not exist",
            Code::AlreadyExists => "the entity the caller tried to create already exists",
            Code::PermissionDenied => "the caller may not do this",
            Code::ResourceExhausted => "a limit was reached (in-flight calls, frame size, quota)",
            Code::FailedPrecondition => "the system is not in the state this call requires",
            Code::Aborted => "the call was aborted, typically by a concurrency conflict",
            Code::OutOfRange => "the call went past a valid range",
            Code::Unimplemented => "the method, codec or protocol version is not supported",
            Code::Internal => "an internal error (e.g. the handler panicked)",
            Code::Unavailable => "the service is unavailable right now; safe calls may be retried",
            Code::DataLoss => "unrecoverable data loss or corruption",
            Code::Unauthenticated => "the caller has no valid credentials",
        }
    }

    /// Parses a gRPC name such as `NOT_FOUND` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a failed call: a [`Code`] and a message saying what failed.
///
/// `not_processed` is set when the server (or the client, before sending) refused the
/// call before any handler ran, so the caller may safely send it again elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    not_processed: bool,
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), not_processed: false }
    }

    /// Marks this status as "the call never reached a handler" (see [`Status::not_processed`]).
    #[must_use]
    pub fn with_not_processed(mut self, not_processed: bool) -> Status {
        self.not_processed = not_processed;
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the call was rejected before its handler ran, so re-sending it is safe.
    pub fn not_processed(&self) -> bool {
        self.not_processed
    }

    /// `CANCELLED` with a message.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }
    /// `INVALID_ARGUMENT` with a message.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    /// `DEADLINE_EXCEEDED` with a message.
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
    /// `NOT_FOUND` with a message.
    pub fn not_found(message: impl Into<String>) -> Status {
        Status::new(Code::NotFound, message)
    }
    /// `RESOURCE_EXHAUSTED` with a message.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }
    /// `FAILED_PRECONDITION` with a message.
    pub fn failed_precondition(message: impl Into<String>) -> Status {
        Status::new(Code::FailedPrecondition, message)
    }
    /// `UNIMPLEMENTED` with a message.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
    /// `INTERNAL` with a message.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    /// `UNAVAILABLE` with a message.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    /// `UNAUTHENTICATED` with a message.
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::Unauthenticated, message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}: {}", self.code, self.code.description())
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_byte_and_name() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as u8 as usize, i);
            assert_eq!(Code::from_u8(i as u8), *c);
            assert_eq!(Code::from_name(c.as_str()), Some(*c));
        }
        assert_eq!(Code::from_u8(200), Code::Unknown);
    }

    #[test]
    fn display_names_code_and_message() {
        let s = Status::not_found("unknown method Foo.Bar");
        assert_eq!(s.to_string(), "NOT_FOUND: unknown method Foo.Bar");
        assert!(!s.not_processed());
        assert!(Status::unavailable("x").with_not_processed(true).not_processed());
    }
}
