//! schemathesis, an API fuzzer no one here wrote, against the node's own OpenAPI
//! document (`/api/openapi.json`): generated requests for every operation, then
//! stateful sequences along the document's links (`control_api::openapi::LINKS`: from
//! each create to the operations on what it made), signed in as a verified user. No
//! response may be a 5xx, and every status, content type and body must be what the
//! document says. A fixed seed and a bounded number of examples keep it to about half a
//! minute; longer runs: the same command with a larger `--max-examples`.
mod common;
#[path = "../recorder/tests/support/mod.rs"]
mod support;

use common::TestServer;
use common::remote::register;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document_under_generated_requests() {
    let py = tokio::task::spawn_blocking(support::python).await.unwrap();
    let srv = TestServer::start().await;
    let user = register(&srv, "fuzz@example.com").await;
    // Made from its sign-up link, so verified: every operation (invitations too) is
    // open to it.
    let schemathesis = std::path::Path::new(&py).with_file_name("schemathesis");
    // The stateful phase follows the document's own links (from each create to the
    // operations on what it made). Its own guesses (from the schemas, and from Location
    // headers) link unrelated operations by parameter name (a recording's files to an
    // upload's) and abort the phase, depending on the order it happened to see them in.
    let config =
        std::env::temp_dir().join(format!("sc-schemathesis-{}.toml", rand::random::<u64>()));
    std::fs::write(
        &config,
        "[phases.stateful]\nmax-steps = 12\n\n[phases.stateful.generation]\nmax-examples = 40\n\n\
         [phases.stateful.inference]\nalgorithms = []\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{}/api/openapi.json", srv.base),
            "--header",
            &format!("Authorization: Bearer {}", user.access),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "coverage,fuzzing,stateful",
            "--max-examples",
            "10",
            "--seed",
            "20261202",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            // Sockets are upgrades, not JSON; signing out, a password change and an
            // admin ending sessions would end the run's own session.
            "--exclude-path-regex",
            "socket|auth/logout|me/password|admin/users/.*/sessions",
        ])
        .env("NO_COLOR", "1")
        // Its crash cache (`.schemathesis/`) goes to the temporary directory, not the
        // repository.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("schemathesis runs (scripts/ensure-venv.sh installs it)");
    let _ = std::fs::remove_file(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stateful phase ran along the links (schemathesis prints "API Links: N
    // covered / …"): a document whose links broke, or a phase that stopped, fails here.
    let covered = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("API Links:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        covered >= 10,
        "the stateful phase followed {covered} links:\n{text}"
    );
    srv.stop().await;
}
