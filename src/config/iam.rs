//! `source.iam`: log in to Redshift with temporary credentials from AWS.

use schemars::JsonSchema;
use serde::Deserialize;

/// `iam = true`, or a table of settings.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IamSetting {
    /// `iam = true`: every setting from the URL and the environment.
    On(bool),
    /// `[source.iam]` with settings.
    With(IamConfig),
}

/// Temporary database credentials from the AWS API, fetched with the
/// standard AWS credential chain (environment, profile, SSO, web identity,
/// container or instance role): `GetClusterCredentials` for a provisioned
/// cluster, `GetCredentials` for a Serverless workgroup. The URL's user is
/// the database user (provisioned clusters); a password in the URL is not
/// used. Credentials are fetched once and reused until shortly before they
/// expire; they are never written to logs, errors or checkpoints.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// Provisioned cluster identifier. Default: the first label of a
    /// `*.redshift.amazonaws.com` host.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Serverless workgroup name. Default: the first label of a
    /// `*.redshift-serverless.amazonaws.com` host.
    #[serde(default)]
    pub workgroup: Option<String>,
    /// AWS region. Default: from the endpoint host name, else the AWS
    /// configuration (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Create the database user if it does not exist (provisioned only).
    #[serde(default)]
    pub auto_create: bool,
    /// Database groups the user joins for this session (provisioned only).
    #[serde(default)]
    pub db_groups: Vec<String>,
    /// Lifetime of the credentials, 900 to 3600 seconds.
    #[serde(default = "default_duration")]
    pub duration_seconds: u32,
}

fn default_duration() -> u32 {
    900
}

impl IamSetting {
    /// The settings, when IAM is on.
    pub fn config(&self) -> Option<IamConfig> {
        match self {
            IamSetting::On(true) => Some(IamConfig {
                duration_seconds: default_duration(),
                ..Default::default()
            }),
            IamSetting::On(false) => None,
            IamSetting::With(c) => Some(c.clone()),
        }
    }
}

/// A source URL read: `redshift://` and `redshift+iam://` are
/// `postgresql://` to a server known to be Redshift; the second turns IAM on.
pub struct SourceUrl {
    /// The URL as `postgresql://…`.
    pub url: String,
    /// `redshift+iam://`.
    pub iam: bool,
    /// `redshift://` or `redshift+iam://`.
    pub redshift: bool,
}

pub fn normalise_url(url: &str) -> SourceUrl {
    let (url, iam, redshift) = if let Some(rest) = url.strip_prefix("redshift+iam://") {
        (format!("postgresql://{rest}"), true, true)
    } else if let Some(rest) = url.strip_prefix("redshift://") {
        (format!("postgresql://{rest}"), false, true)
    } else {
        (url.to_string(), false, false)
    };
    SourceUrl { url, iam, redshift }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_schemes() {
        let u =
            normalise_url("redshift+iam://loader@c.x.us-east-1.redshift.amazonaws.com:5439/dev");
        assert_eq!(
            u.url,
            "postgresql://loader@c.x.us-east-1.redshift.amazonaws.com:5439/dev"
        );
        assert!(u.iam && u.redshift);
        let u = normalise_url("redshift://u:p@h/d");
        assert_eq!(u.url, "postgresql://u:p@h/d");
        assert!(!u.iam && u.redshift);
        let u = normalise_url("postgresql://u:p@h/d");
        assert!(!u.iam && !u.redshift);
        assert!(IamSetting::On(false).config().is_none());
        assert_eq!(IamSetting::On(true).config().unwrap().duration_seconds, 900);
    }
}
