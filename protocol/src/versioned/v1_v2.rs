//! v1 ↔ v2: KV batches, delete-range, list options and KV error codes.

use super::{Direction, Feature, ProtocolCompatibilityError};
use crate::{v1, v2};

type Result<T> = std::result::Result<T, ProtocolCompatibilityError>;

fn gate<T>(feature: Feature, direction: Direction, target: u16) -> Result<T> {
    Err(ProtocolCompatibilityError::new(feature, direction, target))
}

// ---------------------------------------------------------------- ToEngine

fn kv_request_data_up(x: v1::KvRequestData) -> v2::KvRequestData {
    use v1::KvRequestData as A;
    use v2::KvRequestData as B;
    match x {
        A::KvGet(v) => B::KvGet(v),
        A::KvPut(v) => B::KvPut(v),
        A::KvDelete(v) => B::KvDelete(v),
        A::KvListPrefix(v) => B::KvListPrefix(v),
    }
}

fn kv_request_data_down(x: v2::KvRequestData, t: u16) -> Result<v1::KvRequestData> {
    use v1::KvRequestData as A;
    use v2::KvRequestData as B;
    let d = Direction::ToEngine;
    Ok(match x {
        B::KvGet(v) => A::KvGet(v),
        B::KvPut(v) => A::KvPut(v),
        B::KvDelete(v) => A::KvDelete(v),
        B::KvListPrefix(v) => A::KvListPrefix(v),
        B::KvGetBatch(_) | B::KvPutBatch(_) | B::KvDeleteBatch(_) => return gate(Feature::KvBatch, d, t),
        B::KvDeleteRange(_) => return gate(Feature::KvDeleteRange, d, t),
        B::KvList(_) => return gate(Feature::KvList, d, t),
    })
}

pub(super) fn to_engine_up(x: v1::ToEngine) -> v2::ToEngine {
    use v1::ToEngine as A;
    use v2::ToEngine as B;
    match x {
        A::Metadata(v) => B::Metadata(v),
        A::Events(v) => B::Events(v),
        A::AckCommands(v) => B::AckCommands(v),
        A::Stopping => B::Stopping,
        A::Pong(v) => B::Pong(v),
        A::KvRequest(v) => B::KvRequest(v2::ToEngineKvRequest {
            request_id: v.request_id,
            actor_id: v.actor_id,
            generation: v.generation,
            data: kv_request_data_up(v.data),
        }),
        A::GetOrCreateActor(v) => B::GetOrCreateActor(v),
    }
}

pub(super) fn to_engine_down(x: v2::ToEngine, t: u16) -> Result<v1::ToEngine> {
    use v1::ToEngine as A;
    use v2::ToEngine as B;
    Ok(match x {
        B::Metadata(v) => A::Metadata(v),
        B::Events(v) => A::Events(v),
        B::AckCommands(v) => A::AckCommands(v),
        B::Stopping => A::Stopping,
        B::Pong(v) => A::Pong(v),
        B::KvRequest(v) => A::KvRequest(v1::ToEngineKvRequest {
            request_id: v.request_id,
            actor_id: v.actor_id,
            generation: v.generation,
            data: kv_request_data_down(v.data, t)?,
        }),
        B::GetOrCreateActor(v) => A::GetOrCreateActor(v),
    })
}

// ---------------------------------------------------------------- ToEnvoy

fn kv_response_data_up(x: v1::KvResponseData) -> v2::KvResponseData {
    use v1::KvResponseData as A;
    use v2::KvResponseData as B;
    match x {
        // A v1 peer gives no code: it becomes UNKNOWN, the message is kept.
        A::KvErrorResponse(e) => B::KvErrorResponse(v2::KvErrorResponse {
            code: v2::KvErrorCode::Unknown,
            message: e.message,
            current_generation: None,
        }),
        A::KvGetResponse(v) => B::KvGetResponse(v),
        A::KvPutResponse => B::KvPutResponse,
        A::KvDeleteResponse => B::KvDeleteResponse,
        A::KvListResponse(v) => B::KvListResponse(v),
    }
}

fn kv_response_data_down(x: v2::KvResponseData, t: u16) -> Result<v1::KvResponseData> {
    use v1::KvResponseData as A;
    use v2::KvResponseData as B;
    let d = Direction::ToEnvoy;
    Ok(match x {
        // v1 has no codes: the code's wire name leads the message so nothing is lost.
        B::KvErrorResponse(e) => A::KvErrorResponse(v1::KvErrorResponse {
            message: match e.code {
                v2::KvErrorCode::Unknown => e.message,
                code => format!("{}: {}", code.wire_name(), e.message),
            },
        }),
        B::KvGetResponse(v) => A::KvGetResponse(v),
        B::KvPutResponse => A::KvPutResponse,
        B::KvDeleteResponse => A::KvDeleteResponse,
        B::KvListResponse(v) => A::KvListResponse(v),
        B::KvGetBatchResponse(_) | B::KvPutBatchResponse | B::KvDeleteBatchResponse => {
            return gate(Feature::KvBatch, d, t)
        }
        B::KvDeleteRangeResponse => return gate(Feature::KvDeleteRange, d, t),
    })
}

pub(super) fn to_envoy_up(x: v1::ToEnvoy) -> v2::ToEnvoy {
    use v1::ToEnvoy as A;
    use v2::ToEnvoy as B;
    match x {
        A::Init(v) => B::Init(v),
        A::Commands(v) => B::Commands(v),
        A::AckEvents(v) => B::AckEvents(v),
        A::Ping(v) => B::Ping(v),
        A::KvResponse(v) => {
            B::KvResponse(v2::ToEnvoyKvResponse { request_id: v.request_id, data: kv_response_data_up(v.data) })
        }
        A::GetOrCreateActorResponse(v) => B::GetOrCreateActorResponse(v),
    }
}

pub(super) fn to_envoy_down(x: v2::ToEnvoy, t: u16) -> Result<v1::ToEnvoy> {
    use v1::ToEnvoy as A;
    use v2::ToEnvoy as B;
    Ok(match x {
        B::Init(v) => A::Init(v),
        B::Commands(v) => A::Commands(v),
        B::AckEvents(v) => A::AckEvents(v),
        B::Ping(v) => A::Ping(v),
        B::KvResponse(v) => {
            A::KvResponse(v1::ToEnvoyKvResponse { request_id: v.request_id, data: kv_response_data_down(v.data, t)? })
        }
        B::GetOrCreateActorResponse(v) => A::GetOrCreateActorResponse(v),
    })
}
