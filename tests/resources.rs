//! The table and queues declared in template.yaml are the ones the code
//! defines (shared/src/resources.rs) and creates locally.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;
use tokenbill::resources::{self, QUEUES, TABLE};
use tokenbill_tests::{dynamodb, sqs, unique_name};

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read template.yaml")).expect("parse template.yaml")
}

fn resource<'a>(template: &'a Value, logical_id: &str) -> &'a Value {
    let resource = &template["Resources"][logical_id];
    assert!(!resource.is_null(), "template.yaml has no resource {logical_id}");
    resource
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn key_schema(value: &Value) -> Vec<(String, String)> {
    value
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .map(|k| (text(&k["AttributeName"]), text(&k["KeyType"])))
        .collect()
}

#[test]
fn template_table_matches_the_code() {
    let template = template();
    let table = &resource(&template, "Table")["Properties"];

    let declared: BTreeMap<String, String> = table["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| (text(&a["AttributeName"]), text(&a["AttributeType"])))
        .collect();
    let expected: BTreeMap<String, String> = TABLE
        .key_attributes()
        .iter()
        .map(|a| (a.name.to_owned(), a.kind.code().to_owned()))
        .collect();
    assert_eq!(declared, expected, "AttributeDefinitions");

    assert_eq!(
        key_schema(&table["KeySchema"]),
        [
            (TABLE.partition.name.to_owned(), "HASH".to_owned()),
            (TABLE.sort.name.to_owned(), "RANGE".to_owned())
        ]
    );

    let indexes: BTreeMap<String, (Vec<(String, String)>, String)> = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|i| {
            (
                text(&i["IndexName"]),
                (key_schema(&i["KeySchema"]), text(&i["Projection"]["ProjectionType"])),
            )
        })
        .collect();
    let expected: BTreeMap<String, (Vec<(String, String)>, String)> = TABLE
        .indexes
        .iter()
        .map(|i| {
            let schema = vec![
                (i.partition.name.to_owned(), "HASH".to_owned()),
                (i.sort.name.to_owned(), "RANGE".to_owned()),
            ];
            (i.name.to_owned(), (schema, "ALL".to_owned()))
        })
        .collect();
    assert_eq!(indexes, expected, "GlobalSecondaryIndexes");

    assert_eq!(
        text(&table["TimeToLiveSpecification"]["AttributeName"]),
        TABLE.ttl_attribute
    );
    assert_eq!(text(&table["TimeToLiveSpecification"]["Enabled"]), "true");
    assert_eq!(text(&table["BillingMode"]), "PAY_PER_REQUEST");
    assert_eq!(
        text(&table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]),
        "true"
    );
}

#[test]
fn template_queues_match_the_code() {
    let template = template();
    for queue in QUEUES {
        let properties = &resource(&template, queue.logical_id)["Properties"];
        assert_eq!(
            text(&properties["VisibilityTimeout"]),
            queue.visibility_timeout_seconds.to_string(),
            "{}",
            queue.logical_id
        );
        assert_eq!(
            text(&properties["MessageRetentionPeriod"]),
            queue.retention_seconds.to_string(),
            "{}",
            queue.logical_id
        );
        let redrive = &properties["RedrivePolicy"];
        match queue.dead_letter {
            Some((dead_letter, max_receive_count)) => {
                assert_eq!(text(&redrive["maxReceiveCount"]), max_receive_count.to_string());
                let target = match &redrive["deadLetterTargetArn"] {
                    Value::Tagged(tagged) if tagged.tag == "!GetAtt" => text(&tagged.value),
                    other => panic!("deadLetterTargetArn should be !GetAtt, found {other:?}"),
                };
                assert_eq!(target, format!("{dead_letter}.Arn"));
            }
            None => assert!(redrive.is_null(), "{} must not have a redrive policy", queue.logical_id),
        }
    }
}

