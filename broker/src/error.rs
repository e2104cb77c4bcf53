//! Error types of the broker crate.

use std::io;

/// Errors from the storage layer ([`crate::storage`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The underlying sled database failed (I/O error, corruption, ...).
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// Stored data could not be interpreted; the data directory is damaged.
    #[error("storage: corrupt data in {what}: {detail}")]
    Corrupt {
        /// Which key or tree held the bad value.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// A segment file or directory could not be read or written.
    #[error("storage: {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The log stopped taking writes after an fsync failed: the kernel may have dropped
    /// the unsynced pages, so later fsyncs could succeed without the data.
    #[error("storage: {what} refuses writes since an fsync failed ({detail}); restart the broker, which recovers the log from what is on disk")]
    Failed {
        /// The log.
        what: String,
        /// The fsync error.
        detail: String,
    },
    /// Another process holds the data directory.
    #[error("storage: data directory {dir} is in use by another broker process")]
    Locked {
        /// The data directory.
        dir: String,
    },
    /// The topic or partition is not (or no longer) stored.
    #[error("storage: unknown topic-partition {topic}/{partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: i32,
    },
}

/// Errors that stop the broker as a whole (start-up, listener).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// Any other I/O error of the listener.
    #[error("broker I/O: {0}")]
    Io(#[from] io::Error),
    /// The data directory could not be opened or recovered.
    #[error("cannot open the data directory")]
    Storage(#[from] StorageError),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why one client connection was closed by the broker. Logged with the peer address;
/// never affects other connections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// A request other than ApiVersions or the SASL exchange before authentication.
    #[error("{0:?} request before SASL authentication")]
    Unauthenticated(kafka_protocol::messages::ApiKey),
    /// Socket-level failure.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A frame's length prefix was negative, too small or above `--max-request-bytes`.
    #[error("invalid frame length {length} (limit {limit} bytes)")]
    FrameLength {
        /// The length the client announced.
        length: i64,
        /// The configured limit.
        limit: usize,
    },
    /// A request larger than its API's limit (`--max-request-bytes` for Produce,
    /// `--max-other-request-bytes` for the rest, 512 KiB before SASL authentication).
    #[error("request too large for api key {api_key}: {length} bytes (limit {limit})")]
    TooLarge {
        /// API key from the frame.
        api_key: i16,
        /// The length the client announced.
        length: usize,
        /// The limit for that API.
        limit: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed mid-frame ({received} of {expected} bytes received)")]
    Truncated {
        /// Bytes announced by the length prefix.
        expected: usize,
        /// Bytes actually received before EOF.
        received: usize,
    },
    /// The request header or body could not be decoded.
    #[error("malformed request (api key {api_key}, version {api_version}): {detail}")]
    Malformed {
        /// API key from the header (may itself be garbage).
        api_key: i16,
        /// API version from the header.
        api_version: i16,
        /// Decoder message.
        detail: String,
    },
    /// The API key is unknown or not implemented by this broker.
    #[error("unsupported API key {api_key} (version {api_version})")]
    UnsupportedApi {
        /// API key from the header.
        api_key: i16,
        /// API version from the header.
        api_version: i16,
    },
    /// No complete request arrived within the idle timeout.
    #[error("idle for more than {0:?}")]
    Idle(std::time::Duration),
    /// The response could not be encoded (a bug; logged loudly).
    #[error("cannot encode response: {0}")]
    Encode(String),
}
