//! The operator kit: the Prometheus alert rules under `deploy/` pass `promtool`'s
//! checks and their own unit tests (`alerts.test.yaml`), the Grafana dashboard's
//! queries are valid PromQL, and both name only metrics a node exports; every
//! StreamCore service of `docker/compose.yaml` (three media nodes, the control API, a
//! worker) loads and validates its settings as the binary reads them.

#[path = "../recorder/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Debian's `promtool` (package `prometheus`), installed when missing.
fn promtool() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/ensure-debian-command.sh"))
        .args(["promtool", "prometheus"])
        .output()
        .expect("running scripts/ensure-debian-command.sh");
    assert!(
        out.status.success(),
        "promtool could not be installed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("promtool's path")
        .to_owned()
}

fn run(promtool: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The `streamcore_*` metric names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("streamcore_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/streamcore.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn dashboard_queries() -> Vec<String> {
    dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("a query").to_owned())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = promtool();
    let dir = repo().join("deploy/prometheus");
    let checked = run(&promtool, &["check", "rules", "alerts.yaml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(&promtool, &["test", "rules", "alerts.test.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_dashboards_queries_are_valid_promql() {
    let promtool = promtool();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    // promtool parses a rule file's expressions: each query becomes a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(q).unwrap()
        ));
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("sc-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.rules.yaml"), rules).unwrap();
    let checked = run(&promtool, &["check", "rules", "dashboard.rules.yaml"], &dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

#[test]
fn the_kit_names_only_metrics_a_node_exports() {
    let exported = metric_names(include_str!("../src/metrics.rs"));
    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap();
    let used = [
        metric_names(&alerts),
        metric_names(&dashboard_queries().join("\n")),
    ]
    .concat();
    assert!(used.len() > 10, "{used:?}");
    for name in used {
        assert!(
            exported.contains(&name),
            "{name} is not a metric the node exports (src/metrics.rs)"
        );
    }
}

/// `docker/compose.yaml` as JSON (through the test venv's PyYAML: anchors and merge
/// keys resolved), with `${STREAMCORE_HOST…}` set.
fn compose() -> serde_json::Value {
    let py = support::python();
    let text = std::fs::read_to_string(repo().join("docker/compose.yaml")).unwrap();
    let text = text
        .replace("${STREAMCORE_HOST:?set STREAMCORE_HOST}", "192.0.2.10")
        .replace("${STREAMCORE_HOST}", "192.0.2.10");
    assert!(!text.contains("${"), "a variable the test does not set");
    let mut child = Command::new(py)
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "docker/compose.yaml is not YAML");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `ENV` defaults of `docker/Dockerfile`'s image.
fn image_env() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    let env = text
        .split("\nENV ")
        .nth(1)
        .expect("an ENV instruction")
        .split("\n")
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("EXPOSE"))
        .collect::<Vec<_>>()
        .join(" ");
    env.split_whitespace()
        .filter(|w| *w != "\\")
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_compose_cluster_starts_every_streamcore_service_with_valid_settings() {
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let image = image_env();
    assert!(
        image.iter().any(|(k, _)| k == "STREAMCORE_DATA_DIR"),
        "{image:?}"
    );
    let mut roles = Vec::new();
    let mut nodes = Vec::new();
    for (name, svc) in services.iter().filter(|(_, s)| s.get("build").is_some()) {
        let role = svc["command"][0].as_str().unwrap().to_owned();
        // Every StreamCore process shares the keys (media nodes the spool too), and
        // nothing else of its data dir.
        let volumes: Vec<&str> = svc["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            volumes.contains(&"keys:/var/lib/streamcore/keys"),
            "{name}: {volumes:?}"
        );
        assert!(
            volumes
                .iter()
                .any(|v| *v == format!("{name}-data:/var/lib/streamcore")),
            "{name} has a data volume of its own: {volumes:?}"
        );
        // Its settings load and validate, as the binary would read them.
        let dir = std::env::temp_dir().join(format!("sc-compose-{name}-{}", std::process::id()));
        let mut c = Command::new(env!("CARGO_BIN_EXE_streamcore"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(["config", "print"]);
        for (k, v) in &image {
            c.env(k, v);
        }
        for (k, v) in svc["environment"].as_object().unwrap() {
            c.env(k, v.as_str().unwrap());
        }
        c.env("STREAMCORE_DATA_DIR", &dir);
        let out = c.output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            printed.contains(&format!(
                "node_id = \"{}\"",
                svc["environment"]["STREAMCORE_NODE_ID"].as_str().unwrap()
            )),
            "{name}: {printed}"
        );
        if role == "serve" {
            let http = svc["environment"]["STREAMCORE_HTTP"]
                .as_str()
                .unwrap()
                .to_owned();
            let port = svc["environment"]["STREAMCORE_MEDIA__PORT"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                printed.contains("s3_bucket = \"recordings\""),
                "{name}: {printed}"
            );
            // Its relay port is fixed and published (the others dial it at the
            // host's address), and its spool is the nodes' shared one.
            let relay = svc["environment"]["STREAMCORE_CLUSTER__RELAY_PORT"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                printed.contains(&format!("relay_port = {relay}")),
                "{name}: {printed}"
            );
            let ports: Vec<&str> = svc["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert!(
                ports.contains(&format!("{relay}:{relay}/udp").as_str()),
                "{name}: {ports:?}"
            );
            assert!(
                printed.contains("shared_spool = true")
                    && volumes.contains(&"spool:/var/lib/streamcore/spool"),
                "{name}: {printed}"
            );
            nodes.push((name.clone(), http, format!("{port}/{relay}")));
        }
        roles.push(role);
    }
    roles.sort();
    assert_eq!(roles, ["api", "serve", "serve", "serve", "worker"]);
    // Three media nodes, each on its own ports.
    let mut https: Vec<&str> = nodes.iter().map(|n| n.1.as_str()).collect();
    let mut media: Vec<&str> = nodes.iter().map(|n| n.2.as_str()).collect();
    https.dedup();
    media.dedup();
    assert_eq!((https.len(), media.len()), (3, 3), "{nodes:?}");
    for backend in ["postgres", "kafka", "minio"] {
        assert!(services.contains_key(backend), "{backend} is missing");
    }
}
