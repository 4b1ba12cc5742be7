//! The job's fingerprint, stored with an unfinished run.

use super::JobConfig;

/// A stable fingerprint of what decides the documents a job writes (the
/// source server and database, query, filter, staging, target namespace,
/// mapping, partitioning, watermark column): an unfinished run is resumed only by the same
/// job. No secret goes into it — not the password, user or TLS settings of
/// the URL, nor the target URI — so a rotated password resumes, and the
/// stored value tells nothing about a credential.
pub fn fingerprint(job: &JobConfig) -> String {
    use sha2::{Digest, Sha256};
    let source = crate::conninfo::ConnInfo::parse(&job.source.url)
        .map(|c| {
            let hosts: Vec<String> = c.hosts.iter().map(ToString::to_string).collect();
            // libpq's default database is the user's name.
            let db = c.dbname.or(c.user).unwrap_or_default();
            format!("{}/{db}", hosts.join(","))
        })
        .unwrap_or_default();
    let mut text = format!(
        "{}\n{}\n{:?}\n{:?}\n{}.{}\n{:?}\n{:?}",
        source,
        job.source.query,
        job.source.filter,
        job.source.staging,
        job.target.database,
        job.target.collection,
        job.mapping,
        job.partition
    );
    if let Some(inc) = &job.incremental {
        text.push_str(&format!("\nincremental {:?}", inc.column));
    }
    let hash = Sha256::digest(text.as_bytes());
    hash[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fp(url: &str, query: &str) -> String {
        let text = format!(
            "[source]\nurl = \"{url}\"\nquery = \"{query}\"\n\
             [target]\nuri = \"mongodb://u:mongo-pw@h/\"\ndatabase = \"d\"\ncollection = \"c\"\n"
        );
        fingerprint(&JobConfig::parse(&text, Path::new("j.toml")).unwrap())
    }

    #[test]
    fn credentials_and_tls_settings_leave_it_unchanged() {
        let base = fp("postgresql://u:old-pw@db.example.com:5439/dev", "SELECT 1");
        assert_eq!(base.len(), 32);
        for same in [
            "postgresql://u:new-pw@db.example.com:5439/dev",
            "redshift://other:x@db.example.com:5439/dev?sslmode=verify-ca",
            "host=db.example.com port=5439 dbname=dev user=u password=p",
        ] {
            assert_eq!(fp(same, "SELECT 1"), base, "{same}");
        }
        for other in [
            "postgresql://u:old-pw@db2.example.com:5439/dev",
            "postgresql://u:old-pw@db.example.com:5440/dev",
            "postgresql://u:old-pw@db.example.com:5439/prod",
        ] {
            assert_ne!(fp(other, "SELECT 1"), base, "{other}");
        }
        assert_ne!(
            fp("postgresql://u:old-pw@db.example.com:5439/dev", "SELECT 2"),
            base
        );
    }
}
