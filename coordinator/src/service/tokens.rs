//! Tokens: `CreateToken`, `ListTokens`, `RevokeToken`, `WhoAmI`, and the callbacks'
//! signing secret.

use corral_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::ClientApi;
use crate::auth::{self, Principal};
use crate::convert;
use crate::core::StoreOp;
use crate::error::{Error, Invalid};
use crate::model::*;

pub(super) async fn create_token(
    api: &ClientApi,
    req: Request<pb::CreateTokenRequest>,
) -> Result<Response<pb::CreateTokenResponse>, Status> {
    let who = auth::caller(&req)?;
    let req = req.into_inner();
    let name = convert::token_name(&req.name)?;
    let role: Role = req.role.parse().map_err(|e| Invalid::new("role", e))?;
    let pool = if req.pool.is_empty() { None } else { Some(PoolName::parse("pool", &req.pool)?) };
    if pool.is_some() && role != Role::Agent {
        return Err(Invalid::new("pool", "only agent tokens are bound to a pool").into());
    }
    let now = auth::now_ms();
    let expires_at_ms = match req.ttl_ms {
        0 => None,
        ttl if ttl < 1000 => {
            return Err(Invalid::new("ttl", "must be at least 1s: the token would expire before it is used").into())
        }
        ttl => {
            let ttl = corral_types::duration::from_ms("ttl", ttl)?;
            Some(now.saturating_add(corral_types::duration::ms(ttl)))
        }
    };
    let minted = auth::secret::Minted::new();
    let record = auth::TokenRecord {
        id: minted.id.clone(),
        name,
        role,
        pool,
        hash: minted.hash,
        created_at_ms: now,
        expires_at_ms,
        created_by: who.name(),
    };
    let view = convert::token_pb(&record);
    let auth = api.shared.auth.clone();
    // Checked and taken on the event loop, so two requests for one name cannot
    // both win, and a pool deleted meanwhile is seen.
    api.shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            if let Some(pool) = &record.pool {
                core.check_token_pool(pool)?;
            }
            if auth.token_named(&record.name).is_some() {
                return Err(Error::already_exists("token", record.name));
            }
            auth.insert_token(record.clone());
            out.store.push(StoreOp::PutToken(record));
            Ok(())
        })
        .await??;
    tracing::info!(token = %view.name, role = %view.role, by = %view.created_by, "token created");
    Ok(Response::new(pb::CreateTokenResponse { token: Some(view), secret: minted.bearer() }))
}

pub(super) async fn list_tokens(
    api: &ClientApi,
    _: Request<pb::ListTokensRequest>,
) -> Result<Response<pb::ListTokensResponse>, Status> {
    let tokens = api.shared.auth.tokens().iter().map(convert::token_pb).collect();
    Ok(Response::new(pb::ListTokensResponse { tokens }))
}

pub(super) async fn revoke_token(
    api: &ClientApi,
    req: Request<pb::RevokeTokenRequest>,
) -> Result<Response<pb::Token>, Status> {
    let who = auth::caller(&req)?;
    let pb::RevokeTokenRequest { name, force } = req.into_inner();
    if who.name() == name && !force {
        return Err(Status::failed_precondition(format!(
            "token '{name}' is the one this call carries: revoking it ends your own access (and if it is the last admin token, nobody can make another). Pass --force to revoke it anyway; `corral-coordinator --reset-admin-token` makes a new admin token if none is left"
        )));
    }
    let auth = api.shared.auth.clone();
    let revoked = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            core.check_revoke_token(&name)?;
            let revoked = auth.revoke(&name).ok_or_else(|| Error::not_found("token", &name))?;
            out.store.push(StoreOp::DeleteToken { id: revoked.id.clone(), name: revoked.name.clone() });
            Ok::<_, Error>(revoked)
        })
        .await??;
    tracing::info!(token = %revoked.name, by = %who.name(), "token revoked");
    Ok(Response::new(convert::token_pb(&revoked)))
}

pub(super) async fn get_notify_secret(
    api: &ClientApi,
    _: Request<pb::GetNotifySecretRequest>,
) -> Result<Response<pb::GetNotifySecretResponse>, Status> {
    Ok(Response::new(pb::GetNotifySecretResponse { secret: api.shared.notify.secret.clone() }))
}

pub(super) async fn who_am_i(api: &ClientApi, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::Token>, Status> {
    let Principal::Token { name, .. } = auth::caller(&req)? else {
        return Err(Status::permission_denied("WhoAmI answers tokens, not nodes"));
    };
    let token = api.shared.auth.token_named(&name).ok_or_else(|| Status::unauthenticated(auth::BAD_TOKEN))?;
    Ok(Response::new(convert::token_pb(&token)))
}
