//! The operator kit under `deploy/`: the Prometheus alert rules pass `promtool`'s
//! checks and their own unit tests (`alerts.test.yaml`), the Grafana dashboard's
//! queries are valid PromQL, and both name only metrics a node exports.

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
