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
        6 => unions!(v6: Command, ActorState, Event, GetOrCreateActorResult, KvQuery, KvRequestData, KvResponseData,
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

/// Every published schema file, byte for byte (`sha256sum protocol/schemas/*.bare`).
/// A published schema never changes: a wire change is a new version. Publishing
/// a version adds its line here.
const PUBLISHED_SCHEMAS: &[(u16, &str)] = &[
    (1, "864c497c4b47a6eb48d4957924032c10f4c07b6cd251c6f4d5d74936ea1111a5"),
    (2, "8b1264cc4bb42d3ee7b3ae087f3a1bf7c0d05fb450b04bf6efbc1075f3a589c5"),
    (3, "672c362295fecea33f565a6da7a41e20962f9bbde3d957cdb19eaadab8299f07"),
    (4, "44f3679a3a46d4cab670f14ae723caa2022ac80e0b56ee18aec1bf9cde5e95ad"),
    (5, "69332e15e44a308b1cd278a239dc8adeab3c9c68a92b7d6110ab961cb3f489f3"),
    (6, "b7e9cd8d63d52e9b47a57105a56bb07b71bf09fb4d652e6598cfb00976b69974"),
];

#[test]
fn published_schemas_are_frozen() {
    let published: Vec<u16> = PUBLISHED_SCHEMAS.iter().map(|(v, _)| *v).collect();
    assert_eq!(published, schema_versions(), "every schema file is published (add its digest here)");
    for (v, digest) in PUBLISHED_SCHEMAS {
        let path = format!("{}/schemas/v{v}.bare", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            common::sha256::sha256_hex(&bytes),
            *digest,
            "{path} changed: published schemas are frozen; put the change in a new version"
        );
    }
}

/// From v5 on, a version only appends to the previous one: every type keeps
/// its name and definition, except that enums gain values and unions gain
/// members at their end (v2–v4 still grew some structs in place).
#[test]
fn newer_schemas_only_append() {
    use common::schema::Ty;
    for v in schema_versions().into_iter().filter(|v| *v >= 5) {
        let (old, new) = (Schema::load(v - 1), Schema::load(v));
        for (name, before) in &old.types {
            let after = new.types.get(name).unwrap_or_else(|| panic!("v{v} drops type {name}"));
            match (before, after) {
                (Ty::Enum(a), Ty::Enum(b)) | (Ty::Union(a), Ty::Union(b)) => {
                    assert!(b.starts_with(a), "v{v}: {name} does not keep v{}'s values in order", v - 1)
                }
                _ => assert_eq!(before, after, "v{v}: {name} changed its definition"),
            }
        }
    }
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
        6 => at!(v6),
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
        6 => at!(v6),
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
