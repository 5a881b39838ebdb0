//! `Registry::register` against the local registry (Apicurio's Confluent API): a new subject is
//! registered with `BACKWARD_TRANSITIVE` set on it; the same schema again is found with its id;
//! a compatible new version gets a new id; an incompatible one is refused, also when the
//! subject was registered by someone else with a lower level.

use std::time::Duration;

use pipeline_io::registry::{Registry, RegistryError};
use test_harness::registry::RegistryClient;
use test_harness::{schema_registry_url, unique_name};

const V1: &str = r#"{"type":"record","name":"Thing","namespace":"test.registry","fields":[
  {"name":"id","type":"string"}]}"#;
/// V1 with a nullable field that has a default: reads V1's data.
const V2: &str = r#"{"type":"record","name":"Thing","namespace":"test.registry","fields":[
  {"name":"id","type":"string"},{"name":"note","type":["null","string"],"default":null}]}"#;
/// A required field without a default: cannot read V1's data.
const BREAKING: &str = r#"{"type":"record","name":"Thing","namespace":"test.registry","fields":[
  {"name":"id","type":"string"},{"name":"size","type":"long"}]}"#;

fn registry() -> Registry {
    Registry::new(&schema_registry_url(), None, Duration::from_secs(30)).expect("registry client")
}

#[tokio::test]
async fn a_new_subject_gets_its_level_and_the_same_schema_keeps_its_id() {
    let subject = format!("{}-value", unique_name("reg-new"));
    let r = registry();
    let first = r.register(&subject, V1).await.expect("registered");
    let level = RegistryClient::from_env()
        .unwrap()
        .subject_compatibility(&subject)
        .await
        .expect("the subject's own level");
    assert_eq!(level, "BACKWARD_TRANSITIVE");
    // A second process (a restart) finds the schema where it is.
    let again = registry().register(&subject, V1).await.expect("found");
    assert_eq!(again, first);
    let v2 = registry().register(&subject, V2).await.expect("compatible");
    assert_ne!(v2, first, "a new version has an id of its own");
    let refused = registry().register(&subject, BREAKING).await;
    assert!(
        matches!(refused, Err(RegistryError::Refused { status: 409, .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_existing_subject_gets_the_level_before_its_next_version_is_checked() {
    // Registered by someone else with no check at all: the level is raised before the next
    // version is registered, so that version is checked against every earlier one.
    let subject = format!("{}-value", unique_name("reg-existing"));
    let other = RegistryClient::from_env().unwrap();
    other
        .set_subject_compatibility(&subject, "NONE")
        .await
        .unwrap();
    other.register_avro(&subject, V1).await.unwrap();
    let refused = registry().register(&subject, BREAKING).await;
    assert!(
        matches!(refused, Err(RegistryError::Refused { status: 409, .. })),
        "{refused:?}"
    );
    assert_eq!(
        other.subject_compatibility(&subject).await.unwrap(),
        "BACKWARD_TRANSITIVE"
    );
}
