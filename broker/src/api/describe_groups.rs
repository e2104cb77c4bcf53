//! DescribeGroups: state, protocol and members with their metadata and assignments.

use std::sync::Arc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::state::State;

pub fn handle(state: &Arc<State>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| match state.groups.describe(&id) {
            Some(d) => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
            // Kafka describes an unknown group as "Dead" with no error (before v6).
            None => DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes("Dead")),
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
