//! `corral token ...`: bearer tokens and their roles (admin only).

use std::time::Duration;

use clap::Subcommand;
use corral_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print its secret, once: it cannot be shown again.
    Create {
        /// A name for it: letters, digits, '-', '_', '.'. Jobs it submits are owned by
        /// this name.
        name: String,
        /// read: list, show, watch and read; submit: read, plus submit and change its
        /// own jobs and put objects; admin: everything; agent: join pools.
        #[arg(long, value_parser = ["read", "submit", "admin", "agent"])]
        role: String,
        /// For an agent token: the one pool it may join.
        #[arg(long)]
        pool: Option<String>,
        /// How long it works, e.g. 12h, 30d (1s to 100 years) [default: until revoked].
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token now: calls and open streams that use it are refused from
    /// then on, and so are the nodes that registered with it.
    Revoke {
        name: String,
        /// Revoke it even if it is the token this CLI presents (your own access
        /// ends; `corral-coordinator --reset-admin-token` makes a new admin token).
        #[arg(long)]
        force: bool,
    },
    /// Show the token this CLI presents.
    Whoami,
}

/// A token's lifetime: a token that expires at once (`0s`) is a mistake, not a token.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = corral_types::duration::parse(s)?;
    if ttl < Duration::from_secs(1) {
        return Err(format!(
            "'{}' is shorter than 1s: the token would expire before it is used",
            corral_types::shown(s)
        ));
    }
    Ok(ttl)
}

fn token_json(t: &pb::Token) -> serde_json::Value {
    json!({
        "name": t.name,
        "role": t.role,
        "pool": (!t.pool.is_empty()).then_some(&t.pool),
        "created_at_ms": t.created_at_ms,
        "expires_at_ms": (t.expires_at_ms != 0).then_some(t.expires_at_ms),
        "created_by": t.created_by,
    })
}

fn expires(t: &pb::Token) -> String {
    if t.expires_at_ms == 0 {
        "never".into()
    } else {
        output::timestamp(t.expires_at_ms)
    }
}

impl TokenCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            TokenCommand::Create { name, role, pool, ttl } => {
                let ttl_ms = ttl.map_or(0, corral_types::duration::ms);
                let req = pb::CreateTokenRequest { name, role, pool: pool.unwrap_or_default(), ttl_ms };
                let created = client.create_token(req).await.api()?;
                let token = created.token.unwrap_or_default();
                if ctx.json() {
                    let mut value = token_json(&token);
                    value["token"] = json!(created.secret);
                    output::json(&value);
                } else {
                    println!("{}", created.secret);
                    eprintln!(
                        "token '{}' ({}), expires {}: the secret above is shown only now; keep it in a file (mode 600) and pass --token-file",
                        token.name,
                        token.role,
                        expires(&token)
                    );
                }
            }
            TokenCommand::List => {
                let tokens = client.list_tokens(pb::ListTokensRequest {}).await.api()?.tokens;
                if ctx.json() {
                    output::json(&tokens.iter().map(token_json).collect());
                } else {
                    let rows: Vec<Vec<String>> = tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.role.clone(),
                                if t.pool.is_empty() { "-".into() } else { t.pool.clone() },
                                output::timestamp(t.created_at_ms),
                                expires(t),
                                t.created_by.clone(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "ROLE", "POOL", "CREATED", "EXPIRES", "BY"], &rows);
                }
            }
            TokenCommand::Revoke { name, force } => {
                let token = client.revoke_token(pb::RevokeTokenRequest { name, force }).await.api()?;
                if ctx.json() {
                    output::json(&token_json(&token));
                } else {
                    println!("revoked token '{}' ({})", token.name, token.role);
                }
            }
            TokenCommand::Whoami => {
                let token = client.who_am_i(pb::WhoAmIRequest {}).await.api()?;
                if ctx.json() {
                    output::json(&token_json(&token));
                } else {
                    output::fields(&[
                        ("name", token.name.clone()),
                        ("role", token.role.clone()),
                        ("pool", if token.pool.is_empty() { "-".into() } else { token.pool.clone() }),
                        ("expires", expires(&token)),
                    ]);
                }
            }
        }
        Ok(Exit::Ok)
    }
}
