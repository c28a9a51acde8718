//! Shared by the integration tests: hand-built samples, the golden vector
//! files, and an independent schema walker.
#![allow(dead_code)]

pub mod samples;
pub mod schema;
pub mod sha256;

use envoy_protocol::*;
use std::path::PathBuf;

/// Every protocol version this crate speaks.
pub const VERSIONS: [u16; 6] = [1, 2, 3, 4, 5, 6];

/// The two top-level message types, as named in the schemas and vector folders.
pub const TOP_LEVEL: [&str; 2] = ["ToEngine", "ToEnvoy"];

/// Generous limits for well-formed input.
pub fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// `protocol/tests/vectors`.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors")
}

/// One golden vector: a top-level message at one version.
#[derive(Debug, Clone)]
pub struct Vector {
    pub version: u16,
    /// `ToEngine` or `ToEnvoy`.
    pub top: &'static str,
    pub case: String,
    pub bytes: Vec<u8>,
}

impl Vector {
    pub fn path(&self) -> PathBuf {
        vectors_dir().join(format!("v{}", self.version)).join(self.top).join(format!("{}.hex", self.case))
    }

    /// Decodes these bytes through the versioned API at the vector's version.
    pub fn decode_and_reencode(&self, limits: &DecodeLimits) -> Result<Vec<u8>, ProtocolDecodeError> {
        Ok(match self.top {
            "ToEngine" => encode_to_engine(&decode_to_engine(&self.bytes, self.version, limits)?, self.version)
                .expect("a decoded message re-encodes at its own version"),
            _ => encode_to_envoy(&decode_to_envoy(&self.bytes, self.version, limits)?, self.version)
                .expect("a decoded message re-encodes at its own version"),
        })
    }
}

/// Decodes `bytes` as the top-level message `top` at `version`, as a peer would.
pub fn decode(top: &str, bytes: &[u8], version: u16, limits: &DecodeLimits) -> Result<(), ProtocolDecodeError> {
    match top {
        "ToEngine" => decode_to_engine(bytes, version, limits).map(drop),
        _ => decode_to_envoy(bytes, version, limits).map(drop),
    }
}

/// The vectors the samples produce: every sample at every version that can carry it.
pub fn expected_vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    for v in VERSIONS {
        for (case, msg) in samples::to_engine() {
            match encode_to_engine(&msg, v) {
                Ok(bytes) => out.push(Vector { version: v, top: "ToEngine", case: case.into(), bytes }),
                Err(EncodeError::Compatibility(e)) => assert!(e.required_version > v, "{case}: {e}"),
                Err(e) => panic!("{case} at v{v}: {e}"),
            }
        }
        for (case, msg) in samples::to_envoy() {
            match encode_to_envoy(&msg, v) {
                Ok(bytes) => out.push(Vector { version: v, top: "ToEnvoy", case: case.into(), bytes }),
                Err(EncodeError::Compatibility(e)) => assert!(e.required_version > v, "{case}: {e}"),
                Err(e) => panic!("{case} at v{v}: {e}"),
            }
        }
    }
    out
}

/// The vectors committed under `tests/vectors/v*/{ToEngine,ToEnvoy}/*.hex`.
pub fn committed_vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    let Ok(versions) = std::fs::read_dir(vectors_dir()) else { return out };
    for entry in versions {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let version: u16 = name
            .strip_prefix('v')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected folder tests/vectors/{name}"));
        for sub in std::fs::read_dir(entry.path()).unwrap() {
            let sub = sub.unwrap();
            let top_name = sub.file_name().into_string().unwrap();
            let top = TOP_LEVEL
                .into_iter()
                .find(|t| *t == top_name)
                .unwrap_or_else(|| panic!("unexpected folder tests/vectors/{name}/{top_name}"));
            for file in std::fs::read_dir(sub.path()).unwrap() {
                let path = file.unwrap().path();
                let case = path
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .strip_suffix(".hex")
                    .unwrap_or_else(|| panic!("unexpected file {}", path.display()))
                    .to_string();
                let text = std::fs::read_to_string(&path).unwrap();
                let bytes = hex::decode(text.trim()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push(Vector { version, top, case, bytes });
            }
        }
    }
    out.sort_by(|a, b| (a.version, a.top, &a.case).cmp(&(b.version, b.top, &b.case)));
    out
}