#[tokio::test]
async fn local_table_is_created_as_defined() {
    let client = dynamodb().await;
    let name = unique_name("resources");
    assert!(resources::create_table(&client, &name).await.unwrap());
    assert!(
        !resources::create_table(&client, &name).await.unwrap(),
        "creating again is a no-op"
    );

    let table = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let attributes: BTreeSet<(String, String)> = table
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name().to_owned(), a.attribute_type().as_str().to_owned()))
        .collect();
    let expected: BTreeSet<(String, String)> = TABLE
        .key_attributes()
        .iter()
        .map(|a| (a.name.to_owned(), a.kind.code().to_owned()))
        .collect();
    assert_eq!(attributes, expected);
    let indexes: BTreeSet<String> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name().map(str::to_owned))
        .collect();
    assert_eq!(indexes, TABLE.indexes.iter().map(|i| i.name.to_owned()).collect());

    let ttl = client.describe_time_to_live().table_name(&name).send().await.unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name(), Some(TABLE.ttl_attribute));
}

#[tokio::test]
async fn local_queues_are_created_with_their_dead_letter_queue() {
    let client = sqs().await;
    let prefix = format!("{}-", unique_name("q"));
    let created = resources::create_queues(&client, &prefix).await.unwrap();
    assert_eq!(created.len(), QUEUES.len());
    let again = resources::create_queues(&client, &prefix).await.unwrap();
    assert_eq!(created, again, "creating again returns the same queues");

    let (_, url) = created.iter().find(|(id, _)| *id == "NotificationQueue").unwrap();
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "180");
    let policy: serde_json::Value = serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{prefix}tokenbill-notifications-dlq"))
    );
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "5");
}

/// Every crate under functions/ is deployed by a template resource that
/// builds its binary, and nothing else is.
#[test]
fn every_function_crate_has_a_template_resource() {
    let template = template();
    let functions = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions");
    let crates: BTreeSet<String> = std::fs::read_dir(functions)
        .expect("read functions/")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!crates.is_empty());
    let binaries: BTreeSet<String> = template["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .filter(|resource| resource["Type"] == "AWS::Serverless::Function")
        .map(|resource| {
            assert_eq!(text(&resource["Metadata"]["BuildMethod"]), "rust-cargolambda");
            text(&resource["Metadata"]["BuildProperties"]["Binary"])
        })
        .collect();
    assert_eq!(crates, binaries, "function crates and template functions differ");
}

/// Every HTTP route the template declares is served by the local runner
/// (which mounts the same handlers): none answers 404 or 405.
#[tokio::test]
async fn every_template_route_has_a_handler() {
    let template = template();
    let mut routes = Vec::new();
    for resource in template["Resources"].as_mapping().expect("Resources").values() {
        for event in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|events| events.values())
        {
            if event["Type"] == "HttpApi" {
                routes.push((text(&event["Properties"]["Method"]), text(&event["Properties"]["Path"])));
            }
        }
    }
    assert!(!routes.is_empty());
    let store = tokenbill_tests::fresh_store().await;
    let app = tokenbill_dev::local_app(
        store,
        tokenbill_tests::sqs().await,
        &tokenbill_tests::unique_name("routes-"),
        "http://127.0.0.1".into(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(tokenbill_dev::serve(listener, app.state, std::future::pending()));
    let client = reqwest::Client::new();
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        // Path parameters get a value no record has: a handler may answer
        // "not found" for it, but not "no such route".
        let concrete: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "nothing-here" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let response = client
            .request(method.clone(), format!("http://{addr}{concrete}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        let unrouted = status == 405 || (status == 404 && (body.is_empty() || body.contains("\"no_route\"")));
        assert!(!unrouted, "{method} {path} has no handler ({status} {body})");
    }
    server.abort();
}

/// The value of a short-form intrinsic (`!Ref X`, `!Sub "..."`, `!GetAtt
/// X.Y`) when `value` is one with that tag.
fn intrinsic(value: &Value, tag: &str) -> Option<String> {
    match value {
        Value::Tagged(tagged) if tagged.tag == tag => Some(text(&tagged.value)),
        _ => None,
    }
}

