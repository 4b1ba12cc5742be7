//! Temporary Redshift credentials from AWS IAM: `GetClusterCredentials`
//! (provisioned) or `GetCredentials` (Serverless), with the standard AWS
//! credential chain. Fetched once per process and target, reused until a
//! minute before they expire; the password is registered as a secret so no
//! log line or error can show it.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_redshift::error::DisplayErrorContext;
use tokio::sync::Mutex;

use super::SYSTEM;
use crate::config::IamConfig;
use crate::error::{Class, Error, Result};
use crate::redact;

/// A temporary database login.
#[derive(Clone)]
pub(super) struct Login {
    pub(super) user: String,
    pub(super) password: String,
    expires: SystemTime,
}

/// What to ask for: a cluster or a workgroup, in a region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    Cluster {
        id: String,
        region: Option<String>,
    },
    Workgroup {
        name: String,
        region: Option<String>,
    },
}

/// The cluster or workgroup of `host`, unless the settings name one.
pub(super) fn target(cfg: &IamConfig, host: &str) -> Result<Target> {
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let serverless = host.contains(".redshift-serverless.amazonaws.com");
    let provisioned = host.contains(".redshift.amazonaws.com");
    // cluster.account-hash.region.redshift.amazonaws.com
    // workgroup.account.region.redshift-serverless.amazonaws.com
    let host_region = (serverless || provisioned)
        .then(|| labels.get(2).map(|r| r.to_string()))
        .flatten();
    let region = cfg.region.clone().or(host_region);
    if let Some(name) = &cfg.workgroup {
        return Ok(Target::Workgroup {
            name: name.clone(),
            region,
        });
    }
    if let Some(id) = &cfg.cluster {
        return Ok(Target::Cluster {
            id: id.clone(),
            region,
        });
    }
    match labels.first() {
        Some(first) if serverless => Ok(Target::Workgroup {
            name: first.to_string(),
            region,
        }),
        Some(first) if provisioned => Ok(Target::Cluster {
            id: first.to_string(),
            region,
        }),
        _ => Err(Error::Config {
            key: "source.iam".into(),
            message: format!(
                "the host {host} is not a Redshift endpoint name; set \
                 `source.iam.cluster` (provisioned) or `source.iam.workgroup` (Serverless)"
            ),
        }),
    }
}

/// Logins by target, database user and database.
type Cache = Mutex<HashMap<(Target, String, Option<String>), Login>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// A login for `user` on `database`, from the cache while it has more than
/// a minute left, else from AWS.
pub(super) async fn login(
    cfg: &IamConfig,
    target: Target,
    user: &str,
    database: Option<&str>,
) -> Result<Login> {
    let key = (
        target.clone(),
        user.to_string(),
        database.map(str::to_string),
    );
    let mut cache = cache().lock().await;
    if let Some(l) = cache.get(&key) {
        if l.expires > SystemTime::now() + Duration::from_secs(60) {
            return Ok(l.clone());
        }
    }
    let login = fetch(cfg, &target, user, database).await?;
    redact::register_secret(&login.password);
    tracing::info!(user = %login.user, "temporary Redshift credentials from IAM");
    cache.insert(key, login.clone());
    Ok(login)
}

async fn fetch(
    cfg: &IamConfig,
    target: &Target,
    user: &str,
    database: Option<&str>,
) -> Result<Login> {
    let region = match target {
        Target::Cluster { region, .. } | Target::Workgroup { region, .. } => region.clone(),
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(Region::new(r));
    }
    let aws = loader.load().await;
    let duration = cfg.duration_seconds as i32;
    let fail = |what: &str, e: String| Error::Connect {
        system: SYSTEM,
        target: what.to_string(),
        message: redact::scrub(&format!("IAM credentials: {e}")),
        class: Class::Fatal,
    };
    match target {
        Target::Cluster { id, .. } => {
            let out = aws_sdk_redshift::Client::new(&aws)
                .get_cluster_credentials()
                .cluster_identifier(id)
                .db_user(user)
                .set_db_name(database.map(str::to_string))
                .auto_create(cfg.auto_create)
                .set_db_groups((!cfg.db_groups.is_empty()).then(|| cfg.db_groups.clone()))
                .duration_seconds(duration)
                .send()
                .await
                .map_err(|e| {
                    fail(
                        &format!("cluster {id}"),
                        DisplayErrorContext(&e).to_string(),
                    )
                })?;
            Ok(Login {
                user: out.db_user.unwrap_or_else(|| user.to_string()),
                password: out.db_password.unwrap_or_default(),
                expires: expiry(out.expiration.map(|t| t.secs()), duration),
            })
        }
        Target::Workgroup { name, .. } => {
            let out = aws_sdk_redshiftserverless::Client::new(&aws)
                .get_credentials()
                .workgroup_name(name)
                .set_db_name(database.map(str::to_string))
                .duration_seconds(duration)
                .send()
                .await
                .map_err(|e| {
                    fail(
                        &format!("workgroup {name}"),
                        aws_sdk_redshiftserverless::error::DisplayErrorContext(&e).to_string(),
                    )
                })?;
            Ok(Login {
                user: out.db_user.unwrap_or_else(|| user.to_string()),
                password: out.db_password.unwrap_or_default(),
                expires: expiry(out.expiration.map(|t| t.secs()), duration),
            })
        }
    }
}

fn expiry(unix_secs: Option<i64>, duration: i32) -> SystemTime {
    match unix_secs {
        Some(s) if s > 0 => SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64),
        _ => SystemTime::now() + Duration::from_secs(duration as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_endpoint_names() {
        let cfg = IamConfig::default();
        assert_eq!(
            target(
                &cfg,
                "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
            )
            .unwrap(),
            Target::Cluster {
                id: "examplecluster".into(),
                region: Some("us-west-2".into())
            }
        );
        assert_eq!(
            target(
                &cfg,
                "wg1.123456789012.eu-west-1.redshift-serverless.amazonaws.com"
            )
            .unwrap(),
            Target::Workgroup {
                name: "wg1".into(),
                region: Some("eu-west-1".into())
            }
        );
        let err = target(&cfg, "127.0.0.1").unwrap_err().to_string();
        assert!(err.contains("source.iam.cluster"), "{err}");
        let named = IamConfig {
            cluster: Some("c1".into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        assert_eq!(
            target(&named, "127.0.0.1").unwrap(),
            Target::Cluster {
                id: "c1".into(),
                region: Some("us-east-1".into())
            }
        );
    }
}
