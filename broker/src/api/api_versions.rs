//! ApiVersions: advertises exactly what [`super::SUPPORTED`] lists.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::SUPPORTED;

pub fn handle() -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r.finalized_features_epoch = -1;
    r
}

/// The reply to an ApiVersions request of a version we do not know.
pub fn unsupported_version() -> ResponseKind {
    let mut r = handle();
    r.error_code = ResponseError::UnsupportedVersion.code();
    r.into()
}
