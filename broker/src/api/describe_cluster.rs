//! DescribeCluster: this single broker (and, when asked, every cluster operation as
//! authorized: there are no ACLs).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::str_bytes;
use crate::state::State;

pub fn handle(state: &Arc<State>, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = &state.advertised;
    DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(state.cluster_id.clone()))
        .with_controller_id(BrokerId(state.config.node_id))
        .with_endpoint_type(1)
        .with_cluster_authorized_operations(super::metadata::ops(
            req.include_cluster_authorized_operations,
            super::metadata::CLUSTER_OPS,
        ))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(state.config.node_id))
            .with_host(str_bytes(host.clone()))
            .with_port(*port)])
}
