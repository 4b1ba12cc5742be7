//! `deploy/kubernetes/` and the `Dockerfile`: the manifests validated
//! against the Kubernetes API's own types (k8s-openapi, generated from the
//! Kubernetes OpenAPI schema; every field Kubernetes does not know is an
//! error), and the Job's pods started locally as the Job starts them: the
//! same arguments, the same environment, the job file of the ConfigMap,
//! `parallelism` processes at once, against the real servers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use serde::de::DeserializeOwned;

fn manifest_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name)
}

/// `text` as the Kubernetes type `T`, strictly. The document must satisfy
/// the type's JSON Schema (the Kubernetes OpenAPI definition, through
/// k8s-openapi's `schemars` feature: required fields, types); then it is
/// read as `T`, where a field the API does not have, or another
/// `apiVersion`/`kind`, is an error naming where.
fn strict<T: DeserializeOwned + schemars::JsonSchema>(text: &str) -> Result<T, String> {
    let value: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
    let validator = jsonschema::validator_for(&schema).map_err(|e| format!("schema: {e}"))?;
    let invalid: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path().as_str()))
        .collect();
    if !invalid.is_empty() {
        return Err(invalid.join("; "));
    }
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(value, |path| {
        // `?` marks an `Option` on the way, which the manifest never shows.
        unknown.push(path.to_string().replace(".?", ""))
    })
    .map_err(|e| e.to_string())?;
    match unknown.is_empty() {
        true => Ok(value),
        false => Err(format!("fields Kubernetes does not know: {unknown:?}")),
    }
}

fn load<T: DeserializeOwned + schemars::JsonSchema>(name: &str) -> T {
    let text = std::fs::read_to_string(manifest_path(name)).unwrap();
    strict(&text).unwrap_or_else(|e| panic!("deploy/kubernetes/{name}: {e}"))
}

fn container(spec: &JobSpec) -> &Container {
    let pod = spec.template.spec.as_ref().expect("a pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let security = pod.security_context.as_ref().expect("a security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

/// What every run of the job shares: an Indexed Job of `parallelism` pods
/// running the image's entry point (`shiftload`) on the ConfigMap's job
/// file, with the Secret's URLs in the environment.
fn check_job_spec(spec: &JobSpec, secret: &Secret, config: &ConfigMap) {
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(spec.parallelism, spec.completions);
    assert!(spec.parallelism.unwrap() >= 2);
    let c = container(spec);
    assert!(c.command.is_none(), "the image's ENTRYPOINT runs");
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[0], "run");
    let job_path = Path::new(&args[1]);
    let mount = c.volume_mounts.as_ref().unwrap();
    let volumes = spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap();
    let job_mount = mount
        .iter()
        .find(|m| job_path.starts_with(&m.mount_path))
        .expect("the job file is mounted");
    let volume = volumes.iter().find(|v| v.name == job_mount.name).unwrap();
    let source = volume.config_map.as_ref().expect("from the ConfigMap");
    assert_eq!(source.name, config.metadata.name.clone().unwrap());
    let file = job_path.file_name().unwrap().to_str().unwrap();
    assert!(config.data.as_ref().unwrap().contains_key(file));
    let keys = secret.string_data.as_ref().unwrap();
    for var in c.env.as_ref().unwrap() {
        let from = var
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref());
        let from = from.expect("URLs come from the Secret, never inline");
        assert_eq!(Some(&from.name), secret.metadata.name.as_ref());
        assert!(
            keys.contains_key(&from.key),
            "{} is in the Secret",
            from.key
        );
    }
}

#[test]
fn the_manifests_validate_against_the_kubernetes_api() {
    let secret: Secret = load("secret.yaml");
    let config: ConfigMap = load("configmap.yaml");
    let job: Job = load("job.yaml");
    let cron: CronJob = load("cronjob.yaml");
    check_job_spec(job.spec.as_ref().unwrap(), &secret, &config);
    let cron = cron.spec.unwrap();
    assert_eq!(cron.concurrency_policy.as_deref(), Some("Forbid"));
    let nightly = cron.job_template.spec.unwrap();
    check_job_spec(&nightly, &secret, &config);
    // The nightly run is the same Job.
    assert_eq!(&nightly, job.spec.as_ref().unwrap());

    // The job file of the ConfigMap is a valid job once its variables are
    // set, and names its secrets only as variables.
    let text = &config.data.unwrap()["job.toml"];
    assert!(!text.contains("CHANGE-ME") && text.contains("${REDSHIFT_URL}"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shiftload"))
        .args(["validate", path.to_str().unwrap()])
        .env("REDSHIFT_URL", "postgresql://u:p@localhost:5439/db")
        .env("MONGODB_URI", "mongodb://localhost:27017")
        .output()
        .unwrap();
    assert_ok(&out);

    // The image runs what the Job expects: shiftload as its entry point.
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"));
    let dockerfile = dockerfile.unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/shiftload\"]"));
    let user = dockerfile.lines().rev().find(|l| l.starts_with("USER "));
    assert_eq!(user, Some("USER 65532:65532"), "the image runs as non-root");
}

