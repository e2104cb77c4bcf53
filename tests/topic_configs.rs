//! Topic configs: given at creation or changed with AlterConfigs, checked (INVALID_CONFIG),
//! described with their source, applied live (max.message.bytes, retention), and kept
//! across a restart; a recreated topic starts from the defaults.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

const WAIT: Duration = Duration::from_secs(30);

/// A topic config's value and source (`ConfigSource` by name).
async fn config(bs: &str, topic: &str, name: &str) -> (Option<String>, String) {
    let described = admin(bs)
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let r = described[0].as_ref().expect("described");
    let e = r.get(name).unwrap_or_else(|| panic!("{name} listed"));
    (e.value.clone(), format!("{:?}", e.source))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_checked_applied_live_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BinaryBroker::start(dir.path());
    let bs = broker.addr.clone();
    let admin = admin(&bs);
    let opts = AdminOptions::new();
    let bad = admin
        .create_topics(
            &[NewTopic::new("conf", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon")],
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(
        bad[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidConfig
    );
    let created = admin
        .create_topics(
            &[NewTopic::new("conf", 1, TopicReplication::Fixed(1))
                .set("retention.ms", "3600000")
                .set("cleanup.policy", "compact,delete")],
            &opts,
        )
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    assert_eq!(
        config(&bs, "conf", "retention.ms").await,
        (Some("3600000".into()), "DynamicTopic".to_string())
    );
    assert_eq!(
        config(&bs, "conf", "max.message.bytes").await,
        (Some("1048576".into()), "StaticBroker".to_string())
    );

    // AlterConfigs replaces the set: max.message.bytes 2000 applies at once
    let altered = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("conf")).set("max.message.bytes", "2000")],
            &opts,
        )
        .await
        .unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let p = producer(&bs, &[("batch.size", "100000"), ("linger.ms", "0")]);
    let big = "x".repeat(5000);
    let refused = p
        .send(FutureRecord::<(), _>::to("conf").payload(&big), WAIT)
        .await;
    assert!(
        matches!(
            refused,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                _
            ))
        ),
        "{refused:?}"
    );
    p.send(FutureRecord::<(), _>::to("conf").payload("small"), WAIT)
        .await
        .unwrap();
    assert_eq!(config(&bs, "conf", "retention.ms").await.1, "StaticBroker");
    // an unknown config or a bad value: INVALID_CONFIG, nothing changed (raw request: the
    // rdkafka crate does not surface per-resource errors of AlterConfigs)
    {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
        use kafka_protocol::protocol::StrBytes;
        let mut raw = RawClient::connect(&bs);
        for (name, value) in [("no.such.config", "1"), ("max.message.bytes", "big")] {
            let req =
                AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default(
                )
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("conf"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str(name))
                    .with_value(Some(StrBytes::from_static_str(value)))])]);
            let r: AlterConfigsResponse = raw.call(ApiKey::AlterConfigs, 1, &req);
            assert_eq!(
                r.responses[0].error_code, 40,
                "INVALID_CONFIG for {name}={value}"
            );
            let msg = r.responses[0]
                .error_message
                .as_deref()
                .unwrap_or("")
                .to_string();
            assert!(msg.contains(name), "{msg}");
        }
    }
    assert_eq!(
        config(&bs, "conf", "max.message.bytes").await.0.as_deref(),
        Some("2000")
    );

    // kept across a restart
    broker.kill9();
    let _broker = BinaryBroker::start_with(dir.path(), &["--listen", &bs]);
    assert_eq!(
        config(&bs, "conf", "max.message.bytes").await,
        (Some("2000".into()), "DynamicTopic".to_string())
    );
    // a recreated topic starts from the defaults
    let admin = common::admin(&bs);
    admin.delete_topics(&["conf"], &opts).await.unwrap();
    create_topic(&bs, "conf", 1).await;
    assert_eq!(
        config(&bs, "conf", "max.message.bytes").await.1,
        "StaticBroker"
    );
}
