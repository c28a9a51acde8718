//! Golden byte vectors: every sample message (tests/common/samples.rs) encoded
//! at every version that can carry it, committed as one hex line under
//! `tests/vectors/v<N>/<ToEngine|ToEnvoy>/<case>.hex`.
//!
//! Published vectors must never change: peers in the wild were built against
//! them. A test fails when the encoder's bytes differ from a committed file,
//! when a sample has no file, or when a file has no sample.
//!
//! - `UPDATE_GOLDEN=1 cargo test -p envoy-protocol --test golden` writes the
//!   files of new samples (or of a new version) and still fails on a changed one.
//! - `UPDATE_GOLDEN=overwrite` also rewrites changed files. Only ever use it for
//!   vectors that were never published.

mod common;

use common::schema::Schema;
use common::{committed_vectors, expected_vectors, limits, Vector, VERSIONS};
use envoy_protocol::bare::{decode_frame, Encode};
use envoy_protocol::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn committed_vectors_match_the_encoder() {
    let mode = std::env::var("UPDATE_GOLDEN").unwrap_or_default();
    let committed: BTreeMap<_, _> =
        committed_vectors().into_iter().map(|v| ((v.version, v.top, v.case.clone()), v.bytes)).collect();
    let expected = expected_vectors();
    let mut failures = Vec::new();
    for v in &expected {
        let key = (v.version, v.top, v.case.clone());
        let line = format!("{}\n", hex::encode(&v.bytes));
        match committed.get(&key) {
            Some(bytes) if *bytes == v.bytes => {}
            Some(bytes) => {
                if mode == "overwrite" {
                    std::fs::write(v.path(), line).unwrap();
                } else {
                    failures.push(format!(
                        "{} changed:\n  committed {}\n  encoder   {}",
                        v.path().display(),
                        hex::encode(bytes),
                        hex::encode(&v.bytes)
                    ));
                }
            }
            None => {
                if mode.is_empty() {
                    failures.push(format!("{} is missing (run with UPDATE_GOLDEN=1)", v.path().display()));
                } else {
                    std::fs::create_dir_all(v.path().parent().unwrap()).unwrap();
                    std::fs::write(v.path(), line).unwrap();
                }
            }
        }
    }
    let produced: BTreeSet<_> = expected.iter().map(|v| (v.version, v.top, v.case.clone())).collect();
    for key in committed.keys() {
        if !produced.contains(key) {
            failures.push(format!(
                "v{}/{}/{}.hex has no sample (published vectors are never removed)",
                key.0, key.1, key.2
            ));
        }
    }
    assert!(failures.is_empty(), "{} golden vector problem(s):\n{}", failures.len(), failures.join("\n"));
}

/// The union names and member lists the generated code exposes, per version.
fn generated_unions(version: u16) -> BTreeMap<String, Vec<String>> {
    macro_rules! unions {
        ($v:ident: $($u:ident),*) => {
            vec![$((stringify!($u).to_string(), envoy_protocol::$v::$u::MEMBERS.iter().map(|s| s.to_string()).collect())),*]
        };
    }
    let list: Vec<(String, Vec<String>)> = match version {
        1 => {
            unions!(v1: Command, ActorState, Event, GetOrCreateActorResult, KvRequestData, KvResponseData, ToEngine, ToEnvoy)
        }
        2 => {
            unions!(v2: Command, ActorState, Event, GetOrCreateActorResult, KvQuery, KvRequestData, KvResponseData, ToEngine, ToEnvoy)
        }
        3 => {
            unions!(v3: Command, ActorState, Event, GetOrCreateActorResult, KvQuery, KvRequestData, KvResponseData, ToEngine, ToEnvoy)
        }
        4 => unions!(v4: Command, ActorState, Event, GetOrCreateActorResult, KvQuery, KvRequestData, KvResponseData,
            Value, SqliteExecResult, SqliteExecuteResult, ToEngine, ToEnvoy),
        5 => unions!(v5: Command, ActorState, Event, GetOrCreateActorResult, KvQuery, KvRequestData, KvResponseData,
            Value, SqliteExecResult, SqliteExecuteResult, SqliteFailure, SqliteBatchResult, SqliteBeginResult,
            SqliteCommitResult, SqliteRollbackResult, ToEngine, ToEnvoy),
        other => panic!("no generated-union table for v{other}: add one"),
    };
    list.into_iter().collect()
}

