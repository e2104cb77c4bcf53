//! A topic's id (KIP-516), asked of the cluster through librdkafka's DescribeTopics (a
//! Metadata request, v10 or later, on the consumer's own connections, so SASL and TLS
//! settings apply). The rdkafka crate does not wrap this call; this module does, with every
//! librdkafka object freed on every path.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::Consumer;

/// Why the id could not be learned.
#[derive(Debug, thiserror::Error)]
#[error("cannot describe topic {topic}: {reason}")]
pub struct TopicIdError {
    topic: String,
    reason: String,
}

/// The topic's id in Kafka's text form (URL-safe base64 without padding, as
/// `kafka-topics --describe` prints it), or `None` when the cluster has no topic ids (the
/// all-zero id). Blocks for at most `timeout`.
#[allow(unsafe_code)] // librdkafka's C API
pub fn topic_id<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, TopicIdError> {
    let fail = |reason: String| TopicIdError {
        topic: topic.to_string(),
        reason,
    };
    let name = CString::new(topic).map_err(|_| fail("the name contains a NUL byte".into()))?;
    let rk = consumer.client().native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` is the live handle owned by `consumer`, borrowed for this call. Every
    // object created below is destroyed before returning, on every path; pointers read from
    // the result event are used only while the event lives.
    unsafe {
        let mut names = [name.as_ptr()];
        let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, topics, options, queue);
        // The admin request times out by itself; the extra second lets its result arrive.
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let result = read_event(event).map_err(fail);
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_TopicCollection_destroy(topics);
        result
    }
}

/// Reads the id out of a DescribeTopics result event (null: timed out).
///
/// # Safety
/// `event` is null or a live event from `rd_kafka_queue_poll`.
#[allow(unsafe_code)]
unsafe fn read_event(event: *mut rd::rd_kafka_event_t) -> Result<Option<String>, String> {
    // SAFETY: the caller passes null or a live event; every pointer read from it is
    // used while the event lives, and null pointers are checked before use.
    unsafe {
        if event.is_null() {
            return Err("no answer from the cluster in time".into());
        }
        if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(text(rd::rd_kafka_event_error_string(event)));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event);
        if result.is_null() {
            return Err("unexpected answer (not a DescribeTopics result)".into());
        }
        let mut count = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        if descriptions.is_null() || count == 0 {
            return Err("the answer lists no topic".into());
        }
        let description = *descriptions;
        let error = rd::rd_kafka_TopicDescription_error(description);
        if !error.is_null()
            && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(text(rd::rd_kafka_error_string(error)));
        }
        let id = rd::rd_kafka_TopicDescription_topic_id(description);
        if id.is_null() {
            return Ok(None);
        }
        let msb = rd::rd_kafka_Uuid_most_significant_bits(id);
        let lsb = rd::rd_kafka_Uuid_least_significant_bits(id);
        Ok(format_id(msb, lsb))
    }
}

/// A C string from librdkafka, or a placeholder for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the call.
#[allow(unsafe_code)]
unsafe fn text(p: *const std::os::raw::c_char) -> String {
    // SAFETY: the caller passes null (checked) or a NUL-terminated string that outlives
    // the call.
    unsafe {
        if p.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Kafka's text form of a topic id: the 16 bytes, most significant first, in URL-safe
/// base64 without padding (22 characters). The all-zero id means "no id".
pub fn format_id(msb: i64, lsb: i64) -> Option<String> {
    if msb == 0 && lsb == 0 {
        return None;
    }
    use base64::Engine;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&msb.to_be_bytes());
    bytes[8..].copy_from_slice(&lsb.to_be_bytes());
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_kafka_prints_them() {
        assert_eq!(format_id(0, 0), None);
        // Kafka: Uuid.fromString("AAAAAAAAAAAAAAAAAAAAAQ") has msb 0, lsb 1.
        assert_eq!(format_id(0, 1).as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAQ"));
        // All ones: every sextet 63 ('_'), the last character holds 2 bits ('w').
        assert_eq!(format_id(-1, -1).as_deref(), Some("_____________________w"));
        // The high bit is encoded first: 0x80.. starts with 'g'.
        let s = format_id(i64::MIN, 0).unwrap();
        assert_eq!((s.len(), &s[..1]), (22, "g"));
    }
}