/// Every function keeps its logs for a bounded time and has an alarm on its
/// errors; every dead-letter queue has an alarm on its depth; every alarm
/// notifies someone.
#[test]
fn every_function_has_log_retention_and_an_error_alarm() {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let of_type = |kind: &'static str| resources.iter().filter(move |(_, r)| r["Type"] == kind);
    let functions: BTreeSet<String> = of_type("AWS::Serverless::Function").map(|(id, _)| text(id)).collect();
    assert!(!functions.is_empty());

    let logged: BTreeSet<String> = of_type("AWS::Logs::LogGroup")
        .filter(|(_, r)| r["Properties"]["RetentionInDays"].as_u64().is_some())
        .filter_map(|(_, r)| intrinsic(&r["Properties"]["LogGroupName"], "!Sub"))
        .filter_map(|name| Some(name.strip_prefix("/aws/lambda/${")?.strip_suffix('}')?.to_owned()))
        .collect();
    assert_eq!(functions, logged, "functions and log groups with retention differ");

    let alarms: Vec<&Value> = of_type("AWS::CloudWatch::Alarm")
        .map(|(_, r)| &r["Properties"])
        .collect();
    let dimension = |alarm: &Value, name: &str| {
        alarm["Dimensions"]
            .as_sequence()
            .and_then(|dims| dims.iter().find(|d| d["Name"] == name))
            .map(|d| d["Value"].clone())
    };
    let alarmed: BTreeSet<String> = alarms
        .iter()
        .filter(|a| a["Namespace"] == "AWS/Lambda" && a["MetricName"] == "Errors")
        .filter_map(|a| intrinsic(&dimension(a, "FunctionName")?, "!Ref"))
        .collect();
    assert_eq!(functions, alarmed, "functions and error alarms differ");

    for queue in QUEUES
        .iter()
        .filter_map(|q| q.dead_letter.map(|(dead_letter, _)| dead_letter))
    {
        let watched = alarms.iter().any(|a| {
            a["Namespace"] == "AWS/SQS"
                && a["MetricName"] == "ApproximateNumberOfMessagesVisible"
                && dimension(a, "QueueName").and_then(|v| intrinsic(&v, "!GetAtt"))
                    == Some(format!("{queue}.QueueName"))
        });
        assert!(watched, "no alarm on the depth of the dead-letter queue {queue}");
    }
    for alarm in &alarms {
        let actions = alarm["AlarmActions"].as_sequence().map_or(0, Vec::len);
        assert!(actions > 0, "alarm {:?} notifies no one", alarm["AlarmDescription"]);
    }
}

/// A function fed by a queue finishes well within the queue's visibility
/// timeout (AWS asks for six times the function timeout), or messages come
/// back while they are still being worked on.
#[test]
fn queue_visibility_covers_its_consumers() {
    let template = template();
    let default_timeout = template["Globals"]["Function"]["Timeout"]
        .as_u64()
        .expect("Globals timeout");
    let mut consumers = 0;
    for (id, resource) in template["Resources"].as_mapping().expect("Resources") {
        let timeout = resource["Properties"]["Timeout"].as_u64().unwrap_or(default_timeout);
        for event in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|events| events.values())
            .filter(|event| event["Type"] == "SQS")
        {
            let arn = intrinsic(&event["Properties"]["Queue"], "!GetAtt").expect("Queue: !GetAtt X.Arn");
            let queue = QUEUES
                .iter()
                .find(|q| format!("{}.Arn", q.logical_id) == arn)
                .unwrap_or_else(|| panic!("{} reads {arn}, not a queue in shared/src/resources.rs", text(id)));
            assert!(
                u64::from(queue.visibility_timeout_seconds) >= 6 * timeout,
                "{}: {} s timeout, {} visibility {} s",
                text(id),
                timeout,
                queue.logical_id,
                queue.visibility_timeout_seconds
            );
            consumers += 1;
        }
    }
    assert!(consumers > 0, "no function reads a queue");
}
