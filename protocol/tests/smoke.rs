use envoy_protocol::*;

#[test]
fn sql_roundtrip_at_v4_and_gate_below() {
    let msg = ToEngine::SqliteExecute(ToEngineSqliteExecute {
        request_id: 7,
        request: SqliteExecuteRequest {
            actor_id: "a".into(),
            generation: 3,
            sql: "SELECT ?".into(),
            params: Some(vec![
                Value::Integer(i64::MIN),
                Value::Float(-0.0),
                Value::Null,
                Value::Text("x\0y".into()),
                Value::Blob(vec![]),
            ]),
        },
    });
    let bytes = encode_to_engine(&msg, 4).unwrap();
    let back = decode_to_engine(&bytes, 4, &DecodeLimits::default()).unwrap();
    assert_eq!(format!("{back:?}"), format!("{msg:?}"));
    let err = encode_to_engine(&msg, 3).unwrap_err();
    assert_eq!(
        err,
        EncodeError::Compatibility(ProtocolCompatibilityError {
            feature: Feature::RemoteSqlite,
            direction: Direction::ToEngine,
            required_version: 4,
            target_version: 3
        })
    );
    println!("{err}");
}