/// The versions that have a schema file: a new `v5.bare` shows up here.
fn schema_versions() -> Vec<u16> {
    let mut out: Vec<u16> = std::fs::read_dir(format!("{}/schemas", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix('v')?.strip_suffix(".bare")?.parse().ok()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn schema_files_are_the_versions_spoken() {
    let spoken: Vec<u16> = (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).collect();
    assert_eq!(schema_versions(), spoken);
    assert_eq!(VERSIONS.to_vec(), spoken);
}

#[test]
fn generated_members_match_the_schema_text() {
    for v in schema_versions() {
        assert_eq!(
            Schema::load(v).unions(),
            generated_unions(v),
            "v{v}: unions in the schema vs the generated MEMBERS"
        );
    }
}

#[test]
fn every_union_member_of_every_version_has_a_vector() {
    let vectors = committed_vectors();
    let mut missing = Vec::new();
    for v in schema_versions() {
        let schema = Schema::load(v);
        let mut seen = BTreeSet::new();
        for vec in vectors.iter().filter(|x| x.version == v) {
            let found = schema
                .walk_message(vec.top, &vec.bytes)
                .unwrap_or_else(|e| panic!("v{v}/{}/{}: bytes do not follow the schema text: {e}", vec.top, vec.case));
            seen.extend(found);
        }
        for (union, members) in generated_unions(v) {
            for m in members {
                if !seen.contains(&(union.clone(), m.clone())) {
                    missing.push(format!("v{v} {union}::{m}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "union members without a golden vector (add a sample):\n{}", missing.join("\n"));
}

/// Decodes a vector with the version's own generated types and re-encodes it.
fn reencode_generated(vec: &Vector) -> Vec<u8> {
    macro_rules! at {
        ($v:ident) => {
            match vec.top {
                "ToEngine" => {
                    decode_frame::<envoy_protocol::$v::ToEngine>(&vec.bytes, usize::MAX, usize::MAX).unwrap().to_bytes()
                }
                _ => {
                    decode_frame::<envoy_protocol::$v::ToEnvoy>(&vec.bytes, usize::MAX, usize::MAX).unwrap().to_bytes()
                }
            }
        };
    }
    match vec.version {
        1 => at!(v1),
        2 => at!(v2),
        3 => at!(v3),
        4 => at!(v4),
        5 => at!(v5),
        other => panic!("v{other}"),
    }
}

/// The same bytes through serde_bare, an independent BARE implementation.
fn reencode_serde_bare(vec: &Vector) -> Vec<u8> {
    macro_rules! at {
        ($v:ident) => {
            match vec.top {
                "ToEngine" => {
                    serde_bare::to_vec(&serde_bare::from_slice::<envoy_protocol::$v::ToEngine>(&vec.bytes).unwrap())
                }
                _ => serde_bare::to_vec(&serde_bare::from_slice::<envoy_protocol::$v::ToEnvoy>(&vec.bytes).unwrap()),
            }
            .unwrap()
        };
    }
    match vec.version {
        1 => at!(v1),
        2 => at!(v2),
        3 => at!(v3),
        4 => at!(v4),
        5 => at!(v5),
        other => panic!("v{other}"),
    }
}

#[test]
fn every_vector_decodes_and_reencodes_to_the_same_bytes() {
    let vectors = committed_vectors();
    assert!(!vectors.is_empty());
    for vec in &vectors {
        let name = format!("v{}/{}/{}", vec.version, vec.top, vec.case);
        assert_eq!(vec.decode_and_reencode(&limits()).unwrap(), vec.bytes, "{name}: versioned API");
        assert_eq!(reencode_generated(vec), vec.bytes, "{name}: generated types");
        assert_eq!(reencode_serde_bare(vec), vec.bytes, "{name}: serde_bare");
    }
}

#[test]
fn edge_values_survive_bit_for_bit() {
    use envoy_protocol::*;
    let vec = committed_vectors()
        .into_iter()
        .find(|v| v.version == 4 && v.case == "sqlite_execute_params")
        .expect("v4/ToEngine/sqlite_execute_params.hex");
    let ToEngine::SqliteExecute(m) = decode_to_engine(&vec.bytes, 4, &limits()).unwrap() else {
        panic!("wrong member")
    };
    let params = m.request.params.unwrap();
    let expected = common::samples::edge_values();
    assert_eq!(params.len(), expected.len());
    for (got, want) in params.iter().zip(&expected) {
        match (got, want) {
            (Value::Float(a), Value::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            _ => assert_eq!(got, want),
        }
    }
    assert!(matches!(params[5], Value::Float(f) if f.to_bits() == common::samples::NAN_WITH_PAYLOAD));
    assert!(matches!(params[4], Value::Float(f) if f.to_bits() == (-0.0f64).to_bits()));
    assert_eq!(params[9], Value::Text("nul\0inside".into()));
}
