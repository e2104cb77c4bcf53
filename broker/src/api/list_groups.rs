//! ListGroups, with the v4 state filter and v5 type filter.

use std::sync::Arc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::state::State;

pub fn handle(state: &Arc<State>, req: ListGroupsRequest) -> ListGroupsResponse {
    let groups = state
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, s)| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(s.name()))
        })
        .filter(|_| {
            req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case("classic"))
        })
        .map(|(id, protocol_type, s)| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type))
                .with_group_state(str_bytes(s.name()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