#[test]
fn the_validator_refuses_what_kubernetes_would() {
    let text = std::fs::read_to_string(manifest_path("job.yaml")).unwrap();
    // A misspelt field, which `kubectl apply` would drop or refuse.
    let typo = text.replace("parallelism: 4", "paralelism: 4");
    let e = strict::<Job>(&typo).unwrap_err();
    assert!(e.contains("spec.paralelism"), "{e}");
    // A value of the wrong type.
    let e = strict::<Job>(&text.replace("completions: 4", "completions: four")).unwrap_err();
    assert!(e.contains("/spec/completions"), "{e}");
    // A required field missing: a container without its name (which
    // k8s-openapi alone would fill with an empty string).
    let nameless = text.replace(
        "        - name: shiftload\n          image",
        "        - image",
    );
    assert_ne!(nameless, text);
    let e = strict::<Job>(&nameless).unwrap_err();
    assert!(
        e.contains("/spec/template/spec/containers/0") && e.contains("name"),
        "{e}"
    );
    // An env var from a Secret without the Secret's key.
    let keyless = text.replacen("                  key: REDSHIFT_URL\n", "", 1);
    assert_ne!(keyless, text);
    let e = strict::<Job>(&keyless).unwrap_err();
    assert!(e.contains("secretKeyRef") && e.contains("key"), "{e}");
    // Another kind under the same type.
    let e = strict::<Job>(&text.replace("kind: Job", "kind: Deployment")).unwrap_err();
    assert!(e.contains("Deployment"), "{e}");
}

/// The Job's arguments for pod `index`, made local: the job file and the
/// summary in `dir`, and a port of its own (the pods of a Job each have
/// their own network; local processes share one).
fn local_args(args: &[String], dir: &Path, index: usize) -> Vec<String> {
    args.iter()
        .map(|a| match a.as_str() {
            "/etc/shiftload/job.toml" => dir.join("job.toml").display().to_string(),
            a if a.starts_with("--summary-json=") => {
                format!("--summary-json={}/summary-{index}.json", dir.display())
            }
            a if a.starts_with("--metrics-addr=") => "--metrics-addr=127.0.0.1:0".into(),
            a if a.starts_with("--metrics-linger=") => "--metrics-linger=0s".into(),
            a => a.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn the_jobs_pods_share_one_run_locally() {
    let job: Job = load("job.yaml");
    let config: ConfigMap = load("configmap.yaml");
    let spec = job.spec.unwrap();
    let pods = spec.parallelism.unwrap() as usize;
    let c = container(&spec);
    let table = seed_reference(20_000).await;
    let db = unique("k8s");
    let text = config.data.unwrap()["job.toml"]
        .replace("demo_orders", &table)
        .replace("database = \"analytics\"", &format!("database = \"{db}\""));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("job.toml"), text).unwrap();
    let secrets = [("REDSHIFT_URL", pg_url()), ("MONGODB_URI", mongo_uri())];
    let children: Vec<_> = (0..pods)
        .map(|index| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shiftload"));
            cmd.args(local_args(c.args.as_ref().unwrap(), dir.path(), index));
            for var in c.env.as_ref().unwrap() {
                let (_, value) = secrets.iter().find(|(n, _)| *n == var.name).unwrap();
                cmd.env(&var.name, value);
            }
            cmd.env("JOB_COMPLETION_INDEX", index.to_string())
                .env_remove("SHIFTLOAD_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut inserted = 0;
    for (index, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "pod {index}: {}", stderr(&out));
        // --log-format=json: every line of the log is a JSON object, and no
        // line holds a password.
        for line in stderr(&out).lines() {
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(parsed.is_object(), "{line}");
        }
        assert!(!stderr(&out).contains(&pg_url()) && !stderr(&out).contains(&mongo_uri()));
        let url = url::Url::parse(&pg_url()).unwrap();
        let password = url.password().expect("the test source has a password");
        assert!(
            !stderr(&out).contains(password),
            "pod {index} logged the password"
        );
        let summary = dir.path().join(format!("summary-{index}.json"));
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
        assert_eq!(summary["outcome"], "complete", "pod {index}: {summary}");
        inserted += summary["run"]["documents"]["inserted"].as_u64().unwrap();
    }
    // Every pod says complete, and together they inserted each row once.
    assert_eq!(inserted, 20_000);
    assert_reference_copy(&table, &mongo_uri(), &db).await;
    let client = mongo().await;
    let parts: Vec<bson::Document> = {
        use futures_util::TryStreamExt;
        let coll = client
            .database(&db)
            .collection::<bson::Document>("shiftload_checkpoints");
        coll.find(bson::doc! {"kind": "partition"})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    };
    assert!(parts.len() >= 64, "{}", parts.len());
    let owners: BTreeSet<_> = parts.iter().map(|p| p.get_str("owner").unwrap()).collect();
    assert!(
        owners.len() >= 2,
        "the pods shared the partitions: {owners:?}"
    );
    drop_db(&db).await;
}
